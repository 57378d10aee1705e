"""GRPO maths as small pure functions (no model, no I/O). Shapes: R rollouts = P prompts x G,
T response tokens; `mask` [R, T] is 1 on response tokens that count.

Conventions (documented in each function): advantages are per group of G consecutive rollouts
(the sampler's row order b*G + j), std is the unbiased sample std (as TRL and verl), and every
per-token quantity is float32. Masked tokens are selected away with `jnp.where` before any
`exp`, never multiplied by 0: a masked column holds arbitrary log-probs (prompt, padding), and
0 * inf (or a gradient through an overflowing exp) is NaN. Exponents of log-prob differences are
clamped to +-`EXP_CLAMP` (as verl's `low_var_kl` and policy loss): finite for any input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token_mean", "seq_mean_token_mean")
EXP_CLAMP = 20.0  # |log-ratio| bound before exp (verl): exp(20) ~ 5e8, far from float32 overflow


def _masked_exp_arg(d: jax.Array, mask) -> jax.Array:
  """d where `mask` (0 elsewhere), clamped to [-EXP_CLAMP, EXP_CLAMP]: a safe exp argument
  (its gradient is 0 where masked or clamped)."""
  if mask is not None:
    d = jnp.where(mask, d, 0.0)
  return jnp.clip(d, -EXP_CLAMP, EXP_CLAMP)


def group_advantages(rewards: jax.Array, group_size: int, eps: float = 1e-6,
                     scale_by_std: bool = True, valid: jax.Array | None = None) -> jax.Array:
  """A_i = (r_i - mean_g(r)) / (std_g(r) + eps), over each group of `group_size` rows.

  rewards [R] with R = P * G; std_g is the unbiased sample std (ddof=1); with
  scale_by_std=False, A_i = r_i - mean_g(r) (Dr. GRPO). Groups with equal rewards get exactly 0
  (a float32 mean of 0.1s is not 0.1, and dividing that rounding by a std of the same size
  would give every row of the group the same non-zero advantage).
  valid: bool [R], rows whose reward is known (e.g. the judge answered); the others get 0 and
  the group's mean and std are over its valid rows only.
  """
  r = rewards.astype(jnp.float32).reshape(-1, group_size)
  v = (jnp.ones_like(r, bool) if valid is None else jnp.asarray(valid, bool).reshape(r.shape))
  n = v.sum(-1, keepdims=True)
  mean = jnp.where(v, r, 0.0).sum(-1, keepdims=True) / jnp.maximum(n, 1)
  spread = (jnp.max(jnp.where(v, r, -jnp.inf), -1, keepdims=True)
            > jnp.min(jnp.where(v, r, jnp.inf), -1, keepdims=True))
  centred = jnp.where(v & spread, r - mean, 0.0)
  if scale_by_std:
    std = jnp.sqrt(jnp.sum(centred ** 2, -1, keepdims=True) / jnp.maximum(n - 1, 1))
    centred = centred / (std + eps)
  return centred.reshape(-1)


def clipped_surrogate(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                      clip_low: float = 0.2, clip_high: float = 0.2, broadcast: bool = True,
                      mask=None):
  """Per-token loss -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A), rho = exp(logp - old).

  logp, old_logp [R, T]; advantages [R] (broadcast over tokens), or [R, T] with
  broadcast=False. mask [R, T] (optional): rho = 1 on masked tokens, whatever their log-probs.
  logp - old is clamped to +-EXP_CLAMP (verl). Returns (loss [R, T], ratio [R, T], clipped
  [R, T] bool: the clipped branch was the smaller one).
  """
  ratio = jnp.exp(_masked_exp_arg(logp - old_logp, mask))
  adv = advantages[:, None] if broadcast else advantages
  unclipped = ratio * adv
  clipped_ratio = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  clipped = clipped_ratio * adv
  return -jnp.minimum(unclipped, clipped), ratio, clipped < unclipped


def kl_k3(logp: jax.Array, ref_logp: jax.Array, mask=None) -> jax.Array:
  """k3 estimator of KL(pi || pi_ref) per token: exp(d) - d - 1 (>= 0), d = ref - logp clamped
  to +-EXP_CLAMP (verl's low_var_kl; beyond it the term stops growing and has no gradient).
  mask [R, T] (optional): 0 on masked tokens, whatever their log-probs."""
  d = _masked_exp_arg(ref_logp - logp, mask)
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
  """Masked mean of per-token values (`aggregation_weights` says how); masked values are
  selected away, so a non-finite one there does not reach the result."""
  return jnp.sum(jnp.where(mask.astype(bool), per_token * aggregation_weights(mask, mode), 0.0))


def mean_abs_diff(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """Token mean of |a - b| over `mask` (e.g. sampler vs training log-probs of one policy)."""
  return aggregate(jnp.abs(jnp.where(mask.astype(bool), a - b, 0.0)), mask, "token_mean")


def token_terms(logp, aux: dict, *, clip_low: float = 0.2, clip_high: float = 0.2,
                kl_coef: float = 0.0, on_policy: bool = False) -> jax.Array:
  """The GRPO loss per token, already weighted: its sum over [R, T] is the loss.

  aux: old [R, T] (the behaviour policy's log-probs), adv [R, T] (advantages broadcast over
  tokens), weight [R, T] (`aggregation_weights`; tokens of weight 0 are masked) and, when
  kl_coef > 0, ref [R, T]. on_policy: old = stop_gradient(logp), so the ratio is exactly 1 and
  its gradient is that of logp (TRL and verl when a rollout batch gets one update; "old" is
  then not read). Elementwise over tokens, so it is also the `token_fn` of the one-sweep
  kernel (`vlm_jax.logprobs.token_loss`).
  """
  mask = aux["weight"] > 0
  old = jax.lax.stop_gradient(logp) if on_policy else aux["old"]
  pg, _, _ = clipped_surrogate(logp, old, aux["adv"], clip_low, clip_high, broadcast=False,
                               mask=mask)
  if kl_coef:
    pg = pg + kl_coef * kl_k3(logp, aux["ref"], mask)
  return jnp.where(mask, aux["weight"] * pg, 0.0)


def token_aux(old_logp, ref_logp, advantages, mask, mode: str = "token_mean") -> dict:
  """The `aux` of `token_terms` from the usual GRPO arrays (old_logp None: on-policy, see
  `token_terms`; ref_logp may be None)."""
  aux = {"adv": jnp.broadcast_to(advantages[:, None], mask.shape).astype(jnp.float32),
         "weight": aggregation_weights(mask, mode)}
  if old_logp is not None:
    aux["old"] = old_logp.astype(jnp.float32)
  if ref_logp is not None:
    aux["ref"] = ref_logp.astype(jnp.float32)
  return aux


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, *, clip_low: float = 0.2,
              clip_high: float = 0.2, kl_coef: float = 0.0, mode: str = "token_mean",
              entropy=None):
  """L = agg(surrogate) + kl_coef * agg(k3); returns (L, diagnostics dict of scalars).

  ref_logp may be None when kl_coef == 0; old_logp None: on-policy (`token_terms`).
  Diagnostics: `diagnostics`.
  """
  aux = token_aux(old_logp, ref_logp, advantages, mask, mode)
  kl_coef = kl_coef if ref_logp is not None else 0.0
  loss = jnp.sum(token_terms(logp, aux, clip_low=clip_low, clip_high=clip_high, kl_coef=kl_coef,
                             on_policy=old_logp is None))
  return loss, diagnostics(logp, old_logp, ref_logp, advantages, mask, clip_low=clip_low,
                           clip_high=clip_high, mode=mode, entropy=entropy)


def diagnostics(logp, old_logp, ref_logp, advantages, mask, *, clip_low: float = 0.2,
                clip_high: float = 0.2, mode: str = "token_mean", entropy=None) -> dict:
  """Scalars (no gradient): pg_loss, kl (with ref_logp), clip_frac (share of tokens on the
  clipped branch), ratio_mean / ratio_max / ratio_min, and entropy when given. old_logp None:
  on-policy (ratio 1)."""
  logp = jax.lax.stop_gradient(logp)
  m = mask.astype(bool)
  old_logp = logp if old_logp is None else old_logp
  pg, ratio, clipped = clipped_surrogate(logp, old_logp, advantages, clip_low, clip_high, mask=m)
  stats = {"pg_loss": aggregate(pg, mask, mode)}
  if ref_logp is not None:
    stats["kl"] = aggregate(kl_k3(logp, ref_logp, m), mask, mode)
  stats.update(
      clip_frac=aggregate(clipped.astype(jnp.float32), mask, "token_mean"),
      ratio_mean=aggregate(ratio, mask, "token_mean"),
      ratio_max=jnp.max(jnp.where(m, ratio, -jnp.inf)),
      ratio_min=jnp.min(jnp.where(m, ratio, jnp.inf)))
  if entropy is not None:
    stats["entropy"] = aggregate(entropy, mask, "token_mean")
  return jax.tree.map(jax.lax.stop_gradient, stats)
