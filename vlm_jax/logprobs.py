"""Per-token log-probabilities and entropies without materialising [B, T, V] logits.

The LM head is applied chunk by chunk over the sequence (`chunk_t` positions at a time) and, when
`chunk_v` is set, over the vocabulary with an online log-sum-exp. Each sequence chunk is wrapped in
`jax.checkpoint`, so the backward pass recomputes that chunk's logits instead of storing them:
peak memory is O(B * chunk_t * chunk_v) in both directions. Accumulation is float32.

For logits z over V tokens: log p(y) = z_y - logsumexp(z); entropy H = logsumexp(z) - sum_i p_i z_i.
Online over vocabulary chunks c with running (m, s, u): m' = max(m, max z_c),
s' = s e^{m - m'} + sum_c e^{z - m'}, u' = u e^{m - m'} + sum_c e^{z - m'} z; then
logsumexp = m + log s and sum_i p_i z_i = u / s.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vlm_jax import model as model_lib, text
from vlm_jax.config import ModelConfig


def _vocab_stats(h: jax.Array, w: jax.Array, targets: jax.Array, chunk_v: int | None):
  """(logsumexp, sum p z, target logit) for h [B, C, D], w [D, V], targets [B, C]; float32."""
  vocab = w.shape[1]
  chunk_v = vocab if chunk_v is None or chunk_v >= vocab else chunk_v
  if vocab % chunk_v:
    raise ValueError(f"chunk_v={chunk_v} must divide the vocabulary size {vocab}")
  w_chunks = w.reshape(w.shape[0], vocab // chunk_v, chunk_v).transpose(1, 0, 2)
  shape = targets.shape
  init = (jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.float32),
          jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))

  def body(carry, xs):
    m, s, u, picked = carry
    w_c, start = xs
    z = jnp.einsum("BCD,DV->BCV", h, w_c, preferred_element_type=jnp.float32)
    m_new = jnp.maximum(m, z.max(-1))
    scale = jnp.exp(m - m_new)
    e = jnp.exp(z - m_new[..., None])
    s = s * scale + e.sum(-1)
    u = u * scale + (e * z).sum(-1)
    local = targets - start
    inside = (local >= 0) & (local < chunk_v)
    hit = jnp.take_along_axis(z, jnp.clip(local, 0, chunk_v - 1)[..., None], -1)[..., 0]
    return (m_new, s, u, picked + jnp.where(inside, hit, 0.0)), None

  starts = jnp.arange(vocab // chunk_v) * chunk_v
  (m, s, u, picked), _ = jax.lax.scan(body, init, (w_chunks, starts))
  return m + jnp.log(s), u / s, picked


def logprobs_and_entropy(hidden: jax.Array, w: jax.Array, targets: jax.Array,
                         chunk_t: int = 128, chunk_v: int | None = None):
  """log p(targets) and next-token entropy, both float32 [B, T], from hidden [B, T, D].

  hidden[:, t] is the state that predicts targets[:, t] (shift before calling). T is padded to a
  multiple of chunk_t internally.
  """
  b, t, d = hidden.shape
  chunk_t = min(chunk_t, t)
  pad = -t % chunk_t
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  y = jnp.pad(targets, ((0, 0), (0, pad)))
  n = (t + pad) // chunk_t
  h = h.reshape(b, n, chunk_t, d).transpose(1, 0, 2, 3)
  y = y.reshape(b, n, chunk_t).transpose(1, 0, 2)

  @jax.checkpoint
  def chunk(h_c, y_c):
    lse, mean_z, picked = _vocab_stats(h_c, w, y_c, chunk_v)
    return picked - lse, lse - mean_z

  def body(_, xs):
    return None, chunk(*xs)

  _, (logp, ent) = jax.lax.scan(body, None, (h, y))
  unchunk = lambda x: x.transpose(1, 0, 2).reshape(b, t + pad)[:, :t]
  return unchunk(logp), unchunk(ent)


def sequence_logprobs(params: dict, config: ModelConfig, inputs: dict, chunk_t: int = 128,
                      chunk_v: int | None = None, last: int | None = None):
  """Per-token log p(input_ids[t+1] | ..t) and entropies [B, T-1] for `prepare_inputs` output.

  With `last`, only the final `last` predictions ([B, last], i.e. the last `last` tokens as
  targets): a left-aligned response of up to `last` tokens costs no LM-head work on the prompt.
  This is the scoring path GRPO and the evals use; it runs the same `apply` as the sampler.
  """
  hidden, _ = model_lib.apply(params, config, inputs)
  hidden, targets = hidden[:, :-1], inputs["input_ids"][:, 1:]
  if last is not None:
    hidden, targets = hidden[:, -last:], targets[:, -last:]
  return logprobs_and_entropy(hidden, text.head_weight(params["text"], config.text), targets,
                              chunk_t, chunk_v)


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
