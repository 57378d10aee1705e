"""GRPO maths as small pure functions (no model, no I/O). Shapes: R rollouts = P prompts x G,
T response tokens; `mask` [R, T] is 1 on response tokens that count.

Conventions (documented in each function): advantages are per group of G consecutive rollouts
(the sampler's row order b*G + j), std is the unbiased sample std (as TRL and verl), and every
per-token quantity is float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token_mean", "seq_mean_token_mean")


def group_advantages(rewards: jax.Array, group_size: int, eps: float = 1e-6,
                     scale_by_std: bool = True) -> jax.Array:
  """A_i = (r_i - mean_g(r)) / (std_g(r) + eps), over each group of `group_size` rows.

  rewards [R] with R = P * G; std_g is the unbiased sample std (ddof=1); with
  scale_by_std=False, A_i = r_i - mean_g(r) (Dr. GRPO). Groups with equal rewards get 0.
  """
  r = rewards.astype(jnp.float32).reshape(-1, group_size)
  centred = r - r.mean(-1, keepdims=True)
  if scale_by_std:
    std = jnp.sqrt(jnp.sum(centred ** 2, -1, keepdims=True) / max(group_size - 1, 1))
    centred = centred / (std + eps)
  return centred.reshape(-1)


def clipped_surrogate(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                      clip_low: float = 0.2, clip_high: float = 0.2, broadcast: bool = True):
  """Per-token loss -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A), rho = exp(logp - old).

  logp, old_logp [R, T]; advantages [R] (broadcast over tokens), or [R, T] with
  broadcast=False. Returns (loss [R, T], ratio [R, T], clipped [R, T] bool: the clipped
  branch was the smaller one).
  """
  ratio = jnp.exp(logp - old_logp)
  adv = advantages[:, None] if broadcast else advantages
  unclipped = ratio * adv
  clipped_ratio = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  clipped = clipped_ratio * adv
  return -jnp.minimum(unclipped, clipped), ratio, clipped < unclipped


def kl_k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
  """k3 estimator of KL(pi || pi_ref) per token: exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
  d = ref_logp - logp
  return jnp.exp(d) - d - 1.0


def aggregation_weights(mask: jax.Array, mode: str = "token_mean") -> jax.Array:
  """Per-token weights [R, T] with sum(weights * l) = the aggregate of per-token l:
  token_mean: sum(l m) / sum(m) over the batch; seq_mean_token_mean: mean over sequences of
  sum_t(l m) / sum_t(m) (sequences with no tokens are left out)."""
  mask = mask.astype(jnp.float32)
  if mode == "token_mean":
    return mask / jnp.maximum(jnp.sum(mask), 1.0)
  if mode == "seq_mean_token_mean":
    lengths = jnp.sum(mask, -1, keepdims=True)
    has = (lengths > 0).astype(jnp.float32)
    return mask / jnp.maximum(lengths, 1.0) * has / jnp.maximum(jnp.sum(has), 1.0)
  raise ValueError(f"unknown aggregation {mode!r}; known: {AGGREGATIONS}")


def aggregate(per_token: jax.Array, mask: jax.Array, mode: str = "token_mean") -> jax.Array:
  """Masked mean of per-token values (`aggregation_weights` says how)."""
  return jnp.sum(per_token * aggregation_weights(mask, mode))


def token_terms(logp, aux: dict, *, clip_low: float = 0.2, clip_high: float = 0.2,
                kl_coef: float = 0.0) -> jax.Array:
  """The GRPO loss per token, already weighted: its sum over [R, T] is the loss.

  aux: old [R, T] (rollout log-probs), adv [R, T] (advantages broadcast over tokens), weight
  [R, T] (`aggregation_weights`) and, when kl_coef > 0, ref [R, T]. Elementwise over tokens, so
  it is also the `token_fn` of the one-sweep kernel (`vlm_jax.logprobs.token_loss`).
  """
  pg, _, _ = clipped_surrogate(logp, aux["old"], aux["adv"], clip_low, clip_high, broadcast=False)
  if kl_coef:
    pg = pg + kl_coef * kl_k3(logp, aux["ref"])
  return aux["weight"] * pg


def token_aux(old_logp, ref_logp, advantages, mask, mode: str = "token_mean") -> dict:
  """The `aux` of `token_terms` from the usual GRPO arrays (ref_logp may be None)."""
  aux = {"old": old_logp.astype(jnp.float32),
         "adv": jnp.broadcast_to(advantages[:, None], old_logp.shape).astype(jnp.float32),
         "weight": aggregation_weights(mask, mode)}
  if ref_logp is not None:
    aux["ref"] = ref_logp.astype(jnp.float32)
  return aux


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, *, clip_low: float = 0.2,
              clip_high: float = 0.2, kl_coef: float = 0.0, mode: str = "token_mean",
              entropy=None):
  """L = agg(surrogate) + kl_coef * agg(k3); returns (L, diagnostics dict of scalars).

  ref_logp may be None when kl_coef == 0. Diagnostics: `diagnostics`.
  """
  aux = token_aux(old_logp, ref_logp, advantages, mask, mode)
  kl_coef = kl_coef if ref_logp is not None else 0.0
  loss = jnp.sum(token_terms(logp, aux, clip_low=clip_low, clip_high=clip_high, kl_coef=kl_coef))
  return loss, diagnostics(logp, old_logp, ref_logp, advantages, mask, clip_low=clip_low,
                           clip_high=clip_high, mode=mode, entropy=entropy)


def diagnostics(logp, old_logp, ref_logp, advantages, mask, *, clip_low: float = 0.2,
                clip_high: float = 0.2, mode: str = "token_mean", entropy=None) -> dict:
  """Scalars (no gradient): pg_loss, kl (with ref_logp), clip_frac (share of tokens on the
  clipped branch), ratio_mean / ratio_max / ratio_min, and entropy when given."""
  logp = jax.lax.stop_gradient(logp)
  pg, ratio, clipped = clipped_surrogate(logp, old_logp, advantages, clip_low, clip_high)
  stats = {"pg_loss": aggregate(pg, mask, mode)}
  if ref_logp is not None:
    stats["kl"] = aggregate(kl_k3(logp, ref_logp), mask, mode)
  m = mask.astype(bool)
  stats.update(
      clip_frac=aggregate(clipped.astype(jnp.float32), mask, "token_mean"),
      ratio_mean=aggregate(ratio, mask, "token_mean"),
      ratio_max=jnp.max(jnp.where(m, ratio, -jnp.inf)),
      ratio_min=jnp.min(jnp.where(m, ratio, jnp.inf)))
  if entropy is not None:
    stats["entropy"] = aggregate(entropy, mask, "token_mean")
  return jax.tree.map(jax.lax.stop_gradient, stats)
