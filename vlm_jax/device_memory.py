"""Device-memory accounting for the sampler's choice of decode (`Sampler(unstack_layers=
"auto")`): the allocator's statistics, the bytes of a per-layer weight copy and of a KV cache."""

from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp

from vlm_jax import sharding as sharding_lib
from vlm_jax.config import ModelConfig


def memory_stats(device) -> dict | None:
  """The device's allocator statistics (None where the backend has none, e.g. CPU)."""
  try:
    return device.memory_stats()
  except Exception:  # noqa: BLE001 - backends without the call raise various errors
    return None


def layer_copy_bytes(layers: dict) -> tuple[int, int | None]:
  """(bytes one copy of `layers` needs on the device holding their first shard, that device's
  free bytes or None when unknown). In a multi-process run the free bytes are the least over
  all processes, so every process resolves `unstack_layers="auto"` the same way (they must run
  the same programs)."""
  leaves = jax.tree.leaves(layers)
  if not leaves or not all(isinstance(x, jax.Array) for x in leaves):  # host arrays: unknown
    return sum(np.asarray(x).nbytes for x in leaves), None
  need = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)
  stats = memory_stats(leaves[0].addressable_shards[0].device)
  free = -1 if not stats or "bytes_limit" not in stats else (
      stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    every = np.asarray(multihost_utils.process_allgather(np.array([free], np.int64))).reshape(-1)
    free = -1 if (every < 0).any() else int(every.min())
  return need, None if free < 0 else free


def cache_bytes(config: ModelConfig, rows: int, cache_len: int, mesh, dtype) -> int:
  """Bytes of a decode KV cache on one device (k and v of every layer; split like
  `sharding.cache_spec` splits it)."""
  text_cfg = config.text
  shape = (rows, text_cfg.num_kv_heads, text_cfg.head_dim, cache_len)  # heads-major k
  if mesh is not None:
    spec = sharding_lib.cache_spec(mesh, shape, 1)
    shape = jax.sharding.NamedSharding(mesh, spec).shard_shape(shape)
  return 2 * text_cfg.num_layers * math.prod(shape) * jnp.dtype(dtype).itemsize
