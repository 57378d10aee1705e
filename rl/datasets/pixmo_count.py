"""PixMo-Count (allenai/pixmo-count on Hugging Face): web images with an object noun and its
count (train 36,916 rows, Detic-derived; validation/test 540 each, human-verified, counts 2-10).
The study trains on 15K of them. Open numeric examples, scored by number (augmented by
`rl.augment.augment_number`).

Obtain: https://huggingface.co/datasets/allenai/pixmo-count (data/train-00000-of-00001.parquet).
The release holds image URLs only: download the images yourself BEFOREHAND (nothing here
downloads). Layout of `--data-dir/pixmo_count/` (`split` default "train"):
  data/{split}-*.parquet or {split}-*.parquet   (the release), or {split}.jsonl / {split}.json
  images/<image_sha256>.<ext>                   (any image extension; found by the hash)
A row may instead name its file in an `image_path` column (relative to pixmo_count/, or
absolute). Columns: image_url, image_sha256, count (int), label (object noun), points (list of
{x, y}; unused). Image URLs repeat across rows (one image, several labels): one file serves all.
Example: id = "{split}_{row index}" (the release has no id column; an `id` column wins),
source "pixmo_count", kind "number", question "How many {label} are in the image?" (the label
as given, not pluralised), answer str(count), one image, category "count".
Bad rows: missing or unreadable image file, sha256 of the file differing from image_sha256
(`check_sha256=False` skips this, e.g. for re-encoded images), no label, count not an integer
>= 0.
Verified: file names, splits and column names/types from the HF card; the card's statement that
images are stored as URLs and that image_sha256 lets one check a download. Assumed: the hash is
of the downloaded bytes as served (the card's check hashes the raw response body).

Offline download recipe (run it where there is network access, with pillow and pyarrow):

  import hashlib, io, pathlib, urllib.request
  import pyarrow.parquet as pq
  from PIL import Image
  root = pathlib.Path("DATA/pixmo_count"); (root / "images").mkdir(parents=True, exist_ok=True)
  for part in sorted((root / "data").glob("train-*.parquet")):
    for row in pq.read_table(part, columns=["image_url", "image_sha256"]).to_pylist():
      sha = row["image_sha256"]
      if any((root / "images").glob(sha + ".*")):
        continue  # already there (URLs repeat)
      try:
        data = urllib.request.urlopen(row["image_url"], timeout=30).read()
        ext = Image.open(io.BytesIO(data)).format.lower()
      except Exception:
        continue  # dead link or not an image: the loader reports the row as bad
      if hashlib.sha256(data).hexdigest() == sha:  # else the page changed since the release
        (root / "images" / f"{sha}.{ext}").write_bytes(data)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from evals.benchmarks.common import ItemError, is_missing, text
from evals.benchmarks.files import require_dir
from evals.benchmarks.images import checked_image
from rl.datasets.common import convert_rows, first_layout, number_example, numbered_rows

NAME = "pixmo_count"
HOW = ("Download data/train-00000-of-00001.parquet from "
       "https://huggingface.co/datasets/allenai/pixmo-count into --data-dir/pixmo_count/ and "
       "its images into pixmo_count/images/<image_sha256>.<ext> (recipe in "
       "rl/datasets/pixmo_count.py).")
QUESTION = "How many {label} are in the image?"


def layouts(split: str) -> tuple[tuple[str, ...], ...]:
  return ((f"data/{split}-*.parquet", f"{split}-*.parquet"), (f"{split}.jsonl",),
          (f"{split}.json",))


def load(root, split: str = "train", check_sha256: bool = True):
  """Examples of PixMo-Count split `split` under `root` (see the module docstring)."""
  root = require_dir(root, NAME, HOW)
  files = first_layout(root, layouts(split), NAME, HOW)  # eagerly: fail at load(), not later
  by_hash = HashIndex(root / "images")

  def convert(example_id: str, row: dict):
    label, count = text(row.get("label")), _count(row.get("count"))
    if not label:
      raise ItemError("no label")
    path = _image_path(row, root, by_hash)
    if not path.is_file():
      raise ItemError(f"missing image file {path}")
    raw = path.read_bytes()
    if check_sha256:
      _check_hash(path, raw, row.get("image_sha256"))
    return number_example(NAME, example_id, QUESTION.format(label=label), str(count),
                          [checked_image(raw, str(path))], "count")

  return convert_rows(NAME, numbered_rows(files, split), convert)


class HashIndex:
  """Files of the images folder by stem (the sha256), listed once, lazily."""

  def __init__(self, folder: Path):
    self.folder = folder
    self._by_stem: dict[str, Path | None] | None = None

  def find(self, sha: str) -> Path | None:
    if self._by_stem is None:
      self._by_stem = {}
      if self.folder.is_dir():
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
          stem = Path(entry.name).stem
          # None marks a hash present with two extensions: refuse to guess.
          self._by_stem[stem] = None if stem in self._by_stem else Path(entry.path)
    if sha in self._by_stem and self._by_stem[sha] is None:
      raise ItemError(f"several files named {sha}.* in {self.folder}")
    return self._by_stem.get(sha)


def _image_path(row: dict, root: Path, by_hash: HashIndex) -> Path:
  given = text(row.get("image_path"))
  if given:
    return root / given  # an absolute path stays absolute
  sha = text(row.get("image_sha256")).lower()
  if not sha:
    raise ItemError("no image_sha256 and no image_path")
  found = by_hash.find(sha)
  if found is None:
    raise ItemError(f"missing image file {by_hash.folder}/{sha}.* (download it first; url "
                    f"{text(row.get('image_url')) or '?'})")
  return found


def _check_hash(path: Path, raw: bytes, expected) -> None:
  if is_missing(expected):
    return
  got = hashlib.sha256(raw).hexdigest()
  if got != text(expected).lower():
    raise ItemError(f"image file {path} has sha256 {got[:12]}..., the row's image_sha256 is "
                    f"{text(expected)[:12]}... (re-download it, or pass check_sha256=False "
                    f"for re-encoded images)")


def _count(value) -> int:
  """The count as an int >= 0 (ints, integral floats, or digit strings)."""
  if isinstance(value, bool) or is_missing(value):
    raise ItemError(f"count {value!r} is not a whole number >= 0")
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if isinstance(value, str) and value.strip().isdigit():
    value = int(value.strip())
  if not isinstance(value, int) or value < 0:
    raise ItemError(f"count {value!r} is not a whole number >= 0")
  return value
