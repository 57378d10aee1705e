"""3DSRBench (ccvl/3DSRBench on Hugging Face): 3D spatial reasoning, 4-option MCQs on COCO images.

Obtain: https://huggingface.co/datasets/ccvl/3DSRBench. Files (any one is enough):
  3dsrbench_v1_vlmevalkit.tsv           VLMEvalKit TSV with base64 `image` (default)
  3dsrbench_v1.csv                      same columns but `image_url` (COCO URLs) instead of image
  3dsrbench_v1-00000-of-00001.parquet   parquet variant of the csv
  3dsrbench_v1_vlmevalkit_circular.tsv  circular-evaluation copies (options rotated per copy);
                                        only used when asked for with file=..., and then
                                        its copies only with circular=True (vlmeval.load_table)

Layout of `--data-dir/threedsr_bench/`:
    threedsr_bench/3dsrbench_v1_vlmevalkit.tsv
  or
    threedsr_bench/3dsrbench_v1.csv  (or the parquet)
    threedsr_bench/images/...        the COCO images; an image_url
                                     http://images.cocodataset.org/val2017/X.jpg is found as
                                     images/val2017/X.jpg, or as a file named X.jpg anywhere
                                     under threedsr_bench/ (the name must be unique there)

Columns: index, question, A-D, answer, category (height / location / orientation /
multi_object ...), image or image_url, image_source. Item: id = index, meta = image_source,
image_url when present. Verified: file names and columns (VLMEvalKit's dataset table and public
loaders of the csv/parquet); the files themselves were not available offline.
"""

from __future__ import annotations

from evals.benchmarks import vlmeval
from evals.benchmarks.files import choose_file, require_dir

NAME = "threedsr_bench"
HOW = ("Download 3dsrbench_v1_vlmevalkit.tsv from https://huggingface.co/datasets/ccvl/3DSRBench "
       "into --data-dir/threedsr_bench/ (or 3dsrbench_v1.csv plus the COCO images under images/).")
PREFERRED = ("3dsrbench_v1_vlmevalkit.tsv", "3dsrbench_v1.csv", "3dsrbench_v1*.parquet")
META_KEYS = ("image_source", "image_url")


def load(root, file: str | None = None, circular: bool = False):
  """Items of the 3DSRBench table under `root` (see the module docstring for the layout)."""
  root = require_dir(root, NAME, HOW)
  path = choose_file(root, PREFERRED, NAME, HOW, file)
  return vlmeval.load_table(NAME, path, root, META_KEYS, circular)
