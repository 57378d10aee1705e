"""3DSRBench (ccvl/3DSRBench on Hugging Face): 3D spatial reasoning, 4-option MCQs on COCO images.

Obtain: https://huggingface.co/datasets/ccvl/3DSRBench. Files (any one is enough):
  3dsrbench_v1_vlmevalkit.tsv           VLMEvalKit TSV with base64 `image` (default): every
                                        question and its flipped twin (qid "Q" and "Q-flip")
  3dsrbench_v1-00000-of-00001.parquet   the TSV's columns with `image_url` (COCO URLs) instead
                                        of image
  3dsrbench_v1_vlmevalkit_circular.tsv  the TSV plus circular copies (options rotated; qid
                                        "Q-1", "Q-flip-2", ...; what VLMEvalKit's "3DSRBench"
                                        downloads); read when neither of the above is there,
                                        or for circular=True; its copies run only with
                                        circular=True (vlmeval.load_table)
  3dsrbench_v1.csv                      read last, with the TSV's columns; a csv without
                                        question / A / B / answer columns (raw annotations) is
                                        refused, naming its columns

Layout of `--data-dir/threedsr_bench/`:
    threedsr_bench/3dsrbench_v1_vlmevalkit.tsv
  or
    threedsr_bench/3dsrbench_v1-00000-of-00001.parquet  (or the csv)
    threedsr_bench/images/...        the COCO images; an image_url
                                     http://images.cocodataset.org/train2017/X.jpg is found as
                                     images/train2017/X.jpg, or as a file named X.jpg anywhere
                                     under threedsr_bench/ (the name must be unique there)

Columns: index, qid, question, A-D, answer, category (height_higher, location_above,
orientation_viewpoint, multi_object_facing, ...), image or image_url, image_source. Item: id =
index (the parquet's index is the qid itself), meta = qid (group flip twins and copies by it),
image_source, image_url when present.
Verified: file names and columns (VLMEvalKit's dataset table and public loaders of the
csv/parquet), the qid convention (lmms-eval's 3dsrbench task groups results by it); the files
themselves were not available offline. The csv is described upstream only as "raw
annotations" (one public converter reads it as qid, image URL, qtype, relation, subject,
objects and a text answer, with no question or options): it is read last, and refused when it
lacks the TSV's question and option columns.
"""

from __future__ import annotations

from evals.benchmarks import vlmeval
from evals.benchmarks.files import choose_file, require_dir

NAME = "threedsr_bench"
HOW = ("Download 3dsrbench_v1_vlmevalkit.tsv from https://huggingface.co/datasets/ccvl/3DSRBench "
       "into --data-dir/threedsr_bench/ (or 3dsrbench_v1-00000-of-00001.parquet plus the COCO "
       "images under images/).")
CIRCULAR_FILE = "3dsrbench_v1_vlmevalkit_circular.tsv"
# the circular TSV holds every question too (its copies are left out unless asked for); the
# csv, described upstream only as raw annotations, comes last
PREFERRED = ("3dsrbench_v1_vlmevalkit.tsv", "3dsrbench_v1*.parquet", CIRCULAR_FILE,
             "3dsrbench_v1.csv")
META_KEYS = ("qid", "image_source", "image_url")


def load(root, file: str | None = None, circular: bool = False):
  """Items of the 3DSRBench table under `root` (see the module docstring for the layout); with
  `circular` and no `file`, the circular TSV when it is there (it holds the copies)."""
  root = require_dir(root, NAME, HOW)
  if circular and file is None:
    if not (root / CIRCULAR_FILE).is_file():  # the plain files hold no copies: nothing to score
      raise FileNotFoundError(f"{NAME}: circular evaluation reads {CIRCULAR_FILE}, which is not "
                              f"in {root}; download it from "
                              "https://huggingface.co/datasets/ccvl/3DSRBench")
    file = CIRCULAR_FILE
  path = choose_file(root, PREFERRED, NAME, HOW, file)
  return vlmeval.load_table(NAME, path, root, META_KEYS, circular, HOW)
