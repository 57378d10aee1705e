"""Device meshes and the one logical-axis rules table.

Mesh specs:
  * "AxB" (e.g. "4x4"): axes (data, model) = data parallel x tensor parallel;
  * named, e.g. "data=2,fsdp=4,tensor=2": any of data (replicated params), fsdp (params and
    optimizer state sharded over their `embed` axis, batch sharded too) and tensor (heads, MLP
    and vocabulary split); `model` is accepted as a synonym of `tensor`.
The mesh spans all devices of all processes (`jax.devices()`), so the same spec works on one host
and under `jax.distributed` on a TPU pod or a multi-node GPU job.

Every parameter's logical axes (see `params.py`) map through `RULES` to mesh axes; activations
shard their batch axis over (data, fsdp). A mesh axis that does not divide the dimension it would
split raises an error naming the parameter.
"""

from __future__ import annotations

import math
import re

import numpy as np
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from vlm_jax import params as params_lib
from vlm_jax.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor", "model")
_TENSOR = ("tensor", "model")

# logical axis -> mesh axes it may be split over (those present in the mesh are used, in order).
RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp"),
    "layers": (),
    "embed": ("fsdp",),
    "vocab": _TENSOR,
    "heads": _TENSOR,
    "kv_heads": _TENSOR,
    "head_dim": (),
    "mlp": _TENSOR,
    "vision_patch": (),
    "vision_embed": ("fsdp",),
    "vision_heads": _TENSOR,
    "vision_mlp": _TENSOR,
    "vision_merged": ("fsdp",),
}


class MeshError(ValueError):
  """A mesh spec that cannot be built on these devices, or a dimension it cannot split."""


def parse_mesh_spec(spec: str) -> dict[str, int]:
  """"4x4" -> {data: 4, model: 4}; "data=2,fsdp=4" -> {data: 2, fsdp: 4}."""
  spec = spec.strip().lower()
  if re.fullmatch(r"\d+x\d+", spec):
    data, model = (int(x) for x in spec.split("x"))
    return {"data": data, "model": model}
  axes = {}
  for part in spec.split(","):
    name, _, size = part.partition("=")
    name = name.strip()
    if name not in MESH_AXES or not size.strip().isdigit() or int(size) < 1:
      raise MeshError(f"bad mesh spec {spec!r}: use 'AxB' or 'data=2,fsdp=4,tensor=2' with axes "
                      f"from {MESH_AXES}")
    if name in axes:
      raise MeshError(f"bad mesh spec {spec!r}: axis {name!r} given twice")
    axes[name] = int(size)
  if "tensor" in axes and "model" in axes:
    raise MeshError(f"bad mesh spec {spec!r}: 'model' and 'tensor' are the same axis")
  return axes


def parse_mesh(spec: str, devices=None) -> Mesh:
  """A `Mesh` over all devices (of all processes) from a spec string; see the module docstring."""
  axes = parse_mesh_spec(spec)
  devices = jax.devices() if devices is None else list(devices)
  need = math.prod(axes.values())
  if need != len(devices):
    raise MeshError(f"mesh {spec!r} needs {need} devices but {len(devices)} are available "
                    f"({jax.process_count()} process(es))")
  return jax.make_mesh(tuple(axes.values()), tuple(axes), devices=devices,
                       axis_types=(AxisType.Auto,) * len(axes))


def logical_to_spec(axes: tuple[str | None, ...], mesh: Mesh) -> P:
  """PartitionSpec for logical axis names; each mesh axis is used at most once."""
  used, out = set(), []
  for name in axes:
    mesh_axes = tuple(a for a in RULES.get(name, ()) if a in mesh.shape and a not in used)
    used.update(mesh_axes)
    out.append(mesh_axes[0] if len(mesh_axes) == 1 else (mesh_axes or None))
  return P(*out)


def _indivisible(path: str, shape, spec: P, mesh: Mesh) -> list[str]:
  problems = []
  for dim, (size, axes) in enumerate(zip(shape, tuple(spec) + (None,) * len(shape))):
    axes = (axes,) if isinstance(axes, str) else (axes or ())
    split = math.prod(mesh.shape[a] for a in axes)
    if size % split:
      problems.append(f"{path}: dimension {dim} of shape {tuple(shape)} is not divisible by "
                      f"mesh axes {axes} (size {split})")
  return problems


def param_shardings(config: ModelConfig, mesh: Mesh) -> dict:
  """NamedSharding for every parameter, from the rules table (checked for divisibility)."""
  specs = params_lib.param_specs(config)
  problems = []

  def one(path, spec: params_lib.Spec):
    pspec = logical_to_spec(spec.axes, mesh)
    problems.extend(_indivisible(jax.tree_util.keystr(path), spec.shape, pspec, mesh))
    return NamedSharding(mesh, pspec)

  out = jax.tree_util.tree_map_with_path(one, specs, is_leaf=params_lib.is_spec)
  if problems:
    raise MeshError(f"mesh {dict(mesh.shape)} cannot split these parameters; choose a mesh whose "
                    "axes divide them:\n  " + "\n  ".join(problems))
  return out


def head_sharding(mesh: Mesh | None) -> NamedSharding | None:
  """The LM head's [D, V] layout (the lm_head kernel, or the tied embedding transposed)."""
  return None if mesh is None else NamedSharding(mesh, logical_to_spec(("embed", "vocab"), mesh))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  return tuple(a for a in RULES["batch"] if a in mesh.shape)


def batch_size_multiple(mesh: Mesh) -> int:
  """Batches are padded to a multiple of this (the product of the batch mesh axes)."""
  return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def shard_params(params: dict, config: ModelConfig, mesh: Mesh) -> dict:
  """Move an in-memory param tree onto its shardings (use `load_hf(..., mesh=)` for big models)."""
  return jax.tree.map(jax.device_put, params, param_shardings(config, mesh))


def put_global(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array present in full on every process."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def input_shardings(inputs: dict, mesh: Mesh) -> dict:
  """Batch-leading inputs split over the batch axes; vision inputs replicated."""
  batch = batch_axes(mesh) or None
  batch = batch[0] if batch and len(batch) == 1 else batch
  by_name = {"input_ids": P(batch), "token_mask": P(batch), "rope_deltas": P(batch),
             "positions": P(None, batch)}
  return jax.tree_util.tree_map_with_path(
      lambda path, _: NamedSharding(mesh, by_name.get(path[0].key, P())), inputs)


def shard_inputs(inputs: dict, mesh: Mesh) -> dict:
  return jax.tree.map(put_global, inputs, input_shardings(inputs, mesh))


def cache_spec(mesh: Mesh, shape, heads_axis: int) -> P:
  """A KV cache: batch over the batch axes (axis 0 of a per-layer cache, 1 of a stacked
  [L, B, S, K, H] one), kv heads (`heads_axis`) over tensor when it divides."""
  batch = batch_axes(mesh) or None
  batch = batch[0] if batch and len(batch) == 1 else batch
  tensor = next((a for a in _TENSOR if a in mesh.shape), None)
  spec = [None] * len(shape)
  spec[len(shape) - 4] = batch
  if tensor and shape[heads_axis] % mesh.shape[tensor] == 0:
    spec[heads_axis] = tensor
  return P(*spec)


def to_host(x) -> np.ndarray:
  """A numpy copy of a (possibly sharded, possibly multi-process) array, on every process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
