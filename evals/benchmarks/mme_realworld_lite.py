"""MME-RealWorld-Lite (yifanzhang114/MME-RealWorld-Lite on Hugging Face): high-resolution
real-world MCQs with up to 5 options (the 5th is usually "The image does not feature ...").

Obtain: https://huggingface.co/datasets/yifanzhang114/MME-RealWorld-Lite, file data.zip
(unzip it: MME-RealWorld-Lite.json plus the image folder imgs/). Layout of
`--data-dir/mme_realworld_lite/`, the first present is used:
  1. MME-RealWorld-Lite.json (at the top or in data/), images in imgs/ next to it (or anywhere
     under mme_realworld_lite/, found by file name)
  2. any *.json list of records in that schema (must be the only one)
  3. *.tsv: VLMEvalKit's mme_realworld_lite.tsv (yifanzhang114/MME-RealWorld-Base64, what
     VLMEvalKit's "MME-RealWorld-Lite" downloads; must be the only one)
  4. *.parquet (all loaded, in name order): lmms-eval's yifanzhang114/MME-RealWorld-lite-lmms-eval
     (data/train-0000N-of-00004.parquet)

JSON record (verified against the released file's records):
  {"Question_id": "perception/remote_sensing/position/2527", "Image": "dota_v2_..._P7036.png",
   "Text": "Where is ...?", "Question Type": "Multiple Choice",
   "Answer choices": ["(A) ...", ..., "(E) This image doesn't feature the position."],
   "Ground truth": "A", "Category": "position", "Subtask": "Remote Sensing", "Task": "Perception"}
TSV / parquet rows (VLMEvalKit and lmms-eval read them): index, question, "multi-choice options"
(a list, or its Python literal in the TSV), answer (letter), category = "Task/Subtask" (e.g.
"Perception/Remote Sensing"), l2-category = the fine category (the JSON's "Category", e.g.
"position"), and the image: base64 in `image` (TSV; a value of <= 64 characters is the index of
the row whose image it shares, as in every VLMEvalKit TSV) or `bytes` (parquet), or an HF Image
struct. Both spellings of every field are accepted in every format.
Item: id = Question_id (else question_id, else index), category = the fine category (Category,
else l2-category), meta = task, subtask (Task / Subtask, else the two halves of a "Task/Subtask"
category), Question Type. So an item has the same category whichever file it came from.
"""

from __future__ import annotations

import ast
from pathlib import Path

from evals.benchmarks import vlmeval
from evals.benchmarks.common import ItemError, convert_rows, is_missing, make_item, row_id, text
from evals.benchmarks.files import first_key, iter_parquet_rows, read_rows, require_dir
from evals.benchmarks.images import ImageIndex, decode_base64, image_from_cell

NAME = "mme_realworld_lite"
HOW = ("Download data.zip from https://huggingface.co/datasets/yifanzhang114/MME-RealWorld-Lite "
       "and unzip it into --data-dir/mme_realworld_lite/ (MME-RealWorld-Lite.json + imgs/).")
ID_KEYS = ("Question_id", "question_id", "index")
OPTION_KEYS = ("Answer choices", "multi-choice options", "choices", "options")


def annotation_files(root: Path) -> list[Path]:
  """The JSON file (layouts 1-2), the TSV (layout 3) or the parquet files (layout 4)."""
  for pattern in ("MME-RealWorld-Lite.json", "data/MME-RealWorld-Lite.json"):
    if (root / pattern).is_file():
      return [root / pattern]
  for kind, name in (("json", "MME-RealWorld-Lite.json"), ("tsv", "mme_realworld_lite.tsv")):
    found = sorted(root.glob(f"*.{kind}")) or sorted(root.glob(f"data/*.{kind}"))
    if len(found) > 1:
      raise ValueError(f"{NAME}: several *.{kind} files under {root}: "
                       f"{[p.name for p in found]}; keep only the annotation file ({name})")
    if found:
      return found
  found = sorted(root.rglob("*.parquet"))
  if not found:
    raise FileNotFoundError(f"{NAME}: no MME-RealWorld-Lite.json, *.tsv or *.parquet under "
                            f"{root}. {HOW}")
  return found


def load(root):
  """Items of MME-RealWorld-Lite under `root` (see the module docstring for the layout)."""
  root = require_dir(root, NAME, HOW)
  files = annotation_files(root)  # eagerly: a missing file fails at load(), not mid-iteration
  index = ImageIndex(root)

  shared = {}  # TSV: index -> image cell, for cells that name the row whose image they share

  def rows():
    for path in files:
      table = iter_parquet_rows(path) if path.suffix == ".parquet" else list(read_rows(path))
      if path.suffix == ".tsv":
        shared.update((text(r.get("index")), r.get("image")) for r in table)
      for i, row in enumerate(table):
        yield row_id(row, lambda r: text(first_key(r, ID_KEYS)), f"{path.stem}:{i}"), (path, row)

  def convert(item_id: str, path_row):
    path, row = path_row
    tsv = shared if path.suffix == ".tsv" else None
    image = _image(row, index, path.parent, tsv, f"item {item_id}")
    category, meta = _category(row)
    return make_item(NAME, item_id, text(first_key(row, ("Text", "question"))),
                     _options(first_key(row, OPTION_KEYS)),
                     first_key(row, ("Ground truth", "answer")), [image], category, meta)

  return convert_rows(NAME, rows(), convert)


def _category(row: dict) -> tuple[str, list]:
  """(fine category, meta) from either schema: the JSON's Category / Task / Subtask, or the
  tables' l2-category and "Task/Subtask" category."""
  coarse = text(row.get("category"))
  task, _, subtask = coarse.partition("/") if "/" in coarse else ("", "", "")
  category = text(first_key(row, ("Category", "l2-category"))) or coarse
  meta = [("task", text(row.get("Task")) or task), ("subtask", text(row.get("Subtask")) or subtask),
          ("question_type", text(row.get("Question Type")))]
  return category, [(k, v) for k, v in meta if v]


def _options(value) -> list:
  if is_missing(value):
    return []
  if isinstance(value, str):  # a list literal in some exports
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
      raise ItemError(f"answer choices {value!r} are not a list") from e
  return list(value)


def _image(row: dict, index: ImageIndex, folder: Path, tsv: dict | None, what: str) -> bytes:
  """The row's image; `tsv` (index -> image cell) when the row comes from a VLMEvalKit TSV."""
  cell = first_key(row, ("Image", "image", "bytes"))
  if tsv is not None and not is_missing(cell):
    images = vlmeval.base64_images(text(cell), tsv, what)
    if len(images) != 1:
      raise ItemError(f"{len(images)} images in one cell, expected one ({what})")
    return images[0]
  if isinstance(cell, str) and not _looks_like_path(cell):
    return decode_base64(cell, what)
  return image_from_cell(cell, what, lambda ref: index.resolve(ref, folder / "imgs", folder))


def _looks_like_path(value: str) -> bool:
  # A file name is short and has an extension; base64 text is long and has neither.
  name = value.strip()
  return len(name) < 512 and "." in name[-6:]
