"""Device meshes and the one logical-axis rules table.

Mesh specs:
  * "AxB" (e.g. "4x4"): axes (data, model) = data parallel x tensor parallel;
  * named, e.g. "data=2,fsdp=4,tensor=2": any of data (replicated params), fsdp (params and
    optimizer state sharded over their `embed` axis, batch sharded too) and tensor (heads, MLP
    and vocabulary split); `model` is accepted as a synonym of `tensor`. The device array's axes
    are in that order whatever the spec's (tensor innermost: on neighbouring devices).
The mesh spans all devices of all processes (`jax.devices()`), so the same spec works on one host
and under `jax.distributed` on a TPU pod or a multi-node GPU job.

Every parameter's logical axes (see `params.py`) map through `RULES` to mesh axes; activations
shard their batch axis over (data, fsdp). A mesh axis that does not divide the dimension it would
split raises an error naming the parameter and same-size meshes that work: a tensor axis must
divide the query heads (7B's 28 refuse tensor=8, 32B's 40 tensor=16), as in vLLM; keeping them
whole would replicate the whole attention block (10-12% of the parameters: 2.8x the per-device
weights of 32B on tensor=16 against the suggested mesh). The exceptions, `REPLICATE_IF_INDIVISIBLE`:
KV heads (Qwen2.5-VL-3B has 2, 7B has 4: a 3B on "4x4" or a 72B on tensor=16 keeps every KV head
on every tensor shard, as vLLM does when TP exceeds the KV heads, and as the KV cache already
did) and the vision tower's heads and MLP (3B/7B's vision MLP is 3420 wide, which 8 does not
divide; the tower is ~0.7B parameters at most). `replicated_dims` lists what a mesh replicates.
"""

from __future__ import annotations

import math
import re
import sys
import types

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


# logical axes kept whole (replicated over the mesh axis) where that axis does not divide them:
# small tensors, for which replication costs little memory and an error would turn away real
# checkpoints on ordinary meshes
REPLICATE_IF_INDIVISIBLE = frozenset({"kv_heads", "vision_heads", "vision_mlp"})


class MeshError(ValueError):
  """A mesh spec that cannot be built on these devices, or a dimension it cannot split."""


def parse_mesh_spec(spec: str) -> dict[str, int]:
  """"4x4" -> {data: 4, model: 4}; "fsdp=4,data=2" -> {data: 2, fsdp: 4} (axes in the
  order of `MESH_AXES`)."""
  spec = spec.strip().lower()
  if re.fullmatch(r"[0-9]+x[0-9]+", spec):
    data, model = (int(x) for x in spec.split("x"))
    if min(data, model) < 1:
      raise MeshError(f"bad mesh spec {spec!r}: axis sizes must be at least 1")
    return {"data": data, "model": model}
  axes = {}
  for part in spec.split(","):
    name, _, size = part.partition("=")
    name = name.strip()
    # ASCII digits only: str.isdigit() also takes "²", which int() then refuses
    if name not in MESH_AXES or not re.fullmatch(r"[0-9]+", size.strip()) or int(size) < 1:
      raise MeshError(f"bad mesh spec {spec!r}: use 'AxB' or 'data=2,fsdp=4,tensor=2' with axes "
                      f"from {MESH_AXES}")
    if name in axes:
      raise MeshError(f"bad mesh spec {spec!r}: axis {name!r} given twice")
    axes[name] = int(size)
  if "tensor" in axes and "model" in axes:
    raise MeshError(f"bad mesh spec {spec!r}: 'model' and 'tensor' are the same axis")
  # (data, fsdp, tensor) whatever order the spec names them in: the last axis of the device
  # array holds neighbouring devices (one host's GPUs; a TPU's nearest chips), where tensor
  # parallelism's per-layer all-reduces belong, and data's rare gradient all-reduce the farthest
  return {a: axes[a] for a in MESH_AXES if a in axes}


def parse_mesh(spec: str, devices=None) -> Mesh:
  """A `Mesh` over all devices (of all processes) from a spec string; see the module docstring."""
  axes = parse_mesh_spec(spec)
  devices = jax.devices() if devices is None else list(devices)
  need = math.prod(axes.values())
  if need != len(devices):
    hint = (f"; on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={need} (set before "
            "jax starts) makes that many devices" if devices and devices[0].platform == "cpu"
            else "")
    raise MeshError(f"mesh {spec!r} needs {need} devices but {len(devices)} are available "
                    f"({jax.process_count()} process(es)){hint}")
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


def _indivisible(path: str, shape, spec: P, mesh: Mesh, names=()) -> list[str]:
  """One line per dimension of `shape` that `spec` splits unevenly; `names`: its logical axes."""
  problems = []
  names = tuple(names) + (None,) * len(shape)
  for dim, (size, axes) in enumerate(zip(shape, tuple(spec) + (None,) * len(shape))):
    split = _axes_size(axes, mesh)
    if size % split:
      what = f"mesh axis {axes!r}" if isinstance(axes, str) else f"mesh axes {tuple(axes)}"
      problems.append(f"{path}: dimension {dim} ({names[dim]}: {size}) of shape {tuple(shape)} "
                      f"is not divisible by {what} (size {split})")
  return problems


def _axes_size(axes, mesh: Mesh) -> int:
  """How many ways a PartitionSpec entry (None, an axis name or a tuple of them) splits."""
  axes = (axes,) if isinstance(axes, str) else (axes or ())
  return math.prod(mesh.shape[a] for a in axes)


def _param_spec(spec: params_lib.Spec, mesh: Mesh) -> tuple[P, list[int]]:
  """(PartitionSpec, dims replicated by `REPLICATE_IF_INDIVISIBLE`) of one parameter."""
  pspec = list(logical_to_spec(spec.axes, mesh)) + [None] * (len(spec.shape) - len(spec.axes))
  kept_whole = [d for d, (name, size) in enumerate(zip(spec.axes, spec.shape))
                if name in REPLICATE_IF_INDIVISIBLE and pspec[d]
                and size % _axes_size(pspec[d], mesh)]
  for d in kept_whole:
    pspec[d] = None
  return P(*pspec), kept_whole


def param_shard_shape(spec: params_lib.Spec, sizes: dict[str, int]) -> tuple[int, ...]:
  """One device's shard of a parameter under `param_shardings` on a mesh of these axis sizes
  (a mesh not built yet); rounded up where an axis would not divide it."""
  mesh = types.SimpleNamespace(shape=dict(sizes))
  pspec = tuple(_param_spec(spec, mesh)[0]) + (None,) * len(spec.shape)
  return tuple(-(-size // _axes_size(axes, mesh)) for size, axes in zip(spec.shape, pspec))


def splits_every_param(config: ModelConfig, sizes: dict[str, int]) -> bool:
  """Whether a mesh of these axis sizes divides every parameter it splits."""
  return _splits_every(params_lib.param_specs(config), sizes)


def _splits_every(specs, sizes: dict[str, int]) -> bool:
  shape = types.SimpleNamespace(shape=sizes)
  return all(not _indivisible("", s.shape, _param_spec(s, shape)[0], shape)
             for s in jax.tree.leaves(specs, is_leaf=params_lib.is_spec))


def param_shardings(config: ModelConfig, mesh: Mesh) -> dict:
  """NamedSharding for every parameter, from the rules table (checked for divisibility; the
  `REPLICATE_IF_INDIVISIBLE` axes are replicated instead, see `replicated_dims`)."""
  specs = params_lib.param_specs(config)
  problems = []

  def one(path, spec: params_lib.Spec):
    pspec, _ = _param_spec(spec, mesh)
    problems.extend(_indivisible(jax.tree_util.keystr(path), spec.shape, pspec, mesh, spec.axes))
    return NamedSharding(mesh, pspec)

  out = jax.tree_util.tree_map_with_path(one, specs, is_leaf=params_lib.is_spec)
  if problems:
    hints = _suggest(specs, dict(mesh.shape))
    hint = f"; the mesh {hints[0]!r} can" if hints else ""
    if len(hints) > 1:
      hint += (f" (so can {hints[1]!r}: params replicated over data rather than split over "
               "fsdp, more memory per device but no per-layer gathers)")
    raise MeshError(f"mesh {dict(mesh.shape)} cannot split these parameters (a tensor axis must "
                    "divide the attention heads, the MLP width and the vocabulary; fsdp only the "
                    "model width)" + hint + ":\n  " + "\n  ".join(problems))
  return out


def _suggest(specs, sizes: dict[str, int]) -> list[str]:
  """Mesh specs of the same device count that split every parameter, the tensor axis shrunk to
  its largest working divisor: the rest of it moved to fsdp (per-device memory as asked), then
  to data (an "AxB" spec where one was given)."""
  tensor = next((a for a in _TENSOR if a in sizes), None)
  if tensor is None:
    return []
  data, fsdp, big = sizes.get("data", 1), sizes.get("fsdp", 1), sizes[tensor]
  for t in sorted((d for d in range(1, big) if big % d == 0), reverse=True):
    meshes = ({"data": data, "fsdp": fsdp * big // t, "tensor": t},
              {"data": data * big // t, "fsdp": fsdp, "tensor": t})
    found = [named for named in meshes if _splits_every(specs, named)]
    if found:
      return [f"{named['data']}x{t}" if set(sizes) == {"data", "model"} and named["fsdp"] == 1
              else ",".join(f"{a}={n}" for a, n in named.items() if n > 1 or a == "data")
              for named in found]
  return []


def replicated_dims(config: ModelConfig, mesh: Mesh) -> dict[str, str]:
  """{parameter path: logical axis} for the dimensions `param_shardings` keeps whole because
  the mesh axis their rule names does not divide them (`REPLICATE_IF_INDIVISIBLE`)."""
  out = {}

  def one(path, spec: params_lib.Spec):
    for d in _param_spec(spec, mesh)[1]:
      out[jax.tree_util.keystr(path)] = spec.axes[d]

  jax.tree_util.tree_map_with_path(one, params_lib.param_specs(config), is_leaf=params_lib.is_spec)
  return out


def report_replicated(config: ModelConfig, mesh: Mesh | None, file=None) -> None:
  """One line on stderr (process 0) naming what `param_shardings` keeps whole on this mesh,
  so a user sees why a device holds more than its share (the CLIs call it after loading)."""
  kept = replicated_dims(config, mesh) if mesh is not None else {}
  if kept and jax.process_index() == 0:
    axes = sorted(set(kept.values()))
    print(f"mesh {dict(mesh.shape)}: {', '.join(axes)} kept whole on every shard (the tensor "
          f"axis does not divide them; {len(kept)} parameters)", file=file or sys.stderr)


def host_device() -> jax.Device:
  """This process's first CPU device: where whole models go when no mesh splits them (checkpoint
  conversions, unsharded orbax restores). A 72B model in bfloat16 (~145 GB) fits no single
  accelerator, but a big host's memory. JAX has a CPU backend beside any accelerator's unless
  JAX_PLATFORMS leaves it out."""
  try:
    return jax.local_devices(backend="cpu")[0]
  except RuntimeError as e:
    raise RuntimeError(f"no CPU device to hold the whole model ({e}); add cpu to "
                       "JAX_PLATFORMS, e.g. JAX_PLATFORMS=cuda,cpu") from e


def head_sharding(mesh: Mesh | None) -> NamedSharding | None:
  """The LM head's [D, V] layout (the lm_head kernel, or the tied embedding transposed)."""
  return None if mesh is None else NamedSharding(mesh, logical_to_spec(("embed", "vocab"), mesh))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  return tuple(a for a in RULES["batch"] if a in mesh.shape)


def batch_size_multiple(mesh: Mesh) -> int:
  """Batches are padded to a multiple of this (the product of the batch mesh axes)."""
  return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def shard_params(params: dict, config: ModelConfig, mesh: Mesh) -> dict:
  """Move an in-memory param tree onto its shardings (use `load_hf(..., mesh=)` for big models).
  On several processes each holds the whole tree and gives its devices their slices: a
  process-local jax.Array is no source for `device_put` to a global sharding (with one device
  per process the result's shards could not be read)."""
  shardings = param_shardings(config, mesh)
  if jax.process_count() == 1:
    return jax.tree.map(jax.device_put, params, shardings)
  return jax.tree.map(lambda x, s: put_global(np.asarray(x), s), params, shardings)


def put_global(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array present in full on every process."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def input_shardings(inputs: dict, mesh: Mesh) -> dict:
  """Batch-leading inputs split over the batch axes; vision inputs split by batch shard
  (`buckets.pad_vision(shards=)`: a leading shard axis) the same way, else replicated."""
  batch = batch_axes(mesh) or None
  batch = batch[0] if batch and len(batch) == 1 else batch
  by_name = {"input_ids": P(batch), "token_mask": P(batch), "rope_deltas": P(batch),
             "positions": P(None, batch)}
  pixels = inputs.get("pixel_values")
  if pixels is not None and pixels.ndim == 3:  # [shards, P, patch_dim]
    by_name.update(pixel_values=P(batch), vision_layout=P(batch), vision_scatter=P(batch))
  return jax.tree_util.tree_map_with_path(
      lambda path, _: NamedSharding(mesh, by_name.get(path[0].key, P())), inputs)


def shard_inputs(inputs: dict, mesh: Mesh) -> dict:
  return jax.tree.map(put_global, inputs, input_shardings(inputs, mesh))


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
  """Activations [B, ...] (inside a jitted program) split over the batch axes, whole otherwise.

  An embedding lookup's rows come out laid out like the table's embed axis (over fsdp). With
  both data and fsdp axes, XLA cannot turn that into batch-split rows directly and gathers the
  whole [B, T, D] on every device ("Involuntary full rematerialization", once for the lookup and
  once for the vision tower's output written into it). Two steps it can: split the batch over
  data first (a local slice: the rows are replicated over data), then move fsdp from the
  feature axis to the batch axis (an all-to-all within each fsdp group)."""
  axes = batch_axes(mesh) if mesh is not None else ()
  if not axes:  # no mesh, or one with no batch axis: XLA's choice stands
    return x
  if len(axes) > 1 and x.ndim > 1 and x.shape[-1] % mesh.shape[axes[-1]] == 0:
    middle = (None,) * (x.ndim - 2)
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(axes[:-1], *middle, axes[-1])))
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(axes)))


def cache_spec(mesh: Mesh, shape, heads_axis: int) -> P:
  """A KV cache: batch over the batch axes (axis 0 of a per-layer cache, 1 of a stacked
  [L, B, S, K, H] one), kv heads (`heads_axis`) as the k/v weights split them (over tensor
  where it divides them, else whole: `REPLICATE_IF_INDIVISIBLE`)."""
  axes = [None] * len(shape)
  axes[len(shape) - 4], axes[heads_axis] = "batch", "kv_heads"
  return _param_spec(params_lib.Spec(tuple(shape), tuple(axes)), mesh)[0]


def to_host(x, chunk_bytes: int = 256 * 2**20) -> np.ndarray:
  """A numpy copy of a (possibly sharded, possibly multi-process) array, on every process.

  Across processes the gather replicates what it gathers on every device first, so a large
  array goes in slices of at most ~`chunk_bytes` along its first axis: a 72B model's 2.5 GB
  embedding would otherwise need 2.5 GB free on every accelerator while it is saved."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    gather = lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True))
    row_bytes = x.nbytes // max(x.shape[0], 1) if x.ndim else x.nbytes
    step = max(1, chunk_bytes // max(row_bytes, 1))
    if x.ndim == 0 or step >= x.shape[0]:
      return gather(x)
    return np.concatenate([gather(x[lo:lo + step]) for lo in range(0, x.shape[0], step)])
  return np.asarray(x)
