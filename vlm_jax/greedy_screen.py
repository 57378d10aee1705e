"""Greedy token choice over a float32 LM head, screened with a bfloat16 copy of the head.

A greedy decode step needs argmax_v h . W[:, v] over the whole vocabulary. The screen computes
s = bf16(h) . bf16(W) (exact products, float32 accumulation) and a rigorous bound B_v on
|s_v - z_v|, where z_v is the float32 logit. Only columns whose upper bound s_v + B_v reaches
max_u (s_u - B_u) can hold the maximum; those (a handful) are rescored in float32 and the first
index of their maximum is the token. When more than `CANDIDATES` columns (or `BLOCKS` blocks of
`BLOCK` columns) could hold it, or the row is not finite, the step falls back to the full
float32 head. So the token is the float32 argmax up to float32 summation order (the rescoring
sums in another order than the full matmul, as transformers' matmul does), at about the cost of
a bfloat16 head: a CPU decode step reads half the head's bytes.

The bound. With hb = bf16(h), hr = h - hb (exact), Wb, Wr likewise (|Wr| <= 2^-8 |W|), the
products hb Wb are exact in float32, so with gamma = K u / (1 - K u), u = 2^-24, K = D:
  |s_v - z_v| <= |hb . Wr_v| + |hr . W_v| + gamma (|h| . |W_v| + |hb| . |Wb_v|)
            <= ||hb|| ||Wr_v|| + ||hr|| ||W_v|| + gamma (||h|| ||W_v|| + ||hb|| ||Wb_v||)
(Cauchy-Schwarz; the column norms are computed once per head, `tables`). A 1% margin covers
the rounding of the norms themselves, 4 u |s| the rounding of s - B and s + B, and 1e-30
products flushed to zero. `tests/vlm_jax/test_greedy_screen.py` checks the
backend's bfloat16 dot against this bound in float64.

Meant for a true float32 matmul (CPU). Where float32 dots run at reduced precision by default
(TF32 on GPUs, bf16 passes on TPUs) the reference logits are themselves approximate, which is
why `Sampler(greedy_screen="auto")` uses it on CPU only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK = 128      # vocabulary block of the first selection level
BLOCKS = 16      # blocks kept per row
CANDIDATES = 16  # columns rescored in float32 per row
_U32 = 2.0 ** -24


def tables(w: jax.Array, rows: jax.Array | None = None) -> dict:
  """What `argmax` needs besides h, computed once per head (`Sampler` keeps them): the bfloat16
  head as [V, D] (XLA CPU's 8-row bfloat16 dot ran 2-13% faster against it than against
  [D, V]), three column norms, and the float32 head as [V, D] rows (rescoring gathers whole
  rows; gathering [D, V] columns was a cache miss per element, ~0.2 ms per CPU step).
  w: the float32 head [D, V]; rows: the same as [V, D] where it exists (a tied embedding),
  else a transposed copy is made."""
  wb = w.astype(jnp.bfloat16)
  col = lambda a: jnp.sqrt(jnp.sum(jnp.square(a.astype(jnp.float32)), 0))
  return {"w": w, "rows": w.T if rows is None else rows, "wb": wb.T,
          "wr_norm": col(w - wb.astype(jnp.float32)), "w_norm": col(w), "wb_norm": col(wb)}


def ban_mask(vocab: int, banned: jax.Array) -> jax.Array:
  """[V] float32: 0, and -inf at the `banned` ids (ids out of range are ignored)."""
  return jnp.zeros(vocab, jnp.float32).at[banned].set(-jnp.inf, mode="drop")


def _full(h: jax.Array, t: dict, mask: jax.Array) -> jax.Array:
  from vlm_jax.sampler import _argmax  # the sampler's first-index argmax (no import cycle)
  z = jnp.einsum("RD,DV->RV", h, t["w"], preferred_element_type=jnp.float32)
  return _argmax(z + mask)[0]


def screen(h: jax.Array, t: dict) -> tuple[jax.Array, jax.Array]:
  """(s, B) [R, V]: the bfloat16 logits of h [R, D] and the bound on |s - float32 logits|."""
  dim = h.shape[-1]
  h = h.astype(jnp.float32)
  hb = h.astype(jnp.bfloat16)
  hr = h - hb.astype(jnp.float32)
  norm = lambda a: jnp.sqrt(jnp.sum(jnp.square(a.astype(jnp.float32)), -1))[:, None]
  gamma = dim * _U32 / (1 - dim * _U32)
  s = jnp.einsum("VD,RD->VR", t["wb"], hb, preferred_element_type=jnp.float32).T
  bound = (1.01 * (norm(hb) * t["wr_norm"] + norm(hr) * t["w_norm"]
                   + gamma * (norm(h) * t["w_norm"] + norm(hb) * t["wb_norm"]))
           + 4 * _U32 * jnp.abs(s) + 1e-30)
  return s, bound


def argmax(h: jax.Array, t: dict, mask: jax.Array) -> jax.Array:
  """First index of the maximum float32 logit of h [R, D] where `mask` [V] (`ban_mask`) is 0:
  the head's columns `tables` t holds."""
  rows = h.shape[0]
  vocab = t["w"].shape[1]
  h = h.astype(jnp.float32)
  s, bound = screen(h, t)
  tau = jnp.max(s - bound + mask, -1, keepdims=True)  # the maximum is at least this
  upper = s + bound + mask
  pad = -vocab % BLOCK
  if pad:
    upper = jnp.pad(upper, ((0, 0), (0, pad)), constant_values=-jnp.inf)
  blocks = upper.reshape(rows, -1, BLOCK)
  block_max = jnp.max(blocks, -1)
  keep = min(BLOCKS, block_max.shape[1])
  _, block_ids = jax.lax.top_k(block_max, keep)
  near = jnp.take_along_axis(blocks, block_ids[:, :, None], 1).reshape(rows, -1)
  count = min(CANDIDATES, near.shape[1])
  near_upper, j = jax.lax.top_k(near, count)
  ids = jnp.take_along_axis(block_ids, j // BLOCK, 1) * BLOCK + j % BLOCK
  cols = jnp.take(t["rows"], jnp.minimum(ids, vocab - 1), axis=0)  # [R, count, D]
  z = jnp.einsum("RD,RCD->RC", h, cols, preferred_element_type=jnp.float32)
  z = jnp.where(near_upper >= tau, z, -jnp.inf)  # non-candidates (and padding) never win
  token = jnp.min(jnp.where(z == jnp.max(z, -1, keepdims=True), ids, vocab), -1)
  candidates = jnp.sum(near >= tau, -1)
  sound = ((jnp.sum(block_max >= tau, -1) <= keep) & (candidates <= count)
           & (candidates >= 1) & (token < vocab))  # < 1: a NaN or infinite row
  return jax.lax.cond(jnp.all(sound), lambda: token, lambda: _full(h, t, mask))
