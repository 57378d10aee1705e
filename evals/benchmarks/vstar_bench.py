"""V*-Bench (craigwu/vstar_bench on Hugging Face): 191 high-resolution questions, 115
direct_attributes (4 options) and 76 relative_position (2 options).

Obtain: https://huggingface.co/datasets/craigwu/vstar_bench (clone or snapshot the repository).
Layout of `--data-dir/vstar_bench/`, the first present is used:
  1. direct_attributes/*.jpg + same-stem *.json, relative_position/*.jpg + *.json
     (the original annotation; other folders in the repository, OCR/ and GPT4V-hard/, are not
     part of the benchmark and are ignored). JSON: {"question": ..., "options": [...],
     "target_object": [...], "bbox": [...]}; the FIRST option is the correct one.
  2. test_questions.jsonl: {"question_id", "image": "direct_attributes/sa_4690.jpg",
     "text": question with "(A) ..." option lines and an instruction line, "category",
     "label": "A"}; an explicit "options" list is used when present instead of parsing `text`.
Verified: the repository's folders and files, the per-image JSON fields (a published annotation),
and the jsonl field names; assumed: the exact option-line format inside `text` (both "(A) x" and
"A. x" are parsed).

Options are shuffled by default with a per-item seeded RNG (`common.seeded_permutation`, key =
item id, `seed`), because layout 1 always lists the key first and a model biased towards "A"
would otherwise score for free; `shuffle=False` keeps the release order. The key is tracked
through the shuffle; meta holds the release's key letter ("source_answer").
Item: id = "{category}/{image stem}" in both layouts (e.g. "direct_attributes/sa_4690"),
category = direct_attributes / relative_position.
"""

from __future__ import annotations

from pathlib import Path

from evals.benchmarks.common import (ItemError, convert_rows, is_missing, make_item, row_id,
                                     normalize_answer, parse_embedded_options, shuffle_options,
                                     strip_prefixes, text)
from evals.benchmarks.files import iter_jsonl, read_json, require_dir
from evals.benchmarks.images import ImageIndex, read_image_file
from evals.schema import LETTERS

NAME = "vstar_bench"
HOW = ("Snapshot https://huggingface.co/datasets/craigwu/vstar_bench into --data-dir/vstar_bench/ "
       "(folders direct_attributes/ and relative_position/, or test_questions.jsonl + images).")
CATEGORIES = ("direct_attributes", "relative_position")


def load(root, shuffle: bool = True, seed: int = 0):
  """Items of V*-Bench under `root` (see the module docstring for layouts and shuffling)."""
  root = require_dir(root, NAME, HOW)
  jsons = [p for c in CATEGORIES for p in sorted((root / c).glob("*.json"))]
  if jsons:
    rows = ((f"{p.parent.name}/{p.stem}", ("json", p)) for p in jsons)
  elif (root / "test_questions.jsonl").is_file():
    rows = ((row_id(r, _jsonl_id, f"row{i}"), ("jsonl", r))
            for i, r in enumerate(iter_jsonl(root / "test_questions.jsonl")))
  else:
    raise FileNotFoundError(f"{NAME}: neither {CATEGORIES[0]}/*.json nor test_questions.jsonl "
                            f"under {root}. {HOW}")
  index = ImageIndex(root)

  def convert(item_id: str, kind_row):
    kind, row = kind_row
    fields = _from_json(row) if kind == "json" else _from_jsonl(row, root, index)
    return _item(item_id, *fields, shuffle=shuffle, seed=seed)

  return convert_rows(NAME, rows, convert)


def _jsonl_id(row: dict) -> str:
  image = Path(text(row.get("image")))
  return f"{text(row.get('category')) or image.parent.name}/{image.stem}"


def _from_json(path: Path):
  """(question, options, key index, image bytes, category, meta) of one per-image JSON."""
  ann = read_json(path)
  images = [p for p in (path.with_suffix(s) for s in (".jpg", ".jpeg", ".png")) if p.is_file()]
  image = read_image_file(images[0] if images else path.with_suffix(".jpg"))
  options = ann.get("options") or []
  target = ann.get("target_object") or []
  meta = [("image", f"{path.parent.name}/{images[0].name if images else path.stem + '.jpg'}"),
          ("target_object", ", ".join(map(str, target)) if isinstance(target, list) else target)]
  return text(ann.get("question")), options, 0, image, path.parent.name, meta


def _from_jsonl(row: dict, root: Path, index: ImageIndex):
  ref = text(row.get("image"))
  if not ref:
    raise ItemError("no image field")
  image = read_image_file(index.resolve(ref, root))
  question, options = text(row.get("text") or row.get("question")), row.get("options")
  if not options:
    question, options, _ = parse_embedded_options(question)
  options = strip_prefixes([text(o) for o in options])
  if len(options) < 2:
    raise ItemError("no options" if not options else f"only one option ({options[0]!r})")
  key = LETTERS.index(normalize_answer(row.get("label"), options))
  category = text(row.get("category")) or Path(ref).parent.name
  meta = [("image", ref), ("question_id", row.get("question_id"))]
  return question, options, key, image, category, meta


def _item(item_id, question, options, key, image, category, meta, *, shuffle, seed):
  options = strip_prefixes([text(o) for o in options])  # before shuffling moves the letters
  if len(options) < 2:
    raise ItemError("no options" if not options else f"only one option ({options[0]!r})")
  meta = [(k, v) for k, v in meta if not is_missing(v)] + [("source_answer", LETTERS[key])]
  answer = LETTERS[key]
  if shuffle:
    options, answer = shuffle_options(options, key, item_id, seed)
  return make_item(NAME, item_id, question, options, answer, [image], category, meta)

