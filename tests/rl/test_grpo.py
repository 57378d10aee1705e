"""GRPO maths against hand-computed numbers and a finite-difference gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import grpo

jax.config.update("jax_enable_x64", False)


def test_group_advantages_hand_values():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
  a = grpo.group_advantages(r, 4, eps=0.0)
  # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735
  np.testing.assert_allclose(a[:4], [0.866025, -0.866025, -0.866025, 0.866025], atol=1e-5)
  np.testing.assert_allclose(grpo.group_advantages(r, 4)[4:], 0.0)  # equal rewards: no signal
  np.testing.assert_allclose(grpo.group_advantages(r, 4, scale_by_std=False)[:4],
                             [0.5, -0.5, -0.5, 0.5])


def test_clipped_surrogate_hand_values():
  logp = jnp.log(jnp.array([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1 (old logp = 0)
  old = jnp.zeros((1, 3))
  loss, ratio, clipped = grpo.clipped_surrogate(logp, old, jnp.array([2.0]), 0.2, 0.28)
  # A > 0: min(rho A, clip(rho) A): 1.5 -> clip 1.28 -> 2.56; 0.5 -> 1.0 (unclipped smaller);
  # 1.1 -> 2.2
  np.testing.assert_allclose(loss, [[-2.56, -1.0, -2.2]], atol=1e-6)
  assert clipped.tolist() == [[True, False, False]]
  loss, _, clipped = grpo.clipped_surrogate(logp, old, jnp.array([-1.0]), 0.2, 0.28)
  # A < 0: min(-rho, -clip(rho)): 1.5 -> -1.5; 0.5 -> clip 0.8 -> -0.8 (clipped smaller)
  np.testing.assert_allclose(loss, [[1.5, 0.8, 1.1]], atol=1e-6)
  assert clipped.tolist() == [[False, True, False]]


def test_k3_hand_values():
  logp = jnp.log(jnp.array([0.5, 0.25]))
  ref = jnp.log(jnp.array([0.25, 0.25]))
  # d = log(0.5) ; exp(d) - d - 1 = 0.5 + 0.693147 - 1
  np.testing.assert_allclose(grpo.kl_k3(logp, ref), [0.193147, 0.0], atol=1e-6)


def test_aggregation_modes():
  per = jnp.array([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0]])
  np.testing.assert_allclose(grpo.aggregate(per, mask, "token_mean"), 16.0 / 4)
  np.testing.assert_allclose(grpo.aggregate(per, mask, "seq_mean_token_mean"), (2.0 + 10.0) / 2)
  with pytest.raises(ValueError, match="unknown aggregation"):
    grpo.aggregate(per, mask, "sum")


def test_loss_and_diagnostics():
  logp = jnp.log(jnp.array([[1.5, 0.5], [1.0, 1.0]]))
  loss, stats = grpo.grpo_loss(logp, jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.array([2.0, 0.0]),
                               jnp.array([[1, 1], [1, 0]]), kl_coef=0.1)
  # tokens: (-2.4, -1.0, 0.0) -> mean -1.1333; k3 with ref 0: exp(-logp) + logp - 1
  k3 = [1 / 1.5 + np.log(1.5) - 1, 2 + np.log(0.5) - 1, 0.0]
  np.testing.assert_allclose(stats["pg_loss"], -3.4 / 3, atol=1e-6)
  np.testing.assert_allclose(stats["kl"], np.mean(k3), atol=1e-6)
  np.testing.assert_allclose(loss, -3.4 / 3 + 0.1 * np.mean(k3), atol=1e-6)
  np.testing.assert_allclose(stats["clip_frac"], 1 / 3, atol=1e-6)
  np.testing.assert_allclose(stats["ratio_max"], 1.5, atol=1e-6)


@pytest.mark.parametrize("mode", grpo.AGGREGATIONS)
def test_gradient_matches_finite_difference(mode):
  jax.config.update("jax_enable_x64", True)
  try:
    rng = np.random.RandomState(0)
    logp = jnp.asarray(np.log(rng.uniform(0.2, 0.9, (3, 4))))
    old = logp + jnp.asarray(rng.normal(0, 0.1, (3, 4)))
    ref = logp + jnp.asarray(rng.normal(0, 0.1, (3, 4)))
    adv = jnp.asarray([1.0, -0.5, 0.3])
    mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    f = lambda x: grpo.grpo_loss(x, old, ref, adv, mask, kl_coef=0.05, mode=mode)[0]
    grad = jax.grad(f)(logp)
    eps = 1e-6
    for idx in [(0, 0), (1, 1), (2, 3), (0, 3)]:
      bump = jnp.zeros_like(logp).at[idx].set(eps)
      fd = (f(logp + bump) - f(logp - bump)) / (2 * eps)
      np.testing.assert_allclose(grad[idx], fd, atol=1e-7)
    assert grad[0, 3] == 0.0  # masked token
  finally:
    jax.config.update("jax_enable_x64", False)
