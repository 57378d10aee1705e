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
(Cauchy-Schwarz; the column norms are computed once per head, `tables`; a step takes ||h|| as
||hb|| + ||hr||). A 1% margin covers
the rounding of the norms themselves (taken on rescaled vectors, so tiny entries are not
flushed), 4 u (1 + gamma) ||hb|| ||Wb_v|| (>= 4 u |s_v|) the rounding of s - B and s + B, and
1e-30 products flushed to zero. So B is a sum of three (row factor x column norm) products, and
the largest norms of a block of columns bound B over the whole block: the vocabulary-wide work
is the dot and the maximum of s per block; column bounds are taken in the kept blocks only.
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
  against [D, V]); the three column norms the bound is made of, per vocabulary block
  ("norms" [blocks, 3, BLOCK], zero past the vocabulary) and their maxima per block
  ("block_norms" [blocks, 3]); with keep_rows, `rows` too (the untied head's transposed copy:
  rescoring gathers whole rows, where gathering [D, V] columns was a cache miss per element,
  ~0.2 ms per CPU step). A tied embedding is passed at call time instead (`with_rows`), so
  the tables hold no second copy of it."""
  vocab = rows.shape[0]
  wb = rows.astype(jnp.bfloat16)
  col = lambda a: norm(a)[:, 0]
  norms = jnp.stack([col(rows - wb.astype(jnp.float32)), col(rows), col(wb)])  # [3, V]
  norms = jnp.pad(norms, ((0, 0), (0, -vocab % BLOCK)))
  norms = norms.reshape(3, -1, BLOCK).transpose(1, 0, 2)
  out = {"wb": wb, "norms": norms, "block_norms": jnp.max(norms, -1)}
  return dict(out, rows=rows) if keep_rows else out


def with_rows(t: dict, rows: jax.Array) -> dict:
  """`tables` output completed with the float32 [V, D] head where it was not kept."""
  return t if "rows" in t else dict(t, rows=rows)


def ban_mask(vocab: int, banned: jax.Array) -> jax.Array:
  """[V] float32: 0, and -inf at the `banned` ids (ids out of range are ignored)."""
  return jnp.zeros(vocab, jnp.float32).at[banned].set(-jnp.inf, mode="drop")


def _logits_and_row_factors(h: jax.Array, t: dict) -> tuple[jax.Array, jax.Array]:
  """(s [R, V], a [R, 3]): the bfloat16 logits of h [R, D], and the row factors of the bound:
  B[r, v] = sum_k a[r, k] * norms[k, v] + 1e-30 (see the module doc)."""
  dim = h.shape[-1]
  h = h.astype(jnp.float32)
  hb = h.astype(jnp.bfloat16)
  hr = h - hb.astype(jnp.float32)
  gamma = dim * _U32 / (1 - dim * _U32)
  s = jnp.einsum("VD,RD->VR", t["wb"], hb, preferred_element_type=jnp.float32).T
  # both norms in one pass (each tiny reduction is a kernel launch of its own on CPU), and
  # ||h|| <= ||hb|| + ||hr|| instead of a third
  nb, nr = jnp.split(norm(jnp.stack([hb.astype(jnp.float32), hr], 1))[..., 0], 2, axis=-1)
  a = 1.01 * jnp.concatenate([nb, nr + gamma * (nb + nr),
                              (gamma + 4 * _U32 * (1 + gamma)) * nb], -1)
  return s, a


def screen(h: jax.Array, t: dict) -> tuple[jax.Array, jax.Array]:
  """(s, B) [R, V]: the bfloat16 logits of h [R, D] and the bound on |s - float32 logits|."""
  s, a = _logits_and_row_factors(h, t)
  norms = t["norms"].transpose(1, 0, 2).reshape(3, -1)[:, :s.shape[1]]
  return s, a @ norms + 1e-30


def candidates(h: jax.Array, t: dict, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(token [R], sound [R]): the screened choice, and whether it is sure to be the float32
  argmax (False: the columns that can hold the maximum did not fit in `BLOCKS` blocks or
  `CANDIDATES` columns, or the row is not finite).

  Over the whole vocabulary only the dot and one pass over s: the maximum of s per block. A
  block's bound is bounded by its largest column norms, which gives an upper bound for each
  block and a lower bound tau on the maximum logit; per-column bounds are taken only inside
  the `BLOCKS` blocks kept."""
  rows, vocab = h.shape[0], t["wb"].shape[0]
  h = h.astype(jnp.float32)
  s, a = _logits_and_row_factors(h, t)
  s = s + mask
  pad = -vocab % BLOCK
  if pad:
    s = jnp.pad(s, ((0, 0), (0, pad)), constant_values=-jnp.inf)
  blocks = s.reshape(rows, -1, BLOCK)
  block_max = jnp.max(blocks, -1)
  block_bound = a @ t["block_norms"].T + 1e-30  # [R, blocks]: >= B of each column in it
  block_upper = block_max + block_bound
  tau = jnp.max(block_max - block_bound, -1, keepdims=True)  # the maximum is at least this
  keep = min(BLOCKS, block_max.shape[1])
  _, block_ids = jax.lax.top_k(block_upper, keep)
  near = jnp.take_along_axis(blocks, block_ids[:, :, None], 1)  # [R, keep, BLOCK]
  bound = jnp.einsum("RK,RNKC->RNC", a, t["norms"][block_ids]) + 1e-30
  tau = jnp.maximum(tau, jnp.max(near - bound, (1, 2))[:, None])
  near_upper = (near + bound).reshape(rows, -1)
  count = min(CANDIDATES, near_upper.shape[1])
  top_upper, j = jax.lax.top_k(near_upper, count)
  ids = jnp.take_along_axis(block_ids, j // BLOCK, 1) * BLOCK + j % BLOCK
  cols = jnp.take(t["rows"], jnp.minimum(ids, vocab - 1), axis=0)  # [R, count, D]
  z = jnp.einsum("RD,RCD->RC", h, cols, preferred_element_type=jnp.float32)
  z = jnp.where(top_upper >= tau, z, -jnp.inf)  # non-candidates (and padding) never win
  token = jnp.min(jnp.where(z == jnp.max(z, -1, keepdims=True), ids, vocab), -1)
  found = jnp.sum(near_upper >= tau, -1)
  # a NaN or infinite row: three checks, as XLA CPU's max skips NaN (tau can be -inf)
  finite = jnp.all(jnp.isfinite(h), -1) & (found >= 1) & (token < vocab)
  sound = (jnp.sum(block_upper >= tau, -1) <= keep) & (found <= count) & finite
  return token, sound


def argmax(h: jax.Array, t: dict, mask: jax.Array,
           logits: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """First index of the maximum float32 logit of h [R, D] where `mask` [V] (`ban_mask`) is 0.
  t: `tables` (with `with_rows`); logits: h -> the full float32 logits [R, V], the fallback."""
  token, sound = candidates(h, t, mask)
  return jax.lax.cond(jnp.all(sound), lambda: token,
                      lambda: token_choice.argmax(logits(h).astype(jnp.float32) + mask)[0])
