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


@pytest.mark.parametrize("mode, with_ref, tied, sweep, shards", [
    ("token_mean", True, False, "sequence", 1), ("seq_mean_token_mean", False, False, "auto", 1),
    ("token_mean", True, True, "auto", 1), ("token_mean", True, False, "vocab", 4),
    ("seq_mean_token_mean", True, True, "vocab", 1)])
def test_training_loss_equals_plain_composition(mode, with_ref, tied, sweep, shards):
  """rl.train._loss (one-sweep kernel, either gradient sweep) = sequence_logprobs + grpo_loss:
  value, stats, grads."""
  import dataclasses
  from rl import train
  from rl.config import TrainConfig
  from vlm_jax import config as config_lib, logprobs, params as params_lib
  config = config_lib.get_config("tiny")
  config = dataclasses.replace(config, vision=None, architecture="qwen2", text=dataclasses.replace(
      config.text, mrope_section=None, vocab_size=512, tie_word_embeddings=tied))
  params = params_lib.init_params(config, jax.random.key(0))
  rng = np.random.RandomState(1)
  r, t, k = 4, 24, 9
  inputs = {"input_ids": jnp.asarray(rng.randint(0, 512, (r, t)), jnp.int32),
            "token_mask": jnp.ones((r, t), bool),
            "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (3, r, t))}
  mask = jnp.asarray(rng.rand(r, k) < 0.8, jnp.float32).at[3].set(0.0)  # row 3: no tokens
  logp0, _ = logprobs.sequence_logprobs(params, config, inputs, last=k)
  old = logp0 + jnp.asarray(rng.normal(0, 0.2, (r, k)), jnp.float32)
  ref = logp0 + jnp.asarray(rng.normal(0, 0.2, (r, k)), jnp.float32) if with_ref else None
  adv = jnp.asarray(rng.randn(r), jnp.float32)
  tc = TrainConfig(kl_coef=0.05, loss_agg=mode, clip_low=0.1, clip_high=0.3, logprob_sweep=sweep)
  head = None  # shards > 1: the LM head layout of a vocabulary-split mesh (tiles follow it)
  if shards > 1:
    if jax.device_count() < 8:
      pytest.skip("needs 8 (fake) devices")
    from vlm_jax import sharding
    head = sharding.head_sharding(sharding.parse_mesh(f"data={8 // shards},tensor={shards}"))

  def plain(p):
    logp, ent = logprobs.sequence_logprobs(p, config, inputs, chunk_t=7, last=k)
    loss, stats = grpo.grpo_loss(logp, old, ref, adv, mask, clip_low=0.1, clip_high=0.3,
                                 kl_coef=0.05, mode=mode, entropy=ent)
    return 0.5 * loss, stats

  (want, want_stats), want_g = jax.value_and_grad(plain, has_aux=True)(params)
  (got, got_stats), got_g = train._grad(params, config, inputs, mask, old, ref, adv,
                                        np.float32(0.5), tc, head)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert sorted(got_stats) == sorted(want_stats)
  for key in want_stats:
    np.testing.assert_allclose(got_stats[key], want_stats[key], rtol=1e-5, atol=1e-6, err_msg=key)
  flat_want = dict(jax.tree_util.tree_leaves_with_path(want_g))
  for path, g in jax.tree_util.tree_leaves_with_path(got_g):
    np.testing.assert_allclose(g, flat_want[path], atol=1e-5, rtol=1e-4, err_msg=str(path))
  head = got_g["text"]["embed"]["embedding"] if tied else got_g["text"]["lm_head"]["kernel"]
  assert float(jnp.abs(head).max()) > 1e-4
