"""Device-memory accounting: the allocator's statistics; the bytes of a per-layer weight copy and
of a KV cache, for the sampler's choice of decode (`Sampler(unstack_layers="auto")`); the bytes
of the parameters' shards on a mesh, for `load_hf(mesh=)` to refuse one they do not fit."""

from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp

from vlm_jax import params as params_lib
from vlm_jax import sharding as sharding_lib
from vlm_jax.config import ModelConfig


def memory_stats(device) -> dict | None:
  """The device's allocator statistics (None where the backend has none, e.g. CPU)."""
  try:
    return device.memory_stats()
  except Exception:  # noqa: BLE001 - backends without the call raise various errors
    return None


def free_bytes(device) -> int | None:
  """The allocator's limit minus the bytes in use on `device`, None where unknown (CPU). In a
  multi-process run, the least over all processes (each asks about its own first device), so
  every process takes the same decision from it (they must run the same programs)."""
  stats = memory_stats(device)
  free = -1 if not stats or "bytes_limit" not in stats else (
      stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    every = np.asarray(multihost_utils.process_allgather(np.array([free], np.int64))).reshape(-1)
    free = -1 if (every < 0).any() else int(every.min())
  return None if free < 0 else free


def layer_copy_bytes(layers: dict) -> tuple[int, int | None]:
  """(bytes one copy of `layers` needs on the device holding their first shard, that device's
  free bytes or None when unknown; see `free_bytes`)."""
  leaves = jax.tree.leaves(layers)
  if not leaves or not all(isinstance(x, jax.Array) for x in leaves):  # host arrays: unknown
    return sum(np.asarray(x).nbytes for x in leaves), None
  need = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)
  return need, free_bytes(leaves[0].addressable_shards[0].device)


def param_bytes_per_device(config: ModelConfig, mesh_shape: dict[str, int], itemsize: int) -> int:
  """Bytes of every parameter's shard on one device of a mesh of these axis sizes (the shards
  `sharding.param_shardings` gives; sizes an axis does not divide are rounded up)."""
  specs = jax.tree.leaves(params_lib.param_specs(config), is_leaf=params_lib.is_spec)
  return itemsize * sum(math.prod(sharding_lib.param_shard_shape(s, mesh_shape)) for s in specs)


def check_params_fit(config: ModelConfig, mesh, itemsize: int) -> None:
  """Raises `sharding.MeshError` before anything is read when the parameters' shards alone
  would not fit in a device's free memory on `mesh`, naming a mesh of the same devices that
  splits them finer (fsdp over more of them) and fits; a no-op where free memory is unknown
  (CPU). An "AxB" mesh keeps a whole copy per `data` row: 72B on `4x4` needs 34 GiB a chip."""
  free = free_bytes(mesh.devices.flat[0])
  need = param_bytes_per_device(config, dict(mesh.shape), itemsize)
  if free is None or need <= free:
    return
  gib = lambda n: f"{n / 2**30:.1f} GiB"
  hint = ""
  for shape in _finer_meshes(mesh.size, dict(mesh.shape)):
    fits = param_bytes_per_device(config, shape, itemsize)
    if fits <= free and sharding_lib.splits_every_param(config, shape):
      hint = (f"; the mesh {','.join(f'{a}={n}' for a, n in shape.items() if n > 1)!r} "
              f"would hold {gib(fits)} a device")
      break
  raise sharding_lib.MeshError(
      f"the parameters need {gib(need)} per device on mesh {dict(mesh.shape)} "
      f"({8 * itemsize}-bit), more than the {gib(free)} free on {mesh.devices.flat[0]}: "
      f"nothing was read{hint}")


def _finer_meshes(devices: int, now: dict[str, int]):
  """Named meshes of `devices` devices that keep the tensor axis and give the rest to fsdp,
  then fsdp over all of them, then fsdp with a smaller tensor axis."""
  tensor = now.get("tensor", now.get("model", 1))
  for t in sorted({tensor, *(d for d in (1, 2, 4, 8) if devices % d == 0)},
                  key=lambda t: (t != tensor, t)):
    if devices % t == 0:
      yield {"fsdp": devices // t, "tensor": t}


def cache_bytes(config: ModelConfig, rows: int, cache_len: int, mesh, dtype) -> int:
  """Bytes of a decode KV cache on one device (k and v of every layer; split like
  `sharding.cache_spec` splits it)."""
  text_cfg = config.text
  shape = (rows, text_cfg.num_kv_heads, text_cfg.head_dim, cache_len)  # heads-major k
  if mesh is not None:
    spec = sharding_lib.cache_spec(mesh, shape, 1)
    shape = jax.sharding.NamedSharding(mesh, spec).shard_shape(shape)
  return 2 * text_cfg.num_layers * math.prod(shape) * jnp.dtype(dtype).itemsize
