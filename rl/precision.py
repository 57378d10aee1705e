"""Mixed precision for training (rl.train, rl.sft): float32 master weights and optimizer state,
the model run in the compute dtype. In pure bfloat16 an AdamW step of lr 1e-6 is below the
resolution of ~98% of a model's weights, which then never change."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp


def in_compute_dtype(params: dict, dtype: str) -> dict:
  """`params` in the compute dtype. Inside a differentiated function the cast's transpose
  carries each (bf16) cotangent back to the master weight in its own (float32) dtype."""
  return jax.tree.map(lambda x: x.astype(dtype), params)


@functools.partial(jax.jit, static_argnums=1)
def cast(tree: dict, dtype: str) -> dict:
  """`tree` in `dtype` as new arrays (copied where a leaf already is in it: the masters are
  donated to each update, and a copy must not share their buffers)."""
  return jax.tree.map(lambda x: jnp.copy(x) if x.dtype == jnp.dtype(dtype) else x.astype(dtype),
                      tree)


@jax.jit
def bf16_stuck_share(params, lr):
  """Share of the weights that a step of `lr` (an AdamW step moves a weight by about lr) cannot
  change in bfloat16: below half its spacing, 2^(e - 9) for |w| = m 2^e, m in [0.5, 1)."""
  leaves = jax.tree.leaves(params)
  def stuck(x):
    x = x.astype(jnp.float32)
    half_spacing = jnp.exp2((jnp.frexp(x)[1] - 9).astype(jnp.float32))
    return jnp.sum((x != 0) & (lr < half_spacing))  # (a zero's neighbours are subnormal)

  return sum(stuck(x) for x in leaves) / sum(x.size for x in leaves)


def warn_bf16_masters(config, params: dict) -> None:
  """param_dtype=bfloat16: say how many weights an update at `lr` cannot move."""
  if config.param_dtype != "bfloat16":
    return
  share = float(bf16_stuck_share(params, config.lr))
  if share > 0.01:
    warnings.warn(f"param_dtype=bfloat16 with lr={config.lr}: an AdamW step (about lr per "
                  f"weight) is below the bfloat16 resolution of {share:.0%} of the weights, "
                  f"which will never change; param_dtype=float32 keeps float32 master weights",
                  stacklevel=3)
