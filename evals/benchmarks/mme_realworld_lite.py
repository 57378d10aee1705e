"""MME-RealWorld-Lite (yifanzhang114/MME-RealWorld-Lite on Hugging Face): high-resolution
real-world MCQs with up to 5 options (the 5th is usually "The image does not feature ...").

Obtain: https://huggingface.co/datasets/yifanzhang114/MME-RealWorld-Lite, file data.zip
(unzip it: MME-RealWorld-Lite.json plus the image folder imgs/). Layout of
`--data-dir/mme_realworld_lite/`, the first present is used:
  1. MME-RealWorld-Lite.json (at the top or in data/), images in imgs/ next to it (or anywhere
     under mme_realworld_lite/, found by file name)
  2. any *.json list of records in that schema (must be the only one)
  3. *.parquet (all loaded, in name order): the parquet variant with embedded image bytes

JSON record (verified against the released file's records):
  {"Question_id": "perception/remote_sensing/position/2527", "Image": "dota_v2_..._P7036.png",
   "Text": "Where is ...?", "Question Type": "Multiple Choice",
   "Answer choices": ["(A) ...", ..., "(E) This image doesn't feature the position."],
   "Ground truth": "A", "Category": "position", "Subtask": "Remote Sensing", "Task": "Perception"}
Parquet variant (assumed, lmms-eval style; not verified): question, "multi-choice options" (list),
answer, category, l2-category, index/question_id, and the image as an HF Image struct, raw bytes,
or base64 text in `image` or `bytes`. Both spellings of every field are accepted in both formats.
Item: id = Question_id (else question_id, else index), category = Category, meta = Task,
Subtask (or l2-category), Question Type.
"""

from __future__ import annotations

import ast
from pathlib import Path

from evals.benchmarks.common import (ItemError, convert_rows, is_missing, make_item, row_id,
                                     text)
from evals.benchmarks.files import first_key, iter_parquet_rows, read_rows, require_dir
from evals.benchmarks.images import ImageIndex, decode_base64, image_from_cell

NAME = "mme_realworld_lite"
HOW = ("Download data.zip from https://huggingface.co/datasets/yifanzhang114/MME-RealWorld-Lite "
       "and unzip it into --data-dir/mme_realworld_lite/ (MME-RealWorld-Lite.json + imgs/).")
ID_KEYS = ("Question_id", "question_id", "index")
OPTION_KEYS = ("Answer choices", "multi-choice options", "choices", "options")
META_KEYS = (("task", ("Task",)), ("subtask", ("Subtask", "l2-category")),
             ("question_type", ("Question Type",)))


def annotation_files(root: Path) -> list[Path]:
  """The JSON file (layouts 1-2) or the parquet files (layout 3) under `root`."""
  for pattern in ("MME-RealWorld-Lite.json", "data/MME-RealWorld-Lite.json"):
    if (root / pattern).is_file():
      return [root / pattern]
  jsons = sorted(root.glob("*.json")) or sorted(root.glob("data/*.json"))
  if len(jsons) > 1:
    raise ValueError(f"{NAME}: several *.json files under {root}: {[p.name for p in jsons]}; "
                     f"keep only the annotation file (MME-RealWorld-Lite.json)")
  found = jsons or sorted(root.rglob("*.parquet"))
  if not found:
    raise FileNotFoundError(f"{NAME}: no MME-RealWorld-Lite.json or *.parquet under {root}. {HOW}")
  return found


def load(root):
  """Items of MME-RealWorld-Lite under `root` (see the module docstring for the layout)."""
  root = require_dir(root, NAME, HOW)
  files = annotation_files(root)  # eagerly: a missing file fails at load(), not mid-iteration
  index = ImageIndex(root)

  def rows():
    for path in files:
      reader = iter_parquet_rows if path.suffix == ".parquet" else read_rows
      for i, row in enumerate(reader(path)):
        yield row_id(row, lambda r: text(first_key(r, ID_KEYS)), f"{path.stem}:{i}"), (path, row)

  def convert(item_id: str, path_row):
    path, row = path_row
    image = _image(row, index, path.parent, f"item {item_id}")
    meta = [(k, first_key(row, keys)) for k, keys in META_KEYS
            if not is_missing(first_key(row, keys))]
    return make_item(NAME, item_id, text(first_key(row, ("Text", "question"))),
                     _options(first_key(row, OPTION_KEYS)),
                     first_key(row, ("Ground truth", "answer")), [image],
                     text(first_key(row, ("Category", "category"))), meta)

  return convert_rows(NAME, rows(), convert)


def _options(value) -> list:
  if is_missing(value):
    return []
  if isinstance(value, str):  # a list literal in some exports
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
      raise ItemError(f"answer choices {value!r} are not a list") from e
  return list(value)


def _image(row: dict, index: ImageIndex, folder: Path, what: str) -> bytes:
  cell = first_key(row, ("Image", "image", "bytes"))
  if isinstance(cell, str) and not _looks_like_path(cell):
    return decode_base64(cell, what)
  return image_from_cell(cell, what, lambda ref: index.resolve(ref, folder / "imgs", folder))


def _looks_like_path(value: str) -> bool:
  # A file name is short and has an extension; base64 text is long and has neither.
  name = value.strip()
  return len(name) < 512 and "." in name[-6:]
