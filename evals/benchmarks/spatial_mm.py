"""Spatial-MM (github.com/FatemehShiri/Spatial-MM): Spatial-Obj (one- and two-object MCQs) and
the multi-hop set, two benchmarks here: `spatial_mm_obj` and `spatial_mm_multihop`.

Obtain: https://github.com/FatemehShiri/Spatial-MM (annotation JSON in the repository; the images
are distributed separately by the authors). Layout:
    --data-dir/spatial_mm_obj/spatial_mm_one_obj.json      (anywhere below the folder; the
    --data-dir/spatial_mm_obj/spatial_mm_two_obj.json       repository keeps one of them in data/)
    --data-dir/spatial_mm_obj/images/<image_name>           (found by file name anywhere below)
    --data-dir/spatial_mm_multihop/multihop_reasoning_309.json   (or any multihop*.json)
    --data-dir/spatial_mm_multihop/images/<image_name>

Release records (verified against the repository's JSON files):
  Obj:      {"image_name": "129d118ad0.jpg", "question": "Which direction ...?\\nA. bottom left
             \\nB. left\\nC. right\\nD. upwards", "answer": "D. upwards", "object1", "object2"}
            Options are parsed from the "A. ..." lines; the answer's letter and text must agree
            (the release has a few records where they do not: those are BadItems).
  Multihop: {"image_name", "question", "answer": "left", "reasoning": "{[...], ...}", "hop": 2}
            The release is OPEN-ENDED (no options) although the study scores it as multiple
            choice. [ours] yes/no answers get the options (yes, no); answers in a closed set of
            spatial terms with a clear opposite (left/right, front/behind, top/bottom, on/under,
            ...) get (answer, opposite), shuffled per item with a seeded RNG; any other answer
            (colours, objects, numbers) is a BadItem "open-ended answer ...".
Also accepted in both files (a documented generic schema, for converted copies that carry
options): "id"/"question_id", "image"/"image_path", "options" or "choices" (list, or dict
letter -> text), "answer" (letter or option text), "category".
Item: id = release id if any, else "{one_obj|two_obj}/{row}" / "multihop/{row}" (row = position
in the file); category = one_obj / two_obj, or yes_no / direction for multihop (or the record's
own "category"); meta = image_name, object1, object2 / hop, reasoning.
"""

from __future__ import annotations

from pathlib import Path

from evals.benchmarks.common import (ItemError, convert_rows, is_missing, make_item, row_id,
                                     parse_embedded_options, shuffle_options, text)
from evals.benchmarks.files import find_first, first_key, read_rows, require_dir
from evals.benchmarks.images import ImageIndex, read_image_file

HOW = ("Get the Spatial-MM JSON files from https://github.com/FatemehShiri/Spatial-MM and the "
       "images from its authors into --data-dir/{name}/ (JSON files + images/).")
_PAIRS = (("left", "right"), ("front", "behind"), ("in front of", "behind"), ("above", "below"),
          ("top", "bottom"), ("up", "down"), ("upwards", "downwards"), ("on", "under"),
          ("inside", "outside"), ("top left", "bottom right"), ("top right", "bottom left"),
          ("near", "far"), ("closer", "farther"))
OPPOSITE = {**{a: b for a, b in _PAIRS}, **{b: a for a, b in _PAIRS}, "back": "front"}


def load_obj(root):
  """Items of Spatial-Obj (one- and two-object files) under `root`."""
  name = "spatial_mm_obj"
  root = require_dir(root, name, HOW.format(name=name))
  files = [p for pattern in ("spatial_mm_one_obj.json", "spatial_mm_two_obj.json")
           for p in _optional(root, pattern)]
  if not files:
    raise FileNotFoundError(f"{name}: neither spatial_mm_one_obj.json nor spatial_mm_two_obj.json "
                            f"under {root}. {HOW.format(name=name)}")
  subsets = [(p.stem.replace("spatial_mm_", ""), p) for p in files]
  return _load(name, root, subsets, _obj_fields)


def load_multihop(root, seed: int = 0):
  """Items of the Spatial-MM multi-hop set under `root` (see the module docstring)."""
  name = "spatial_mm_multihop"
  root = require_dir(root, name, HOW.format(name=name))
  files = find_first(root, ("multihop_reasoning_309.json", "multihop*.json"), name,
                     HOW.format(name=name))
  return _load(name, root, [("multihop", p) for p in files],
               lambda item_id, row: _multihop_fields(item_id, row, seed))


def _optional(root: Path, pattern: str) -> list[Path]:
  return sorted(root.glob(pattern)) or sorted(root.rglob(pattern))


def _load(name: str, root: Path, subsets, fields):
  index = ImageIndex(root)

  def rows():
    for subset, path in subsets:
      for i, row in enumerate(read_rows(path)):
        own = row_id(row, lambda r: text(first_key(r, ("id", "question_id"))), f"{subset}/{i}")
        yield own, (subset, row)

  def convert(item_id: str, subset_row):
    subset, row = subset_row
    ref = text(first_key(row, ("image_name", "image", "image_path")))
    if not ref:
      raise ItemError("no image_name")
    found = index.resolve(ref, root / "images")
    image = read_image_file(found)
    question, options, answer, category, meta = fields(item_id, row)
    meta = [("image_name", ref)] + [(k, v) for k, v in meta if not is_missing(v)]
    return make_item(name, item_id, question, options, answer, [image],
                     text(row.get("category")) or category or subset, meta)

  return convert_rows(name, rows(), convert)


def _given_options(row: dict) -> tuple[str, list[str]]:
  """(question stem, options) from an options/choices field or from "A. x" question lines."""
  question = text(row.get("question"))
  options = first_key(row, ("options", "choices"))
  if isinstance(options, dict):
    options = [options[k] for k in sorted(options)]
  if options:
    return question, [text(o) for o in options]
  stem, parsed, _ = parse_embedded_options(question)
  return stem, parsed


def _obj_fields(item_id: str, row: dict):
  question, options = _given_options(row)
  meta = [("object1", row.get("object1")), ("object2", row.get("object2"))]
  return question, options, row.get("answer"), "", meta


def _multihop_fields(item_id: str, row: dict, seed: int):
  question, options = _given_options(row)
  answer = text(row.get("answer"))
  meta = [("hop", row.get("hop")), ("reasoning", row.get("reasoning")),
          ("open_answer", answer)]
  if options:
    return question, options, answer, "", meta
  folded = " ".join(answer.lower().split())
  if folded in ("yes", "no"):
    return question, ["yes", "no"], folded, "yes_no", meta
  if folded in OPPOSITE:
    options, letter = shuffle_options([folded, OPPOSITE[folded]], 0, item_id, seed)
    return question, options, letter, "direction", meta
  raise ItemError(f"open-ended answer {answer!r} has no options (the release gives none; only "
                  f"yes/no and spatial-direction answers are turned into choices)")
