"""Training prompts: a deterministic grain pipeline, sharded by process, with a checkpointed state.

Order: step s takes positions [s*P, (s+1)*P) of an endless stream in which epoch e is a
permutation of the N examples drawn from numpy's default_rng([seed, e]) (`step_indices`), so the
prompts of any step are a pure function of (seed, N, P, s).

Storage: the examples are staged once as an array_record file,
`cache_dir/train-<key>[-<files>].array_record` (`staged_name`; key: a hash of the data sources,
data folder, synthetic size and seed; files: a hash of the paths, sizes and modification times
of the sources' files, so data changed in place is staged again), written to a temporary name
and renamed, so a killed run never leaves half a file; one record per example (JSON header +
encoded images, `encode_example`). A rerun or resume reuses it without parsing the release files
again. `PromptStream` reads it through `grain.MapDataset.source(ArrayRecordDataSource)` by random
access, and process p of P reads only positions [p*P_step//P, (p+1)*P_step//P) of each step's
prompts; the examples are then gathered in process order (`vlm_jax.multihost`) so every process
runs the same global rollout batch.

State: `get_state()` is {"step", "seed", "num_items", "prompts_per_step", "fingerprint"}; it is
saved in every checkpoint (rl/checkpoints.py) and `set_state` refuses a state made for other data.
Without grain or array_record (the accelerator image has neither) the examples stay in memory and
the order, sharding and state are the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile

import numpy as np

from evals.benchmarks.pipeline import shard_bounds
from rl.examples import Example

FORMAT = "train-records-1"
_HEAD = struct.Struct(">I")


def encode_example(e: Example) -> bytes:
  header = {"id": e.id, "source": e.source, "question": e.question, "answer": e.answer,
            "options": list(e.options), "kind": e.kind, "category": e.category,
            "meta": [list(kv) for kv in e.meta], "image_sizes": [len(b) for b in e.images]}
  head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
  return _HEAD.pack(len(head)) + head + b"".join(e.images)


def decode_example(record: bytes) -> Example:
  (n,) = _HEAD.unpack_from(record)
  header = json.loads(bytes(record[_HEAD.size:_HEAD.size + n]).decode("utf-8"))
  images, offset = [], _HEAD.size + n
  for size in header.pop("image_sizes"):
    images.append(bytes(record[offset:offset + size]))
    offset += size
  if offset != len(record):
    raise ValueError(f"training record {header.get('source')}/{header.get('id')}: image sizes add "
                     f"up to {offset} bytes, the record has {len(record)}")
  return Example(options=tuple(header.pop("options")), images=tuple(images),
                 meta=tuple(tuple(kv) for kv in header.pop("meta")), **header)


def step_indices(step: int, prompts_per_step: int, num_items: int, seed: int) -> np.ndarray:
  """Global example indices of step `step` (see the module docstring)."""
  positions = np.arange(step * prompts_per_step, (step + 1) * prompts_per_step)
  epochs, pos = np.divmod(positions, num_items)
  out = np.empty(prompts_per_step, np.int64)
  for epoch in np.unique(epochs):  # one permutation per epoch the step touches, not per prompt
    here = epochs == epoch
    out[here] = np.random.default_rng([seed, int(epoch)]).permutation(num_items)[pos[here]]
  return out


def cache_key(config) -> str:
  spec = {"format": FORMAT, "data": config.data, "synthetic_n": config.synthetic_n,
          "seed": config.seed,
          "data_dir": os.path.abspath(config.data_dir) if config.data_dir else None}
  if config.data_limits:  # (absent otherwise: the keys of runs made before it stay the same)
    spec["data_limits"] = config.data_limits
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def staged_name(config) -> str:
  """The staged file's name: `cache_key` (also the checkpointed data state's "fingerprint")
  and, with a data folder, a hash of each source's files there (`folder_fingerprint`, as the
  eval cache does), so a source changed in place is staged again instead of read stale. Not in
  the fingerprint: data copied to a new machine (new modification times) still resumes."""
  name = f"train-{cache_key(config)}"
  if config.data_dir:
    from pathlib import Path
    from evals.staging import folder_fingerprint
    stamps = [folder_fingerprint(Path(config.data_dir) / source)
              for source in config.data.split(",")]
    name += "-" + hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:12]
  return name + ".array_record"


def _have_grain() -> bool:
  try:
    import grain  # noqa: F401
    from array_record.python import array_record_module  # noqa: F401
  except ImportError:
    return False
  return True


def stage(load, path: str) -> str:
  """Write the examples `load()` returns to the array_record file `path` unless it exists."""
  if os.path.exists(path):
    return path
  from array_record.python.array_record_module import ArrayRecordWriter
  examples = load()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".staging.", dir=os.path.dirname(os.path.abspath(path)))
  os.close(fd)
  try:
    writer = ArrayRecordWriter(tmp, "group_size:1")
    for e in examples:
      writer.write(encode_example(e))
    writer.close()
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  print(f"staged {len(examples)} training examples -> {path}", file=sys.stderr)
  return path


class PromptStream:
  """Per-step training prompts (see the module docstring).

  load: () -> list[Example] (called only when nothing is staged yet); cache_dir None: in memory.
  """

  def __init__(self, load, config, cache_dir: str | None = None, process_index: int | None = None,
               process_count: int | None = None):
    import jax
    self.prompts_per_step, self.seed = config.prompts_per_step, config.seed
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if cache_dir is not None and _have_grain():
      import grain
      path = stage(load, os.path.join(cache_dir, staged_name(config)))
      source = grain.sources.ArrayRecordDataSource(path)
      self.source = grain.MapDataset.source(source).map(decode_example)
    else:
      self.source = load()
    self.fingerprint = cache_key(config)
    self.num_items = len(self.source)
    if self.num_items < self.prompts_per_step:
      raise ValueError(f"{self.num_items} training items < prompts_per_step="
                       f"{self.prompts_per_step}")
    self.step = 0

  def local_examples(self, step: int) -> list[Example]:
    """This process's share of step `step`'s prompts (the only records it reads)."""
    indices = step_indices(step, self.prompts_per_step, self.num_items, self.seed)
    lo, hi = shard_bounds(len(indices), self.process_index, self.process_count)
    return [self.source[int(i)] for i in indices[lo:hi]]

  def batch(self, step: int) -> list[Example]:
    """Step `step`'s global prompt list, identical on every process."""
    from vlm_jax import multihost
    local = self.local_examples(step)
    if self.process_count == 1:
      return local
    blobs = multihost.gather_bytes(multihost.pack([encode_example(e) for e in local]))
    return [decode_example(r) for blob in blobs for r in multihost.unpack(blob)]

  def __next__(self) -> list[Example]:
    out = self.batch(self.step)
    self.step += 1
    return out

  def __iter__(self):
    return self

  def get_state(self) -> dict:
    return {"step": self.step, "seed": self.seed, "num_items": self.num_items,
            "prompts_per_step": self.prompts_per_step, "fingerprint": self.fingerprint}

  def set_state(self, state: dict) -> None:
    mine = self.get_state()
    for key in ("seed", "num_items", "prompts_per_step", "fingerprint"):
      if state.get(key) != mine[key]:
        raise ValueError(f"checkpointed data state has {key}={state.get(key)!r} but this run has "
                         f"{mine[key]!r}: resume with the data and config the run started with")
    self.step = int(state["step"])
