"""Training-data loaders for GRPO (PAPER.md section 7): each reads one public release from a
local folder into `rl.examples.Example`s.

    from rl import datasets
    for x in datasets.load("sat2", data_dir="/data/train", limit=32_000):
      ...  # an Example, or a BadExample (source, id, reason) for a row that cannot be used

`load(name, data_dir, **kwargs)` reads `data_dir/<name>/`; nothing is ever downloaded. A missing
folder or annotation file raises FileNotFoundError naming the path and how to obtain the data;
a bad row (missing/unreadable image, no options, answer not among the options, non-numeric
count, ...) is yielded as a BadExample with the reason, never raised.

  name          release (where to get it)                          kind     layout: see module
  sat2          array/SAT (HF), split "train" (static + dynamic)   choice   sat2.py
  pixmo_count   allenai/pixmo-count (HF) + images you downloaded   number   pixmo_count.py
  geometry3k    lupantech/InterGPS or hiyouga/geometry3k (HF)      choice   geometry3k.py

Keyword arguments: `limit` (first N rows, good or bad, for every source), `split` (all; default
"train"), `shuffle`/`seed` (sat2: seeded per-row option shuffle, on by default), `check_sha256`
(pixmo_count, on by default). Shared rules are in `common.py` (on top of
`evals/benchmarks/common.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

from rl.datasets import geometry3k, pixmo_count, sat2
from rl.datasets.common import BadExample, split_bad
from rl.examples import Example

Loader = Callable[..., Iterator[Example | BadExample]]

SOURCES: dict[str, Loader] = {
    "sat2": sat2.load,
    "pixmo_count": pixmo_count.load,
    "geometry3k": geometry3k.load,
}

__all__ = ["SOURCES", "BadExample", "load", "split_bad"]


def load(name: str, data_dir, limit: int | None = None,
         **kwargs) -> Iterator[Example | BadExample]:
  """Examples of source `name` read from `data_dir/<name>/` (see the table above)."""
  if name not in SOURCES:
    raise ValueError(f"unknown training source {name!r}; known: {', '.join(SOURCES)}")
  if data_dir is None:
    raise ValueError(f"training source {name!r} reads local files: pass data_dir (the folder "
                     f"holding {name}/)")
  results = SOURCES[name](Path(data_dir) / name, **kwargs)
  return results if limit is None else itertools.islice(results, limit)
