"""SAT (Spatial Aptitude Training; array/SAT on Hugging Face): synthetic ProcTHOR scenes with
static (one image) and dynamic / motion (two images) spatial multiple-choice questions. The study
trains on "SAT-2" (32K): we read the release's `train` split (static + dynamic, 175K rows) by
default; training takes the study's 32K as a fixed random subset (`data_limits=sat2:32000`, set
in configs/grpo_study.py), `rl.datasets.load(..., limit=N)` reads the first N rows.

Obtain: https://huggingface.co/datasets/array/SAT (download the parquet file of the split, e.g.
SAT_train.parquet). Layout of `--data-dir/sat2/`, the first present is used (`split` default
"train"; the release's splits are train, static, val, test):
  1. SAT_{split}.parquet                          (the release's file names)
  2. {split}-*.parquet, data/{split}-*.parquet    (HF parquet conversion / re-hosts)
  3. {split}.json (a list) or {split}.jsonl + image files, paths relative to sat2/ or
     sat2/images/ (or found by file name below sat2/)
Columns: image_bytes (list of HF Image structs with `bytes`; one image for static questions,
two for motion ones), question, answers (list of option texts), correct_answer (the key's
TEXT), question_type. Also accepted: `images` / `image_paths` / `image` instead of image_bytes,
and an `id` column. The json layout uses the same field names, images as path lists.
Example: id = the row's `id`, else "{split}_{row index}" (index over the split's rows in file
order), source "sat2", options = answers (lettered A, B, ...), answer = letter of
correct_answer, images = all images in order, category = question_type.
Options are shuffled per row by default (`common.seeded_permutation`, key "sat2/{id}", `seed`):
the release card asks users to randomise the choices (it lists the key first in many rows), and
a policy rewarded for always answering "A" would learn nothing spatial. `shuffle=False` keeps
the release order.
Verified: file names, splits and column names/types from the HF dataset card (dataset_info and
usage snippet). Assumed: the parquet contents beyond the card (fixtures mirror it), the json
layout (ours, for hand-converted copies), and which rows make the study's 32K subset.
"""

from __future__ import annotations

from pathlib import Path

from evals.benchmarks.common import ItemError, is_missing, text
from evals.benchmarks.files import first_key, require_dir
from evals.benchmarks.images import ImageIndex
from rl.datasets.common import (as_list, choice_example, convert_rows, first_layout, images_of,
                                numbered_rows)

NAME = "sat2"
HOW = ("Download SAT_train.parquet from https://huggingface.co/datasets/array/SAT into "
       "--data-dir/sat2/ (or {split}.json/.jsonl + images; see rl/datasets/sat2.py).")
IMAGE_KEYS = ("image_bytes", "images", "image_paths", "image")


def layouts(split: str) -> tuple[tuple[str, ...], ...]:
  return ((f"SAT_{split}.parquet",), (f"{split}-*.parquet", f"data/{split}-*.parquet"),
          (f"{split}.json", f"{split}.jsonl"))


def load(root, split: str = "train", shuffle: bool = True, seed: int = 0):
  """Examples of SAT split `split` under `root` (see the module docstring for the layout)."""
  root = require_dir(root, NAME, HOW)
  files = first_layout(root, layouts(split), NAME, HOW)  # eagerly: fail at load(), not later
  index = ImageIndex(root)

  def resolve(ref: str) -> Path:
    return index.resolve(ref, root, root / "images")

  def convert(example_id: str, row: dict):
    images = images_of(first_key(row, IMAGE_KEYS), f"row {example_id}", resolve)
    options = [text(o) for o in as_list(row.get("answers"), "answers")]
    answer = row.get("correct_answer")
    if is_missing(answer):
      raise ItemError("no correct_answer")
    return choice_example(NAME, example_id, row.get("question"), options, answer, images,
                          text(row.get("question_type")), seed if shuffle else None)

  return convert_rows(NAME, numbered_rows(files, split), convert)
