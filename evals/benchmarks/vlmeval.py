"""VLMEvalKit-style multiple-choice tables (MMBench, 3DSRBench): one row per question.

Columns (as VLMEvalKit writes and reads them):
  index        the item id (unique per file)
  qid          (3DSRBench) the question id: "VIN6MS3J", its flipped twin "VIN6MS3J-flip", and the
               circular copies "VIN6MS3J-1", "VIN6MS3J-flip-2", ... (qid of the copied row + "-N")
  question     question text
  hint         optional context; when present (not NA) the question becomes
               "Hint: {hint}\\nQuestion: {question}", VLMEvalKit's own MCQ prompt wording
  A, B, C, ... option texts; NA cells (pandas' NA strings) are absent options, so an item may
               have fewer than 4 options. Present columns with a gap (A, C, D: B is NA) are
               lettered A, B, C in the prompt, as every item's options are; the key follows
               (C -> B) and meta "option_columns" keeps the table's letters ("A,C,D").
               VLMEvalKit prints such a row's options under their column letters instead.
  answer       the key (letter, "(A)", "C. text", or option text)
  category     the item's category
  image        base64 image (or a JSON list of them); a value of <= 64 characters is the index
               of another row whose image it shares (VLMEvalKit's de-duplication rule)
  image_path / image_url   used when there is no image column: a path relative to the data folder
               or a URL, resolved locally by `ImageIndex` (by path, then by file name)
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator, Sequence
from pathlib import Path

from evals.benchmarks.common import (ItemError, convert_rows, is_missing, make_item, row_id,
                                     text)
from evals.benchmarks.files import read_rows
from evals.benchmarks.images import ImageIndex, decode_base64, image_from_cell
from evals.schema import BadItem, Item

_REF_MAX_CHARS = 64  # VLMEvalKit: image cells this short are references to another row


def load_table(benchmark: str, path: Path, root: Path, meta_keys: Sequence[str] = (),
               circular: bool = False, how: str = "") -> Iterator[Item | BadItem]:
  """Items of one VLMEvalKit table file; `meta_keys` columns are copied into `meta`.

  Circular copies are left out unless `circular`: counted as items, they would weigh each
  question up to 4 times and narrow its bootstrap intervals as if the copies were independent.
  Two conventions mark them: VLMEvalKit's CircularEval (the row with index k + j * 1e6, j >= 1,
  is row k with its options rotated; MMBench's DEV_EN TSV holds 4329 rows for 1164 questions)
  and 3DSRBench's circular TSV (qid Q + "-N" is a copy of the row with qid Q, whatever its
  index; its flipped twins "Q-flip" are questions of their own). With `circular` the copies run
  as items of their own (meta "circular_of" = the index of the copied row), scored per copy: a
  pooled accuracy over rotations, not CircularEval's all-rotations-correct score."""
  rows = list(read_rows(path))
  missing = [c for c in ("question", "A", "B", "answer") if rows and c not in rows[0]]
  if missing:  # every row would be a bad item: the file is not such a table
    raise ValueError(f"{benchmark}: {path} has no {', '.join(missing)} column(s) (columns: "
                     f"{', '.join(map(str, rows[0]))}): not a multiple-choice table. {how}")
  by_index = {text(r.get("index")): r.get("image") for r in rows}
  origin = {k: _circular_origin(k, by_index) for k in by_index}
  origin.update(_qid_copies(rows))
  if not circular:
    rows = [r for r in rows if origin.get(text(r.get("index"))) is None]
  index = ImageIndex(root)

  def convert(item_id: str, row: dict) -> Item:
    images = _row_image(row, by_index, index, root, f"{path.name} index {item_id}")
    meta = [(k, row[k]) for k in meta_keys if k in row and not is_missing(row[k])]
    if origin.get(item_id) is not None:
      meta.append(("circular_of", origin[item_id]))
    columns = _option_columns(row)
    answer = row.get("answer")
    if columns != list(string.ascii_uppercase[: len(columns)]):
      answer = _reletter(answer, columns)
      meta.append(("option_columns", ",".join(columns)))
    return make_item(benchmark, item_id, _question(row), [text(row[c]) for c in columns],
                     answer, images, text(row.get("category")), meta)

  ids = ((row_id(r, lambda r: text(r.get("index")), f"row{i}"), r) for i, r in enumerate(rows))
  return convert_rows(benchmark, ids, convert)


_CIRCULAR_STRIDE = 1_000_000


def _circular_origin(index: str, indices) -> str | None:
  """k when `index` is k + j * 1e6 (j >= 1) and row k exists: a CircularEval copy of row k."""
  if not index.isdigit() or int(index) < _CIRCULAR_STRIDE:
    return None
  origin = str(int(index) % _CIRCULAR_STRIDE)
  return origin if origin in indices else None


_QID_COPY = re.compile(r"^(.+)-(\d+)$")


def _qid_copies(rows: Sequence[dict]) -> dict[str, str]:
  """{index of a copy: index of its original} for rows whose qid is another row's qid + "-N"."""
  index_of = {text(r.get("qid")): text(r.get("index")) for r in rows if text(r.get("qid"))}
  copies = {}
  for qid, index in index_of.items():
    m = _QID_COPY.match(qid)
    if m and m.group(1) in index_of:
      copies[index] = index_of[m.group(1)]
  return copies


def _question(row: dict) -> str:
  question = text(row.get("question"))
  hint = text(row.get("hint"))
  return f"Hint: {hint}\nQuestion: {question}" if hint and question else question


def _option_columns(row: dict) -> list[str]:
  """The letters of the option columns with a value, in order."""
  return [c for c in string.ascii_uppercase if c in row and not is_missing(row[c])]


_LETTER_KEY = re.compile(r"^(\(?)([A-Z])(\)?[.):]?(?:\s.*)?)$", re.S)


def _reletter(answer, columns: Sequence[str]):
  """A key written with a column letter ("C", "(C)", "C. text") in the letters the options get
  once relettered without gaps; an option text is left for `make_item` to match."""
  m = _LETTER_KEY.match(text(answer))
  if not m:
    return answer
  if m.group(2) not in columns:
    raise ItemError(f"answer {text(answer)!r} names column {m.group(2)}, which has no option "
                    f"(options in columns {', '.join(columns)})")
  return m.group(1) + string.ascii_uppercase[columns.index(m.group(2))] + m.group(3)


def _row_image(row: dict, by_index: dict, index: ImageIndex, root: Path, what: str) -> list[bytes]:
  cell = row.get("image")
  if isinstance(cell, (dict, bytes, bytearray, memoryview)):
    return [image_from_cell(cell, what)]
  if not is_missing(cell):
    return base64_images(str(cell).strip(), by_index, what)
  for key in ("image_path", "image_url"):
    if not is_missing(row.get(key)):
      return [image_from_cell(row[key], what, lambda ref: index.resolve(ref, root / "images"))]
  raise ItemError(f"no image ({what}: no image, image_path or image_url value)")


def base64_images(cell: str, by_index: dict, what: str) -> list[bytes]:
  """The images of a VLMEvalKit `image` cell: base64, a list literal of base64 strings, or (at
  most 64 characters) the index of the row whose image it shares; `by_index` maps index ->
  that row's image cell."""
  if len(cell) <= _REF_MAX_CHARS:
    if cell not in by_index:
      raise ItemError(f"image value {cell!r} is too short for base64 image data and is not the "
                      f"index of another row ({what})")
    target = by_index[cell]
    if is_missing(target) or len(str(target).strip()) <= _REF_MAX_CHARS:
      raise ItemError(f"image refers to row index {cell!r}, which has no image of its own "
                      f"({what})")
    cell = str(target).strip()
  if cell.startswith("["):
    try:
      cells = ast.literal_eval(cell)
    except (ValueError, SyntaxError) as e:
      raise ItemError(f"image list is not a valid list literal ({what}): {e}") from e
    return [decode_base64(str(c), f"{what} image {i}") for i, c in enumerate(cells)]
  return [decode_base64(cell, what)]
