"""The parameter tree: one table of shapes and logical axis names, and random init from it.

Params are a plain nested dict of arrays. Layers are stacked on a leading `layers` axis so the
model scans over them. Logical axis names are what `sharding.py` maps onto mesh axes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import jax
import jax.numpy as jnp

from vlm_jax.config import ModelConfig, TextConfig, VisionConfig


@dataclasses.dataclass(frozen=True)
class Spec:
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  init: str = "normal"  # normal(0, 0.02) | zeros | ones


def _dense(d_in, d_out, axes, bias=True, layers=None):
  lead = () if layers is None else (layers,)
  lead_ax = () if layers is None else ("layers",)
  p = {"kernel": Spec(lead + (d_in, d_out), lead_ax + axes)}
  if bias:
    p["bias"] = Spec(lead + (d_out,), lead_ax + axes[1:], "zeros")
  return p


def _norm(dim, axis, layers=None):
  if layers is None:
    return {"scale": Spec((dim,), (axis,), "ones")}
  return {"scale": Spec((layers, dim), ("layers", axis), "ones")}


def vision_specs(c: VisionConfig) -> dict:
  d, f, n = c.hidden_size, c.intermediate_size, c.depth
  merged = d * c.merge_unit
  qkv = lambda: _dense(d, d, ("vision_embed", "vision_heads"), layers=n)
  return {
      "patch_embed": {"kernel": Spec((c.patch_dim, d), ("vision_patch", "vision_embed"))},
      "blocks": {
          "norm1": _norm(d, "vision_embed", n), "norm2": _norm(d, "vision_embed", n),
          "q": qkv(), "k": qkv(), "v": qkv(),
          "proj": _dense(d, d, ("vision_heads", "vision_embed"), layers=n),
          "mlp": {"gate": _dense(d, f, ("vision_embed", "vision_mlp"), layers=n),
                  "up": _dense(d, f, ("vision_embed", "vision_mlp"), layers=n),
                  "down": _dense(f, d, ("vision_mlp", "vision_embed"), layers=n)},
      },
      "merger": {"norm": _norm(d, "vision_embed"),
                 "fc1": _dense(merged, merged, ("vision_merged", "vision_mlp")),
                 "fc2": _dense(merged, c.out_hidden_size, ("vision_mlp", "embed"))},
  }


def text_specs(c: TextConfig) -> dict:
  d, f, l, nh, kh, h = (c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads,
                        c.num_kv_heads, c.head_dim)

  def proj(heads, axis):
    p = {"kernel": Spec((l, d, heads, h), ("layers", "embed", axis, "head_dim"))}
    if c.qkv_bias:
      p["bias"] = Spec((l, heads, h), ("layers", axis, "head_dim"), "zeros")
    return p

  layer = {
      "input_norm": _norm(d, "embed", l), "post_norm": _norm(d, "embed", l),
      "q": proj(nh, "heads"), "k": proj(kh, "kv_heads"), "v": proj(kh, "kv_heads"),
      "o": {"kernel": Spec((l, nh, h, d), ("layers", "heads", "head_dim", "embed")),
            **({"bias": Spec((l, d), ("layers", "embed"), "zeros")} if c.o_bias else {})},
      "mlp": {"gate": _dense(d, f, ("embed", "mlp"), bias=False, layers=l),
              "up": _dense(d, f, ("embed", "mlp"), bias=False, layers=l),
              "down": _dense(f, d, ("mlp", "embed"), bias=False, layers=l)},
  }
  if c.qk_norm:
    layer["q_norm"] = _norm(h, "head_dim", l)
    layer["k_norm"] = _norm(h, "head_dim", l)
  specs = {"embed": {"embedding": Spec((c.vocab_size, d), ("vocab", "embed"))},
           "layers": layer, "norm": _norm(d, "embed")}
  if not c.tie_word_embeddings:
    specs["lm_head"] = {"kernel": Spec((d, c.vocab_size), ("embed", "vocab"))}
  return specs


def param_specs(config: ModelConfig) -> dict:
  if config.vision is None:
    return {"text": text_specs(config.text)}
  return {"vision": vision_specs(config.vision), "text": text_specs(config.text)}


def is_spec(x: Any) -> bool:
  return isinstance(x, Spec)


def init_params(config: ModelConfig, key: jax.Array, dtype=jnp.float32, specs=None) -> dict:
  """Random params: normal(0, 0.02) kernels, zero biases, unit norm scales."""
  specs = param_specs(config) if specs is None else specs
  leaves, treedef = jax.tree.flatten(specs, is_leaf=is_spec)
  keys = jax.random.split(key, len(leaves))

  def make(spec: Spec, k):
    if spec.init == "ones":
      return jnp.ones(spec.shape, dtype)
    if spec.init == "zeros":
      return jnp.zeros(spec.shape, dtype)
    return (0.02 * jax.random.normal(k, spec.shape, jnp.float32)).astype(dtype)

  return jax.tree.unflatten(treedef, [make(s, k) for s, k in zip(leaves, keys)])


def count_params(tree) -> int:
  """Number of scalars in a tree of arrays, ShapeDtypeStructs or Specs."""
  leaves = jax.tree.leaves(tree, is_leaf=is_spec)
  return int(sum(int(np.prod(x.shape)) for x in leaves))


def check_params(params: dict, config: ModelConfig, source: str = "params") -> None:
  """Raise one error listing every missing, unexpected or mis-shaped entry of `params`."""
  want = dict(flatten_paths(param_specs(config), is_spec))
  have = dict(flatten_paths(params, lambda x: hasattr(x, "shape")))
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  shapes = sorted(f"{k}: {tuple(have[k].shape)} != {want[k].shape}" for k in set(want) & set(have)
                  if tuple(have[k].shape) != want[k].shape)
  if missing or unexpected or shapes:
    raise ValueError(f"{source} does not match the config:\n  missing: {missing}\n"
                     f"  unexpected: {unexpected}\n  wrong shape: {shapes}")


def flatten_paths(tree, is_leaf, prefix=""):
  if is_leaf(tree):
    yield prefix, tree
    return
  for k, v in tree.items():
    yield from flatten_paths(v, is_leaf, f"{prefix}/{k}" if prefix else k)
