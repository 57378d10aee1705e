"""What'sUp (amitakamath/whatsup_vlms): controlled photos (subset A) and CLEVR renders
(subset B) of two objects, each with 4 captions differing only in the spatial preposition.

Obtain: https://github.com/amitakamath/whatsup_vlms (README links the data on Google Drive):
controlled_images_dataset.json + controlled_images.tar.gz, controlled_clevr_dataset.json +
controlled_clevr.tar.gz. Layout of `--data-dir/whatsup/` (either subset may be absent):
    whatsup/controlled_images_dataset.json
    whatsup/controlled_images/<image files>        (the extracted tarball)
    whatsup/controlled_clevr_dataset.json
    whatsup/controlled_clevr/<image files>
JSON: a list of {"image_path": "data/controlled_images/mug_on_table.jpeg",
"caption_options": [4 captions]}; the FIRST caption is the correct one (upstream convention).
The "data/" prefix is the upstream repository's layout: a path is tried relative to whatsup/
as given, then with leading folders dropped, then by file name anywhere under whatsup/.
The COCO-/GQA-spatial subsets of the paper need the COCO/GQA image corpora and are not loaded.
Verified: file names, fields and the first-caption convention (upstream loader and README).

Each entry becomes "Which caption correctly describes the image?" with the captions as options,
shuffled per item with a seeded RNG (key = item id, `seed`) since the key is always first
upstream; meta "source_answer" is "A". Item: id = "{subset}/{image stem}", category = subset
("controlled_images" or "controlled_clevr").
"""

from __future__ import annotations

from pathlib import Path

from evals.benchmarks.common import (ItemError, convert_rows, make_item, row_id,
                                     shuffle_options, text)
from evals.benchmarks.files import read_json, require_dir
from evals.benchmarks.images import ImageIndex, read_image_file

NAME = "whatsup"
HOW = ("Get controlled_images_dataset.json / controlled_clevr_dataset.json and the extracted "
       "controlled_images/ and controlled_clevr/ folders (https://github.com/amitakamath/"
       "whatsup_vlms) into --data-dir/whatsup/.")
SUBSETS = ("controlled_images", "controlled_clevr")
QUESTION = "Which caption correctly describes the image?"


def load(root, subsets=SUBSETS, shuffle: bool = True, seed: int = 0):
  """Items of What'sUp under `root` (see the module docstring for the layout)."""
  root = require_dir(root, NAME, HOW)
  files = [(s, root / f"{s}_dataset.json") for s in subsets]
  files = [(s, p) for s, p in files if p.is_file()]
  if not files:
    raise FileNotFoundError(f"{NAME}: none of {[f'{s}_dataset.json' for s in subsets]} under "
                            f"{root}. {HOW}")
  index = ImageIndex(root)

  def rows():
    for subset, path in files:
      for i, entry in enumerate(read_json(path)):
        stem = row_id(entry, lambda e: Path(text(e.get("image_path"))).stem, f"row{i}")
        yield f"{subset}/{stem}", (subset, entry)

  def convert(item_id: str, subset_entry):
    subset, entry = subset_entry
    ref = text(entry.get("image_path"))
    if not ref:
      raise ItemError("no image_path")
    captions = entry.get("caption_options") or []
    if not isinstance(captions, list):
      raise ItemError(f"caption_options is a {type(captions).__name__}, not a list")
    captions = [text(c) for c in captions]
    image = read_image_file(index.resolve(ref))
    options, answer = captions, "A"
    if shuffle and captions:
      options, answer = shuffle_options(captions, 0, item_id, seed)
    meta = [("image_path", ref), ("source_answer", "A")]
    return make_item(NAME, item_id, QUESTION, options, answer, [image], subset, meta)

  return convert_rows(NAME, rows(), convert)

