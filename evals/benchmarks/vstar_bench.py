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
  3. any *.parquet below (lmms-lab/vstar-bench, what lmms-eval reads: data/test-*.parquet): the
     jsonl's fields with the image embedded (an HF Image struct).
Verified: the repository's folders and files, the per-image JSON fields (a published annotation),
the jsonl field names, and the fields lmms-eval reads from its parquet (question_id, image, text,
category, label); assumed: the exact option format inside `text` (option lines "(A) x" or
"A. x", or "(A) x (B) y" on one line, are parsed).

Options are shuffled by default with a per-item seeded RNG (`common.seeded_permutation`, key =
item id, `seed`), because layout 1 always lists the key first and a model biased towards "A"
would otherwise score for free; `shuffle=False` keeps the release order. The key is tracked
through the shuffle; meta holds the release's key letter ("source_answer").
Item: id = "{category}/{image stem}" in both layouts (e.g. "direct_attributes/sa_4690"),
category = direct_attributes / relative_position.
"""

from __future__ import annotations

import re
from pathlib import Path

from evals.benchmarks.common import (ItemError, convert_rows, is_missing, make_item, row_id,
                                     normalize_answer, parse_embedded_options, shuffle_options,
                                     strip_prefixes, text)
from evals.benchmarks.files import iter_jsonl, iter_parquet_rows, read_json, require_dir
from evals.benchmarks.images import ImageIndex, image_from_cell, read_image_file
from evals.schema import LETTERS

NAME = "vstar_bench"
HOW = ("Snapshot https://huggingface.co/datasets/craigwu/vstar_bench into --data-dir/vstar_bench/ "
       "(folders direct_attributes/ and relative_position/, or test_questions.jsonl + images), "
       "or lmms-lab/vstar-bench's parquet files.")
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
  elif parquets := sorted(root.rglob("*.parquet")):
    rows = ((row_id(r, _jsonl_id, f"row{i}"), ("jsonl", r))
            for i, r in enumerate(r for p in parquets for r in iter_parquet_rows(p)))
  else:
    raise FileNotFoundError(f"{NAME}: neither {CATEGORIES[0]}/*.json, test_questions.jsonl nor "
                            f"a parquet file under {root}. {HOW}")
  index = ImageIndex(root)

  def convert(item_id: str, kind_row):
    kind, row = kind_row
    fields = _from_json(row) if kind == "json" else _from_jsonl(row, root, index)
    return _item(item_id, *fields, shuffle=shuffle, seed=seed)

  return convert_rows(NAME, rows, convert)


def _image_ref(row: dict) -> str:
  """The image's path: the jsonl's string, or the path of a parquet's image struct."""
  cell = row.get("image")
  return text(cell.get("path")) if isinstance(cell, dict) else text(cell)


def _jsonl_id(row: dict) -> str:
  image = Path(_image_ref(row))
  if not image.stem:  # a parquet image without a path: the question id stands in
    return f"{text(row.get('category'))}/{text(row.get('question_id'))}"
  return f"{text(row.get('category')) or image.parent.name}/{image.stem}"


_INLINE_OPTION = re.compile(r"\(([A-Z])\)\s*")


def _inline_options(question: str) -> tuple[str, list[str]]:
  """"stem (A) x (B) y" on one line (lmms-eval parses V*'s text either way): the letters must
  run A, B, ... in order, else no options."""
  parts = _INLINE_OPTION.split(question)  # [stem, "A", x, "B", y, ...]
  letters, options = parts[1::2], [o.strip() for o in parts[2::2]]
  if len(letters) < 2 or letters != list(LETTERS[:len(letters)]):
    return question.strip(), []
  return parts[0].strip(), options


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
  """A test_questions.jsonl row, or a parquet row of the same fields with the image embedded."""
  ref, cell = _image_ref(row), row.get("image")
  if isinstance(cell, dict) and cell.get("bytes"):
    image = image_from_cell(cell, f"question_id {text(row.get('question_id'))}")
  elif ref:
    image = read_image_file(index.resolve(ref, root))
  else:
    raise ItemError("no image field")
  question, options = text(row.get("text") or row.get("question")), row.get("options")
  if not options:
    question, options, _ = parse_embedded_options(question)
  if not options:
    question, options = _inline_options(question)
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

