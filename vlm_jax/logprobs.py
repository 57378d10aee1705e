"""Per-token log-probabilities and entropies without materialising [B, T, V] logits.

The LM head is applied chunk by chunk over the sequence (`chunk_t` positions at a time) and, when
`chunk_v` is set, over the vocabulary with an online log-sum-exp: memory is
O(B * chunk_t * chunk_v) beyond the inputs and the [D, V] weight gradient. Accumulation is float32.

For logits z over V tokens: log p(y) = z_y - logsumexp(z); entropy H = logsumexp(z) - sum_i p_i z_i.
Online over vocabulary chunks c with running (m, s, u): m' = max(m, max z_c),
s' = s e^{m - m'} + sum_c e^{z - m'}, u' = u e^{m - m'} + sum_c e^{z - m'} z; then
logsumexp = m + log s and sum_i p_i z_i = u / s.

Gradients are analytic (custom VJPs): with cotangents g (of log p(y)) and k (of H),
dL/dz_i = g (1[i = y] - p_i) - k p_i (z_i - sum_j p_j z_j), then dh = dz W^T and dW = h^T dz.
- `logprobs_and_entropy`: the backward pass recomputes each chunk's logits (4 LM-head matmuls
  per forward + backward, against 3 for the naive computation).
- `token_loss`: for a loss that is a sum of per-token terms f(log p, H) (GRPO, SFT), the
  gradient is formed in the forward sweep while the chunk's logits are live, so forward +
  backward costs the naive 3 matmuls.

Two ways to sweep the gradient (`sweep`):
- "sequence": chunk by chunk over the sequence, all of the vocabulary at once. Each chunk adds
  a rank-(B * chunk_t) update to the float32 [D, V] weight gradient, reading and writing all
  of it: 8 D V bytes per chunk, which is memory-bound on a GPU below ~1000 tokens per chunk.
- "vocab": after the statistics (lse, E_p[z]) are known, tile by tile over the vocabulary with
  every token at once, so each column of dW is written once; the [B, T, D] float32 dh is what
  is re-read per tile (T D << D V). It recomputes the logits once more (4 LM-head matmuls).
  The tile is sized so its [B T, tile] logits are no larger than a sequence chunk's. With the
  LM head's vocabulary split over S devices (`head_sharding`), every tile takes an equal slice
  of each shard ([D, S, V/S] view), so no device gathers another's columns.
- "auto": "vocab" on accelerators when a sequence chunk holds fewer than 1024 tokens per device
  (512 for `token_loss`, whose "sequence" sweep needs only 3 matmuls; with `head_sharding` the
  batch counts as split over its mesh's batch axes), else "sequence" (on CPU the update is not
  memory-bound). Measured on one H200 in bench/RESULTS.md.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp

from vlm_jax import model as model_lib, sharding, text
from vlm_jax.config import ModelConfig


def _vocab_chunks(w: jax.Array, chunk_v: int | None) -> tuple[int, int]:
  """(chunk size, number of chunks) over the vocabulary."""
  vocab = w.shape[1]
  chunk_v = vocab if chunk_v is None or chunk_v >= vocab else chunk_v
  if vocab % chunk_v:
    raise ValueError(f"chunk_v={chunk_v} must divide the vocabulary size {vocab}")
  return chunk_v, vocab // chunk_v


def _logits(h: jax.Array, w_c: jax.Array) -> jax.Array:
  return jnp.einsum("BCD,DV->BCV", h, w_c, preferred_element_type=jnp.float32)


def _w_chunk(w: jax.Array, i, chunk_v: int) -> jax.Array:
  return jax.lax.dynamic_slice_in_dim(w, i * chunk_v, chunk_v, 1)


def _vocab_stats(h: jax.Array, w: jax.Array, targets: jax.Array, chunk_v: int | None):
  """(logsumexp, sum p z, target logit) for h [B, C, D], w [D, V], targets [B, C]; float32."""
  chunk_v, n = _vocab_chunks(w, chunk_v)
  if n == 1:
    z = _logits(h, w)
    lse = jax.nn.logsumexp(z, -1)
    mean_z = jnp.sum(jnp.exp(z - lse[..., None]) * z, -1)
    return lse, mean_z, jnp.take_along_axis(z, targets[..., None], -1)[..., 0]
  shape = targets.shape
  init = (jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.float32),
          jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))

  def body(carry, i):
    m, s, u, picked = carry
    z = _logits(h, _w_chunk(w, i, chunk_v))
    m_new = jnp.maximum(m, z.max(-1))
    scale = jnp.exp(m - m_new)
    e = jnp.exp(z - m_new[..., None])
    s = s * scale + e.sum(-1)
    u = u * scale + (e * z).sum(-1)
    local = targets - i * chunk_v
    inside = (local >= 0) & (local < chunk_v)
    hit = jnp.take_along_axis(z, jnp.clip(local, 0, chunk_v - 1)[..., None], -1)[..., 0]
    return (m_new, s, u, picked + jnp.where(inside, hit, 0.0)), None

  (m, s, u, picked), _ = jax.lax.scan(body, init, jnp.arange(n))
  return m + jnp.log(s), u / s, picked


def _dlogits(z, targets, start, lse, mean_z, g, k):
  """dL/dz [B, C, Vc] for the vocabulary slice starting at `start` (see the module docstring)."""
  p = jnp.exp(z - lse[..., None])
  dz = -p * (g[..., None] + k[..., None] * (z - mean_z[..., None]))
  # + g at the target: a scatter into dz, not a [B, C, Vc] one-hot (XLA materialises that)
  local = targets - start
  inside = (local >= 0) & (local < z.shape[-1])
  b, c = jnp.indices(targets.shape)
  return dz.at[b, c, jnp.clip(local, 0, z.shape[-1] - 1)].add(jnp.where(inside, g, 0.0))


def _chunk_grads(h, w, targets, lse, mean_z, g, k, chunk_v: int | None, dw):
  """(dh [B, C, D] float32, dw + h^T dz [D, V] float32) for one sequence chunk."""
  chunk_v, n = _vocab_chunks(w, chunk_v)

  def vocab_step(i, dh, dw):
    w_c = _w_chunk(w, i, chunk_v)
    dz = _dlogits(_logits(h, w_c), targets, i * chunk_v, lse, mean_z, g, k).astype(h.dtype)
    dh = dh + jnp.einsum("BCV,DV->BCD", dz, w_c, preferred_element_type=jnp.float32)
    dw_c = jnp.einsum("BCD,BCV->DV", h, dz, preferred_element_type=jnp.float32)
    return dh, jax.lax.dynamic_update_slice_in_dim(
        dw, _w_chunk(dw, i, chunk_v) + dw_c, i * chunk_v, 1)

  dh = jnp.zeros(h.shape, jnp.float32)
  if n == 1:
    return vocab_step(0, dh, dw)
  return jax.lax.fori_loop(0, n, lambda i, c: vocab_step(i, *c), (dh, dw))


def _tile_cols(per_shard: int, tokens: int, budget: int) -> int:
  """Columns per shard in one vocabulary tile: at most `budget` logits over all `tokens` and
  shards, preferring a size that divides the shard's columns (else the last tile overlaps)."""
  most = max(1, min(per_shard, budget // max(tokens, 1)))
  for cols in range(most, (most + 1) // 2 - 1, -1):
    if per_shard % cols == 0:
      return cols
  return most


def _constrain(x: jax.Array, head_sharding, shards: int = 0) -> jax.Array:
  """x laid out like the LM head ([D, V]; with `shards`, its [D, S, V/S] view): without this
  XLA returns the weight gradient replicated over `fsdp` (e.g. a full [D, V] per device on an
  fsdp-only mesh)."""
  if head_sharding is None:
    return x
  spec = tuple(head_sharding.spec) + (None,) * (2 - len(head_sharding.spec))
  if shards:
    spec = spec + (None,)
  return jax.lax.with_sharding_constraint(
      x, jax.sharding.NamedSharding(head_sharding.mesh, jax.sharding.PartitionSpec(*spec)))


def _vocab_sweep_grads(h, w, targets, lse, mean_z, g, k, chunk_t: int, shards: int,
                       head_sharding=None):
  """(dh [B, T, D] float32, dW [D, V] float32) by tiles of the vocabulary over all tokens at
  once (the "vocab" sweep of the module docstring); a tile's logits are no larger than those
  of a `chunk_t` sequence chunk."""
  b, t, d = h.shape
  vocab = w.shape[1]
  if jax.default_backend() == "cpu" and jnp.dtype(h.dtype) != jnp.float32:
    # XLA CPU has no bf16 x bf16 -> f32 dot kernel for some of these layouts (a vocabulary that
    # fits one tile failed to run); products of bf16 numbers are exact in float32, so upcasting
    # changes only the rounding of dz, which stays float32 here. dh is cast back by the caller.
    h, w = h.astype(jnp.float32), w.astype(jnp.float32)
  per = vocab // shards
  cols = _tile_cols(per, b * t * shards, b * chunk_t * vocab)
  n = -(-per // cols)
  flat = lambda x: x.reshape(b * t)
  h2, lse, mean_z, g, k = h.reshape(b * t, d), flat(lse), flat(mean_z), flat(g), flat(k)
  shard_of, column = jnp.divmod(flat(targets), per)
  rows = jnp.arange(b * t)
  ws = w.reshape(d, shards, per)

  def tile(i, carry):
    dh, dw = carry
    start = jnp.minimum(i * cols, per - cols)  # the last tile may overlap the one before
    w_c = jax.lax.dynamic_slice_in_dim(ws, start, cols, 2)  # [D, S, cols]
    z = jnp.einsum("ND,DSC->NSC", h2, w_c, preferred_element_type=jnp.float32)
    p = jnp.exp(z - lse[:, None, None])
    dz = -p * (g[:, None, None] + k[:, None, None] * (z - mean_z[:, None, None]))
    local = column - start
    inside = (local >= 0) & (local < cols)
    dz = dz.at[rows, shard_of, jnp.clip(local, 0, cols - 1)].add(jnp.where(inside, g, 0.0))
    dz = dz.astype(h.dtype)
    # overlapping columns are recomputed to the same values: the write may repeat them
    dw = _constrain(jax.lax.dynamic_update_slice_in_dim(
        dw, jnp.einsum("ND,NSC->DSC", h2, dz, preferred_element_type=jnp.float32), start, 2),
        head_sharding, shards)
    if per % cols:  # ... but dh must count each column once
      dz = jnp.where((start + jnp.arange(cols) >= i * cols)[None, None], dz, 0)
    return dh + jnp.einsum("NSC,DSC->ND", dz, w_c, preferred_element_type=jnp.float32), dw

  init = (jnp.zeros((b * t, d), jnp.float32),
          _constrain(jnp.zeros(ws.shape, jnp.float32), head_sharding, shards))
  dh, dw = tile(0, init) if n == 1 else jax.lax.fori_loop(0, n, tile, init)
  return dh.reshape(b, t, d), _constrain(dw.reshape(d, vocab), head_sharding)


def resolve_sweep(sweep: str, tokens_per_chunk: int, chunk_v: int | None = None,
                  one_sweep: bool = False) -> str:
  """"sequence" or "vocab" for the `sweep` option (see the module docstring); `one_sweep` for
  `token_loss`, whose "sequence" sweep saves the 4th matmul that "vocab" spends."""
  if sweep not in ("auto", "sequence", "vocab"):
    raise ValueError(f"sweep={sweep!r}: want 'auto', 'sequence' or 'vocab'")
  if sweep == "auto":
    # measured on an H200 (bench/RESULTS.md): the vocab sweep wins for the custom VJP below
    # ~1000 tokens per chunk, for the one-sweep loss below ~512 (from ~4 F / BW: where the
    # 8 D V bytes per chunk cost more than one matmul); on CPU the update is not memory-bound
    memory_bound = tokens_per_chunk < (512 if one_sweep else 1024)
    accelerated = jax.default_backend() != "cpu"
    sweep = "vocab" if accelerated and memory_bound and chunk_v is None else "sequence"
  if sweep == "vocab" and chunk_v is not None:
    raise ValueError("chunk_v applies to the 'sequence' sweep; the 'vocab' sweep tiles the "
                     "vocabulary itself")
  return sweep


def _to_chunks(x: jax.Array, chunk_t: int) -> jax.Array:
  """[B, T, ...] -> [n, B, chunk_t, ...], zero-padded at the end of T."""
  b, t = x.shape[:2]
  pad = -t % chunk_t
  x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  x = x.reshape(b, (t + pad) // chunk_t, chunk_t, *x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _from_chunks(x: jax.Array, t: int) -> jax.Array:
  """[n, B, chunk_t, ...] -> [B, t, ...]."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :t]


def _forward_stats(hidden, w, targets, chunk_t, chunk_v):
  """(logp, entropy, lse, mean_z), each [B, T] float32."""
  def body(_, xs):
    h, y = xs
    lse, mean_z, picked = _vocab_stats(h, w, y, chunk_v)
    return None, (picked - lse, lse - mean_z, lse, mean_z)

  t = hidden.shape[1]
  _, out = jax.lax.scan(body, None, (_to_chunks(hidden, chunk_t), _to_chunks(targets, chunk_t)))
  return tuple(_from_chunks(x, t) for x in out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _logprobs_entropy(hidden, w, targets, chunk_t, chunk_v, sweep, shards, head_sharding):
  return _forward_stats(hidden, w, targets, chunk_t, chunk_v)[:2]


def _logprobs_entropy_fwd(hidden, w, targets, chunk_t, chunk_v, sweep, shards, head_sharding):
  logp, ent, lse, mean_z = _forward_stats(hidden, w, targets, chunk_t, chunk_v)
  return (logp, ent), (hidden, w, targets, lse, mean_z)


def _logprobs_entropy_bwd(chunk_t, chunk_v, sweep, shards, head_sharding, res, cotangents):
  hidden, w, targets, lse, mean_z = res
  g, k = (c.astype(jnp.float32) for c in cotangents)
  t = hidden.shape[1]
  if sweep == "vocab":
    dh, dw = _vocab_sweep_grads(hidden, w, targets, lse, mean_z, g, k,
                                chunk_t, shards, head_sharding)
    return dh.astype(hidden.dtype), _constrain(dw.astype(w.dtype), head_sharding), None

  def body(dw, xs):
    h, y, lse_c, mean_c, g_c, k_c = xs
    dh, dw = _chunk_grads(h, w, y, lse_c, mean_c, g_c, k_c, chunk_v, dw)
    return _constrain(dw, head_sharding), dh

  xs = tuple(_to_chunks(x, chunk_t) for x in (hidden, targets, lse, mean_z, g, k))
  dw, dh = jax.lax.scan(body, _constrain(jnp.zeros(w.shape, jnp.float32), head_sharding), xs)
  return (_from_chunks(dh, t).astype(hidden.dtype),
          _constrain(dw.astype(w.dtype), head_sharding), None)


_logprobs_entropy.defvjp(_logprobs_entropy_fwd, _logprobs_entropy_bwd)


def _vocab_split(head_sharding) -> int:
  """How many devices split the vocabulary axis of a [D, V] NamedSharding (1 for None)."""
  if head_sharding is None:
    return 1
  axes = (tuple(head_sharding.spec) + (None, None))[1]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(head_sharding.mesh.shape[a] for a in axes)


def _check(hidden, w, chunk_t, chunk_v, sweep, vocab_shards, head_sharding, one_sweep=False):
  """Validated (chunk_t, sweep, vocab_shards) for the kernels' options; vocab_shards None:
  the split of `head_sharding`'s vocabulary axis."""
  chunk_t = max(1, min(chunk_t, hidden.shape[1]))
  _vocab_chunks(w, chunk_v)
  split = _vocab_split(head_sharding)
  if vocab_shards is None:
    vocab_shards = split
  elif head_sharding is not None and vocab_shards != split:
    raise ValueError(f"vocab_shards={vocab_shards}, but head_sharding splits the vocabulary "
                     f"{split} ways")
  if vocab_shards < 1 or w.shape[1] % vocab_shards:
    raise ValueError(f"vocab_shards={vocab_shards} must divide the vocabulary size {w.shape[1]}")
  sweep = resolve_sweep(sweep, tokens_per_device(hidden.shape[0], chunk_t, head_sharding),
                        chunk_v, one_sweep)
  return chunk_t, sweep, vocab_shards


def tokens_per_device(rows: int, chunk_t: int, head_sharding=None) -> int:
  """A chunk's tokens on the busiest device: the rows are split over the batch axes of the
  head's mesh (`sharding.batch_axes`; a batch is padded to a multiple of them). The "auto"
  sweep thresholds were measured on one device, where a chunk's tokens meet one device's copy
  of the weight."""
  if head_sharding is None:
    return rows * chunk_t
  return -(-rows // sharding.batch_size_multiple(head_sharding.mesh)) * chunk_t


def logprobs_and_entropy(hidden: jax.Array, w: jax.Array, targets: jax.Array,
                         chunk_t: int = 128, chunk_v: int | None = None, sweep: str = "auto",
                         vocab_shards: int | None = None, head_sharding=None):
  """log p(targets) and next-token entropy, both float32 [B, T], from hidden [B, T, D].

  hidden[:, t] is the state that predicts targets[:, t] (shift before calling); w [D, V] is the
  LM head. T is padded to a multiple of chunk_t internally. Differentiable in hidden and w;
  `sweep` chooses how the backward pass runs (module docstring). `head_sharding` (a
  NamedSharding of w, e.g. `sharding.head_sharding(mesh)`) keeps the weight gradient laid out
  like w (XLA otherwise returns it replicated over `fsdp`); the vocab sweep's tiles follow its
  vocabulary split (`vocab_shards` overrides that split, e.g. to test the tiling).
  """
  chunk_t, sweep, vocab_shards = _check(hidden, w, chunk_t, chunk_v, sweep, vocab_shards,
                                        head_sharding)
  return _logprobs_entropy(hidden, w, targets, chunk_t, chunk_v, sweep, vocab_shards,
                           head_sharding)


TokenFn = Callable[[jax.Array, jax.Array, dict], jax.Array]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 5, 6, 7, 8, 9))
def _token_loss(hidden, w, targets, token_fn, aux, chunk_t, chunk_v, sweep, shards,
                head_sharding):
  """Without differentiation: the statistics alone, no gradient sweep."""
  logp, ent, _, _ = _forward_stats(hidden, w, targets, chunk_t, chunk_v)
  return jnp.sum(token_fn(logp, ent, aux), dtype=jnp.float32), logp, ent


def _token_loss_fwd(hidden, w, targets, token_fn, aux, chunk_t, chunk_v, sweep, shards,
                    head_sharding):
  t = hidden.shape[1]
  valid = jnp.ones(targets.shape, bool)
  in_sweep = sweep == "sequence"  # else dh, dW come from the vocabulary sweep afterwards

  def body(carry, xs):
    total, dw = carry
    h, y, ok, a = xs
    lse, mean_z, picked = _vocab_stats(h, w, y, chunk_v)
    logp, ent = picked - lse, lse - mean_z
    terms, vjp = jax.vjp(lambda lp, e: token_fn(lp, e, a), logp, ent)
    terms = jnp.where(ok, terms, 0.0)
    g, k = (jnp.where(ok, x, 0.0) for x in vjp(ok.astype(terms.dtype)))
    total = total + jnp.sum(terms, dtype=jnp.float32)
    if not in_sweep:
      return (total, dw), (logp, ent, lse, mean_z, g, k)
    dh, dw = _chunk_grads(h, w, y, lse, mean_z, g, k, chunk_v, dw)
    return (total, _constrain(dw, head_sharding)), (dh, logp, ent)

  chunks = lambda x: _to_chunks(x, chunk_t)
  xs = (chunks(hidden), chunks(targets), chunks(valid), jax.tree.map(chunks, aux))
  init = (jnp.zeros((), jnp.float32),
          _constrain(jnp.zeros(w.shape, jnp.float32), head_sharding) if in_sweep
          else jnp.zeros((), jnp.float32))
  (total, dw), out = jax.lax.scan(body, init, xs)
  out = [_from_chunks(x, t) for x in out]
  if in_sweep:
    dh, logp, ent = out
  else:
    logp, ent, lse, mean_z, g, k = out
    dh, dw = _vocab_sweep_grads(hidden, w, targets, lse, mean_z, g, k,
                                chunk_t, shards, head_sharding)
  grads = (dh.astype(hidden.dtype), _constrain(dw.astype(w.dtype), head_sharding))
  return (total, logp, ent), (grads, aux)


def _token_loss_bwd(token_fn, chunk_t, chunk_v, sweep, shards, head_sharding, res, cotangents):
  (dh, dw), aux = res
  c = cotangents[0]  # log p and entropy are returned without gradient (`token_loss`)
  zeros = jax.tree.map(jnp.zeros_like, aux)
  return (dh * c.astype(dh.dtype), dw * c.astype(dw.dtype), None, zeros)


_token_loss.defvjp(_token_loss_fwd, _token_loss_bwd)


def token_loss(hidden: jax.Array, w: jax.Array, targets: jax.Array, token_fn: TokenFn,
               aux: dict, chunk_t: int = 128, chunk_v: int | None = None, sweep: str = "auto",
               vocab_shards: int | None = None, head_sharding=None):
  """sum over [B, T] of token_fn(log p(targets), entropy, aux), with its gradient in one sweep.

  token_fn(logp [B, C], entropy [B, C], aux chunk) -> per-token loss [B, C], elementwise over
  tokens (weights, masks and normalisers go in `aux`: a dict of [B, T] arrays, chunked along
  with the tokens; no gradient flows into it). Returns (loss scalar, logp [B, T], entropy
  [B, T]); loss is differentiable in hidden and w, logp and entropy carry no gradient (use them
  for diagnostics). The gradient is formed in the forward pass and held until the backward
  pass (one [D, V] float32 buffer, as the weight gradient needs anyway): in the statistics'
  sweep ("sequence") or in a vocabulary sweep right after it ("vocab"; module docstring).
  `vocab_shards`, `head_sharding`: as in `logprobs_and_entropy`.
  """
  chunk_t, sweep, vocab_shards = _check(hidden, w, chunk_t, chunk_v, sweep, vocab_shards,
                                        head_sharding, one_sweep=True)
  for name, a in aux.items():
    if a.shape != targets.shape:
      raise ValueError(f"token_loss aux[{name!r}] has shape {a.shape}, want {targets.shape}")
  loss, logp, ent = _token_loss(hidden, w, targets, token_fn, aux, chunk_t, chunk_v, sweep,
                                vocab_shards, head_sharding)
  return loss, jax.lax.stop_gradient(logp), jax.lax.stop_gradient(ent)


def sequence_logprobs(params: dict, config: ModelConfig, inputs: dict, chunk_t: int = 128,
                      chunk_v: int | None = None, last: int | None = None, sweep: str = "auto",
                      vocab_shards: int | None = None, head_sharding=None,
                      temperature: float = 1.0):
  """Per-token log p(input_ids[t+1] | ..t) and entropies [B, T-1] for `prepare_inputs` output.

  With `last`, only the final `last` predictions ([B, last], i.e. the last `last` tokens as
  targets): a left-aligned response of up to `last` tokens costs no LM-head work on the prompt.
  This is the scoring path GRPO and the evals use; it runs the same `apply` as the sampler.
  temperature: of softmax(logits / temperature) (GRPO scores rollouts under the distribution
  they were sampled from, as TRL and verl do).
  """
  return logprobs_and_entropy(*predictions(params, config, inputs, last, temperature,
                                          _mesh(head_sharding)),
                              chunk_t, chunk_v, sweep, vocab_shards, head_sharding)


def sequence_token_loss(params: dict, config: ModelConfig, inputs: dict, token_fn: TokenFn,
                        aux: dict, last: int, chunk_t: int = 128, chunk_v: int | None = None,
                        sweep: str = "auto", vocab_shards: int | None = None,
                        head_sharding=None, temperature: float = 1.0):
  """`token_loss` over the last `last` predictions of `prepare_inputs` output (the response
  of left-aligned rows): (loss, logp [B, last], entropy [B, last]), of softmax(logits /
  temperature). The training loss path."""
  return token_loss(*predictions(params, config, inputs, last, temperature, _mesh(head_sharding)),
                    token_fn, aux, chunk_t, chunk_v, sweep, vocab_shards, head_sharding)


def _mesh(head_sharding):
  return None if head_sharding is None else head_sharding.mesh


def predictions(params: dict, config: ModelConfig, inputs: dict, last: int | None = None,
                temperature: float = 1.0, mesh=None):
  """(hidden [B, T', D], LM head [D, V], targets [B, T']), the kernels' first arguments: each
  hidden state with the next token it predicts; the last `last` of them when given. With a
  temperature the hidden states are divided by it: (h / T) W = logits / T, at no LM-head cost.
  `mesh`: the one the inputs are split over (`model.embed`)."""
  hidden, _ = model_lib.apply(params, config, inputs, mesh=mesh)
  hidden, targets = hidden[:, :-1], inputs["input_ids"][:, 1:]
  if last is not None:
    hidden, targets = hidden[:, -last:], targets[:, -last:]
  if temperature != 1:
    hidden = hidden / jnp.asarray(temperature, hidden.dtype)
  return hidden, text.head_weight(params["text"], config.text), targets


def option_distribution(hidden: jax.Array, w: jax.Array, option_ids: jax.Array,
                        option_mask: jax.Array, correct: jax.Array):
  """Distribution over answer-option letters at one position per sample (PAPER.md section 5).

  hidden [B, D] at the first answer-letter position; option_ids [B, L] token ids of the letters
  (A, B, ...); option_mask [B, L] which are real options; correct [B] index of the key.
  Returns probs [B, L] (softmax restricted to the present letters), entropy [B] (nats) and
  p_correct [B].
  """
  logits = jnp.einsum("BD,DBL->BL", hidden, w[:, option_ids], preferred_element_type=jnp.float32)
  logits = jnp.where(option_mask, logits, -jnp.inf)
  logp = jax.nn.log_softmax(logits, -1)
  probs = jnp.where(option_mask, jnp.exp(logp), 0.0)
  entropy = -jnp.sum(jnp.where(option_mask, probs * logp, 0.0), -1)
  p_correct = jnp.take_along_axis(probs, correct[:, None], -1)[:, 0]
  return probs, entropy, p_correct


@functools.partial(jax.jit, static_argnames=("chunk_t", "chunk_v"))
def naive_logprobs_and_entropy(hidden, w, targets, chunk_t=None, chunk_v=None):
  """Reference: full [B, T, V] logits (tests and benchmarks only)."""
  logits = jnp.einsum("BTD,DV->BTV", hidden, w, preferred_element_type=jnp.float32)
  logp_all = jax.nn.log_softmax(logits, -1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], -1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
  return logp, entropy
