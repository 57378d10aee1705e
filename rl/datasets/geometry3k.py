"""Geometry3K (Inter-GPS, lupantech/InterGPS): 3,002 plane-geometry problems with a diagram and
4 choices (train 2,101 / val 300 / test 601). The study's ablation adds the train split (2.1K).

Obtain: the Inter-GPS release (https://github.com/lupantech/InterGPS, README "Data": train.zip,
val.zip, test.zip, unzipped as its data/unzip_data.sh does), or the HF parquet conversion
https://huggingface.co/datasets/hiyouga/geometry3k. Layout of `--data-dir/geometry3k/`, the
first present is used (`split` default "train"; "val" in Inter-GPS is "validation" on HF):
  1. {split}/<id>/data.json + {split}/<id>/img_diagram.png        (Inter-GPS folders)
     data.json: "problem_text", "choices" (4 strings), "answer" (letter), "id",
     "problem_type_goal" (list, e.g. ["Angle"]), plus annotat_text, compact_choices, ...
  2. data/{split}-*.parquet or {split}-*.parquet                  (hiyouga/geometry3k)
     columns images (list of HF Image structs), problem ("<image>" + the LaTeX annotat_text),
     answer (the key's option TEXT); the current version adds id, choices (list), ground_truth
     (letter); an earlier one has only images, problem, answer.
Example: a choice example when the row has choices (options = choices in release order, answer
= ground_truth / "answer" letter, else the answer text matched to an option); otherwise (the
earlier HF version) a number example whose answer must be a plain number ("12.5"; answers such
as "2 \\sqrt { 3 }" become bad rows). id = the folder name / the `id` column, else
"{split}_{row index}"; question = problem_text (Inter-GPS) or problem with "<image>" removed
(HF; note this is the LaTeX wording); category = "+".join(problem_type_goal) (Inter-GPS; "" on
HF); one image.
Verified: the data.json fields (an example in the Inter-GPS repository's annotation tool, same
schema as the release) and the HF columns plus how they were built (the conversion script in
the dataset card). Assumed: every released folder holds img_diagram.png (missing: a bad row).
"""

from __future__ import annotations

import re
from pathlib import Path

from evals.benchmarks.common import ItemError, is_missing, text
from evals.benchmarks.files import read_json, require_dir
from evals.benchmarks.images import read_image_file
from rl.datasets.common import (as_list, choice_example, convert_rows, first_layout,
                                images_of, number_example, numbered_rows)

NAME = "geometry3k"
HOW = ("Unzip the Inter-GPS train.zip (https://github.com/lupantech/InterGPS) into "
       "--data-dir/geometry3k/ (train/<id>/data.json + img_diagram.png), or download "
       "https://huggingface.co/datasets/hiyouga/geometry3k parquet files into geometry3k/data/.")
IMAGE_TOKEN = re.compile(r"<image>\s*")


def layouts(split: str) -> tuple[tuple[str, ...], ...]:
  return ((f"{split}/*/data.json",), (f"data/{split}-*.parquet", f"{split}-*.parquet"))


def load(root, split: str = "train"):
  """Examples of Geometry3K split `split` under `root` (see the module docstring)."""
  root = require_dir(root, NAME, HOW)
  files = first_layout(root, layouts(split), NAME, HOW)  # eagerly: fail at load(), not later
  if files[0].name == "data.json":
    folders = sorted((p.parent for p in files), key=_folder_order)
    return convert_rows(NAME, ((p.name, {"folder": p}) for p in folders), _from_folder)
  return convert_rows(NAME, numbered_rows(files, split), _from_parquet_row)


def _folder_order(folder: Path):
  """Numeric ids in numeric order (2 before 11), any other name after them."""
  return (0, int(folder.name), "") if folder.name.isdigit() else (1, 0, folder.name)


def _from_folder(example_id: str, row: dict):
  folder = row["folder"]
  try:
    data = read_json(folder / "data.json")
  except ValueError as e:  # names the file and the JSON error
    raise ItemError(str(e)) from e
  if not isinstance(data, dict):
    raise ItemError(f"{folder / 'data.json'} is not a JSON object")
  image = read_image_file(folder / "img_diagram.png")
  goal = "+".join(text(g) for g in as_list(data.get("problem_type_goal"), "problem_type_goal"))
  return choice_example(NAME, example_id, data.get("problem_text"),
                        as_list(data.get("choices"), "choices"), data.get("answer"), [image],
                        goal)


def _from_parquet_row(example_id: str, row: dict):
  images = images_of(row.get("images"), f"row {example_id}")
  question = IMAGE_TOKEN.sub("", text(row.get("problem")))
  choices = as_list(row.get("choices"), "choices")
  if choices:
    letter = row.get("ground_truth")
    answer = row.get("answer") if is_missing(letter) else letter
    return choice_example(NAME, example_id, question, choices, answer, images)
  return number_example(NAME, example_id, question, row.get("answer"), images)
