"""Benchmark loaders: each reads one public release from a local folder into `evals.schema.Item`s.

    from evals import benchmarks
    for x in benchmarks.load("cv_bench", data_dir="/data/benchmarks"):
      ...  # an Item, or a BadItem (benchmark, id, reason) for a row that cannot be used

`load(name, data_dir, **kwargs)` reads `data_dir/<name>/`; nothing is ever downloaded. A missing
folder or annotation file raises FileNotFoundError naming the path and how to obtain the data;
a bad row (missing/unreadable image, undecodable base64, no options, answer outside the options,
...) is yielded as a BadItem with the reason, never raised. Shared rules for options, answers and
seeded shuffles are in `common.py`.

  name                 release (where to get it)                       folder layout: see module
  threedsr_bench       ccvl/3DSRBench (HF)                              threedsr_bench.py
  cv_bench             nyu-visionx/CV-Bench (HF)                        cv_bench.py
  spatial_mm_obj       github.com/FatemehShiri/Spatial-MM               spatial_mm.py
  spatial_mm_multihop  github.com/FatemehShiri/Spatial-MM               spatial_mm.py
  whatsup              github.com/amitakamath/whatsup_vlms              whatsup.py
  vstar_bench          craigwu/vstar_bench (HF)                         vstar_bench.py
  mme_realworld_lite   yifanzhang114/MME-RealWorld-Lite (HF)            mme_realworld_lite.py
  mmbench              VLMEvalKit MMBench_DEV_EN.tsv                    mmbench.py
  synthetic            generated here (no files; kwargs n, seed, image_size)  synthetic.py

Each loader is `loader(root, **kwargs)` where root is the benchmark's own folder (None for
synthetic). The array_record / grain pipeline is in `pipeline.py` (and `tfds_builder.py`); those
import grain / array_record / tensorflow_datasets lazily, so this package imports without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from evals.benchmarks import (cv_bench, mmbench, mme_realworld_lite, spatial_mm, synthetic,
                              threedsr_bench, vstar_bench, whatsup)
from evals.schema import BadItem, Item

Loader = Callable[..., Iterator[Item | BadItem]]

BENCHMARKS: dict[str, Loader] = {
    "threedsr_bench": threedsr_bench.load,
    "cv_bench": cv_bench.load,
    "spatial_mm_obj": spatial_mm.load_obj,
    "spatial_mm_multihop": spatial_mm.load_multihop,
    "whatsup": whatsup.load,
    "vstar_bench": vstar_bench.load,
    "mme_realworld_lite": mme_realworld_lite.load,
    "mmbench": mmbench.load,
    "synthetic": synthetic.load,
}

NEEDS_NO_FILES = frozenset({"synthetic"})


def list_benchmarks() -> list[str]:
  """Registered benchmark names, in the registry's order."""
  return list(BENCHMARKS)


def load(name: str, data_dir=None, **kwargs) -> Iterator[Item | BadItem]:
  """Items of benchmark `name` read from `data_dir/<name>/` (see the table above)."""
  if name not in BENCHMARKS:
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
  if name in NEEDS_NO_FILES:
    return BENCHMARKS[name](None, **kwargs)
  if data_dir is None:
    raise ValueError(f"benchmark {name!r} reads local files: pass data_dir (the folder holding "
                     f"{name}/)")
  return BENCHMARKS[name](Path(data_dir) / name, **kwargs)


def split_bad(results) -> tuple[list[Item], list[BadItem]]:
  """(items, bad items) of a loader's output, in order."""
  items, bad = [], []
  for x in results:
    (bad if isinstance(x, BadItem) else items).append(x)
  return items, bad
