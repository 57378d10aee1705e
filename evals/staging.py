"""Benchmarks staged once as tensorflow_datasets array_record datasets, read back with grain,
sharded by process.

`stage(name, ...)` runs the benchmark's loader once, reports bad rows, keeps the first `limit`
good items (reading no further: bad rows after them go unreported) and writes them with
`tfds_builder.build_tfds` to
`cache_dir/<name>-<key>/<name>/1.0.0/` (key: a hash of the loader arguments, the data folder and
the path, size and modification time of every file in it, so a fixed image or annotation file
is staged anew), plus `bad_items.jsonl`. A benchmark with no usable item is not staged. It is
written to a temporary folder and renamed into place, so a killed run never leaves half a
dataset and concurrent processes on a shared disk cannot clash; later runs (a resume, another
variant list) reuse it. `Staged.shard(p, P)` is a grain MapDataset of process
p's contiguous block of items (`pipeline.shard_bounds`): each process reads only its records.

Without tensorflow_datasets or grain (the accelerator image has neither) the same items are kept
in memory and sharded with the same bounds, so results do not depend on which path ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from evals.benchmarks.pipeline import shard_bounds
from evals.schema import BadItem, Item

FORMAT = "tfds-2"  # bump when the staged layout or the key changes (invalidates old caches)


@dataclasses.dataclass
class Staged:
  name: str
  bad: list[BadItem]
  dataset_dir: Path | None = None   # the tfds dataset folder, or None: kept in memory
  items: list[Item] | None = None

  def shard(self, process_index: int = 0, process_count: int = 1):
    """This process's items (an iterable; a grain MapDataset when staged on disk)."""
    if self.dataset_dir is not None:
      from evals.benchmarks import tfds_builder
      return tfds_builder.open_tfds_items(self.dataset_dir, process_index=process_index,
                                          process_count=process_count)
    start, stop = shard_bounds(len(self.items), process_index, process_count)
    return self.items[start:stop]


def _have_tfds() -> bool:
  try:
    import grain  # noqa: F401
    import tensorflow_datasets  # noqa: F401
  except ImportError:
    return False
  return True


def cache_key(name: str, data_dir, loader_kwargs: dict, limit: int | None) -> str:
  spec = {"format": FORMAT, "name": name, "limit": limit, "kwargs": loader_kwargs,
          "data_dir": None if data_dir is None else os.path.abspath(data_dir),
          "files": None if data_dir is None else folder_fingerprint(Path(data_dir) / name)}
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def folder_fingerprint(folder: Path) -> str:
  """A hash of every file's relative path, size and modification time under `folder` (one stat
  per file: a changed, added or removed image or annotation file changes it)."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for f in sorted(files):
      path = os.path.join(root, f)
      try:
        st = os.stat(path)
      except OSError:  # a dangling link: the loader reports it
        continue
      h.update(f"{os.path.relpath(path, folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()


def _load(name: str, data_dir, loader_kwargs: dict, limit: int | None):
  from evals import benchmarks
  items, bad = [], []
  for entry in benchmarks.load(name, data_dir, **loader_kwargs):
    if isinstance(entry, BadItem):
      bad.append(entry)
    else:
      items.append(entry)
      if limit is not None and len(items) >= limit:
        break  # --limit: the rest of the release is not read (nor its bad rows reported)
  return items, bad


def _read_bad(path: Path) -> list[BadItem]:
  with open(path) as f:
    return [BadItem(**json.loads(line)) for line in f if line.strip()]


def stage(name: str, data_dir=None, loader_kwargs: dict | None = None, limit: int | None = None,
          cache_dir=None) -> Staged:
  """The benchmark `name` staged for sharded reading (see the module docstring).

  cache_dir None, or no tensorflow_datasets/grain: the items are loaded into memory instead.
  """
  loader_kwargs = dict(loader_kwargs or {})
  if cache_dir is None or not _have_tfds():
    items, bad = _load(name, data_dir, loader_kwargs, limit)
    return Staged(name, bad, items=items)
  final = Path(cache_dir) / f"{name}-{cache_key(name, data_dir, loader_kwargs, limit)}"
  dataset_dir = final / name / "1.0.0"
  if not (dataset_dir / "dataset_info.json").is_file():
    import tensorflow_datasets as tfds
    from evals.benchmarks import tfds_builder
    tfds.disable_progress_bar()
    items, bad = _load(name, data_dir, loader_kwargs, limit)
    if not items:  # nothing to stage (tfds refuses an empty split); the bad rows are reported
      return Staged(name, bad, items=[])
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
    try:
      tfds_builder.build_tfds(items, tmp, name=name)
      with open(tmp / "bad_items.jsonl", "w") as f:
        for b in bad:
          f.write(json.dumps(dataclasses.asdict(b)) + "\n")
      try:
        os.rename(tmp, final)
      except OSError:  # another process staged it first: keep theirs (same content)
        if not (dataset_dir / "dataset_info.json").is_file():
          raise
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    print(f"staged {name}: {len(items)} items, {len(bad)} bad -> {final}", file=sys.stderr)
  return Staged(name, _read_bad(final / "bad_items.jsonl"), dataset_dir=dataset_dir)
