"""CV-Bench (nyu-visionx/CV-Bench on Hugging Face): 2D (count, relation) and 3D (depth,
distance) MCQs with 2-6 options.

Obtain: https://huggingface.co/datasets/nyu-visionx/CV-Bench. Layout of `--data-dir/cv_bench/`,
the first that is present is used:
  1. test_2d.parquet and/or test_3d.parquet   (current release; both are loaded)
  2. test.parquet                             (earlier release, both parts in one file)
  3. test-*.parquet or */test/*.parquet       (HF parquet conversion: default/test/0000.parquet)
  4. test.jsonl + img/                        (annotations only; `filename` such as
                                               img/2D/count/ade20k_10.png relative to cv_bench/)
  5. test_2d.jsonl and/or test_3d.jsonl + img/ (the same, split; the current release ships
                                               them beside the parquets, and its build_img.py
                                               writes img/ from the parquets)

Columns: idx, type ("2D"/"3D"), task (Count/Relation/Depth/Distance), image (HF Image struct
with `bytes`; absent in the jsonl), question, choices (list), answer ("(A)"), prompt, filename,
source, source_dataset, ... Item: id = "{type}_{idx}" (type-prefixed so the 2D and 3D files can
never collide), question = `question` (the `prompt` column repeats the options, so it is not
used), category = task, meta = type, source, source_dataset, filename.
Verified: file names and column names from the HF repository listing and card; parquet
contents were not available offline (the fixture mirrors the documented columns).
"""

from __future__ import annotations

import ast
from pathlib import Path

from evals.benchmarks.common import ItemError, convert_rows, is_missing, make_item, text
from evals.benchmarks.files import iter_jsonl, iter_parquet_rows, require_dir
from evals.benchmarks.images import ImageIndex, image_from_cell

NAME = "cv_bench"
HOW = ("Download test_2d.parquet and test_3d.parquet (or test.jsonl + img/) from "
       "https://huggingface.co/datasets/nyu-visionx/CV-Bench into --data-dir/cv_bench/.")
LAYOUTS = (("test_2d.parquet", "test_3d.parquet"), ("test.parquet",),
           ("test-*.parquet", "*/test/*.parquet"), ("test.jsonl",),
           ("test_2d.jsonl", "test_3d.jsonl"))
META_KEYS = ("type", "source", "source_dataset", "filename")


def annotation_files(root: Path) -> list[Path]:
  """The files of the first layout present under `root` (see the module docstring)."""
  for patterns in LAYOUTS:
    found = [p for pattern in patterns for p in sorted(root.glob(pattern)) if p.is_file()]
    if found:
      return found
  raise FileNotFoundError(f"{NAME}: no CV-Bench annotation file under {root}. {HOW}")


def load(root):
  """Items of CV-Bench under `root` (see the module docstring for the layout)."""
  root = require_dir(root, NAME, HOW)
  files = annotation_files(root)  # eagerly: a missing file fails at load(), not mid-iteration
  index = ImageIndex(root)

  def rows():
    for path in files:
      reader = iter_jsonl if path.suffix == ".jsonl" else iter_parquet_rows
      for row in reader(path):
        kind, idx = text(row.get("type")), text(row.get("idx"))
        yield (f"{kind}_{idx}" if kind else idx), row

  def convert(item_id: str, row: dict):
    image = row.get("image")
    if is_missing(image) or image == {} or (isinstance(image, dict) and not any(image.values())):
      image = row.get("filename")
    img = image_from_cell(image, f"item {item_id}", lambda ref: index.resolve(ref, root))
    meta = [(k, row[k]) for k in META_KEYS if not is_missing(row.get(k))]
    return make_item(NAME, item_id, text(row.get("question")), _choices(row.get("choices")),
                     row.get("answer"), [img], text(row.get("task")), meta)

  return convert_rows(NAME, rows(), convert)


def _choices(value) -> list:
  """The choices list (a list, or its Python/JSON literal text in csv-like exports)."""
  if is_missing(value):
    return []
  if isinstance(value, str):
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
      raise ItemError(f"choices {value!r} is not a list") from e
  if not isinstance(value, (list, tuple)):
    raise ItemError(f"choices {value!r} is not a list")
  return list(value)
