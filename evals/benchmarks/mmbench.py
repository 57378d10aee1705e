"""MMBench (OpenCompass), read from VLMEvalKit's TSV release.

Obtain: the VLMEvalKit TSV, e.g. https://opencompass.openxlab.space/utils/VLMEval/MMBench_DEV_EN.tsv
(also MMBench_DEV_EN_V11.tsv; the TEST splits have no answers, so every row would be a BadItem).
Project page: https://github.com/open-compass/MMBench.

Layout of `--data-dir/mmbench/`:
    mmbench/MMBench_DEV_EN.tsv        (default; else MMBench_DEV_EN_V11.tsv, else the only *.tsv)
Pass `file="MMBench_DEV_EN_V11.tsv"` to pick another file when several are present.
The TSV also holds CircularEval copies (index k + j * 1e6: question k with its options rotated);
they are left out, one item per question, unless `circular=True` (see `vlmeval.load_table`).

Columns: index, question, hint, A-D (NA = absent option), answer (letter), category,
l2-category, split, source, image (base64; short values reference another row's image).
See `vlmeval.py` for how each is read; hint becomes "Hint: ...\\nQuestion: ...".
Item: id = index, category = category, meta = l2-category, split, source, hint.
Verified against: VLMEvalKit's reader (column names, NA handling, image references); the TSV
itself was not available offline, so the fixture mirrors that format.
"""

from __future__ import annotations

from evals.benchmarks import vlmeval
from evals.benchmarks.files import choose_file, require_dir

NAME = "mmbench"
HOW = ("Download MMBench_DEV_EN.tsv (VLMEvalKit, https://opencompass.openxlab.space/utils/"
       "VLMEval/MMBench_DEV_EN.tsv) into --data-dir/mmbench/.")
PREFERRED = ("MMBench_DEV_EN.tsv", "MMBench_DEV_EN_V11.tsv", "*.tsv")
META_KEYS = ("l2-category", "split", "source", "hint")


def load(root, file: str | None = None, circular: bool = False):
  """Items of the MMBench TSV under `root` (see the module docstring for the layout)."""
  root = require_dir(root, NAME, HOW)
  path = choose_file(root, PREFERRED, NAME, HOW, file)
  return vlmeval.load_table(NAME, path, root, META_KEYS, circular, HOW)
