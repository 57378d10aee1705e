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
the rounding of the norms themselves (taken on rescaled vectors, so tiny entries are not
flushed), 4 u |s| the rounding of s - B and s + B, and 1e-30 products flushed to zero.
`tests/vlm_jax/test_greedy_screen.py` checks the backend's bfloat16 dot against this bound,
with float32 and float64 references.

Meant for a true float32 matmul (CPU). Where float32 dots run at reduced precision by default
(TF32 on GPUs, bf16 passes on TPUs) the reference logits are themselves approximate, which is
why `Sampler(greedy_screen="auto")` uses it on CPU only.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vlm_jax import token_choice

BLOCK = 128      # vocabulary block of the first selection level
BLOCKS = 16      # blocks kept per row
CANDIDATES = 16  # columns rescored in float32 per row
_U32 = 2.0 ** -24


def norm(a: jax.Array, axis: int = -1) -> jax.Array:
  """Euclidean norm over `axis` (kept as size 1) without losing small vectors: the entries are
  divided by their largest magnitude first (XLA CPU flushes subnormal squares to zero, which
  took the norm of a vector of ~1e-18 entries to 0)."""
  a = a.astype(jnp.float32)
  m = jnp.max(jnp.abs(a), axis, keepdims=True)
  m = jnp.where(m > 0, m, 1.0)  # (NaN stays NaN: the row falls back)
  return m * jnp.sqrt(jnp.sum(jnp.square(a / m), axis, keepdims=True))


def tables(rows: jax.Array, keep_rows: bool) -> dict:
  """What `argmax` needs besides h, computed once per head (`Sampler` keeps them).
  rows: the float32 head as [V, D] (a tied embedding, or the transposed [D, V] LM head).
  The bfloat16 head as [V, D] (XLA CPU's 8-row bfloat16 dot ran 2-13% faster against it than
  against [D, V]) and three column norms; with keep_rows, `rows` too (the untied head's
  transposed copy: rescoring gathers whole rows, where gathering [D, V] columns was a cache
  miss per element, ~0.2 ms per CPU step). A tied embedding is passed at call time instead
  (`with_rows`), so the tables hold no second copy of it."""
  wb = rows.astype(jnp.bfloat16)
  col = lambda a: norm(a)[:, 0]
  out = {"wb": wb, "wr_norm": col(rows - wb.astype(jnp.float32)), "w_norm": col(rows),
         "wb_norm": col(wb)}
  return dict(out, rows=rows) if keep_rows else out


def with_rows(t: dict, rows: jax.Array) -> dict:
  """`tables` output completed with the float32 [V, D] head where it was not kept."""
  return t if "rows" in t else dict(t, rows=rows)


def ban_mask(vocab: int, banned: jax.Array) -> jax.Array:
  """[V] float32: 0, and -inf at the `banned` ids (ids out of range are ignored)."""
  return jnp.zeros(vocab, jnp.float32).at[banned].set(-jnp.inf, mode="drop")


def screen(h: jax.Array, t: dict) -> tuple[jax.Array, jax.Array]:
  """(s, B) [R, V]: the bfloat16 logits of h [R, D] and the bound on |s - float32 logits|."""
  dim = h.shape[-1]
  h = h.astype(jnp.float32)
  hb = h.astype(jnp.bfloat16)
  hr = h - hb.astype(jnp.float32)
  gamma = dim * _U32 / (1 - dim * _U32)
  s = jnp.einsum("VD,RD->VR", t["wb"], hb, preferred_element_type=jnp.float32).T
  bound = (1.01 * (norm(hb) * t["wr_norm"] + norm(hr) * t["w_norm"]
                   + gamma * (norm(h) * t["w_norm"] + norm(hb) * t["wb_norm"]))
           + 4 * _U32 * jnp.abs(s) + 1e-30)
  return s, bound


def candidates(h: jax.Array, t: dict, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(token [R], sound [R]): the screened choice, and whether it is sure to be the float32
  argmax (False: the columns that can hold the maximum did not fit in `BLOCKS` blocks or
  `CANDIDATES` columns, or the row is not finite)."""
  rows, vocab = h.shape[0], t["wb"].shape[0]
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
  found = jnp.sum(near >= tau, -1)
  # a NaN or infinite row: three checks, as XLA CPU's max skips NaN (tau can be -inf)
  finite = jnp.all(jnp.isfinite(h), -1) & (found >= 1) & (token < vocab)
  sound = (jnp.sum(block_max >= tau, -1) <= keep) & (found <= count) & finite
  return token, sound


def argmax(h: jax.Array, t: dict, mask: jax.Array,
           logits: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """First index of the maximum float32 logit of h [R, D] where `mask` [V] (`ban_mask`) is 0.
  t: `tables` (with `with_rows`); logits: h -> the full float32 logits [R, V], the fallback."""
  token, sound = candidates(h, t, mask)
  return jax.lax.cond(jnp.all(sound), lambda: token,
                      lambda: token_choice.argmax(logits(h).astype(jnp.float32) + mask)[0])
