"""Chunked log-prob / entropy kernel vs the naive full-logits computation (values and grads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlm_jax import logprobs

B, T, D, V = 2, 37, 16, 96


def _inputs(seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  hidden = jax.random.normal(k1, (B, T, D))
  w = jax.random.normal(k2, (D, V)) * 0.5
  targets = jax.random.randint(k3, (B, T), 0, V)
  return hidden, w, targets


@pytest.mark.parametrize("chunk_t, chunk_v", [(8, None), (37, 32), (5, 24), (128, 96)])
def test_values_match_naive(chunk_t, chunk_v):
  hidden, w, targets = _inputs()
  want = logprobs.naive_logprobs_and_entropy(hidden, w, targets)
  got = logprobs.logprobs_and_entropy(hidden, w, targets, chunk_t, chunk_v)
  for g, e in zip(got, want):
    np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_t, chunk_v", [(8, None), (5, 24)])
def test_gradients_match_naive(chunk_t, chunk_v):
  hidden, w, targets = _inputs(1)
  weights = jax.random.normal(jax.random.key(2), (B, T))

  def loss(fn, hidden, w):
    logp, ent = fn(hidden, w, targets)
    return jnp.sum(weights * logp) + 0.3 * jnp.sum(weights * ent)

  chunked = lambda h, w_, y: logprobs.logprobs_and_entropy(h, w_, y, chunk_t, chunk_v)
  want = jax.grad(lambda h, w_: loss(logprobs.naive_logprobs_and_entropy, h, w_), (0, 1))(hidden, w)
  got = jax.grad(lambda h, w_: loss(chunked, h, w_), (0, 1))(hidden, w)
  for g, e in zip(got, want):
    np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


def test_chunk_v_must_divide_vocab():
  hidden, w, targets = _inputs()
  with pytest.raises(ValueError, match="chunk_v"):
    logprobs.logprobs_and_entropy(hidden, w, targets, 8, 40)


def test_option_distribution_hand_values():
  # D = V-slot one-hot hidden: logits of letters A,B,C,D = columns 0..3 of w.
  w = jnp.eye(4) * jnp.log(jnp.array([1.0, 2.0, 1.0, 4.0]))  # logits log1, log2, log1, log4
  hidden = jnp.ones((2, 4))
  ids = jnp.array([[0, 1, 2, 3], [0, 1, 2, 3]])
  mask = jnp.array([[True, True, True, False], [True, True, True, True]])
  probs, entropy, p_correct = logprobs.option_distribution(hidden, w, ids, mask, jnp.array([1, 3]))
  np.testing.assert_allclose(probs[0], [0.25, 0.5, 0.25, 0.0], atol=1e-6)
  np.testing.assert_allclose(probs[1], [0.125, 0.25, 0.125, 0.5], atol=1e-6)
  np.testing.assert_allclose(entropy[0], -(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5)), atol=1e-6)
  np.testing.assert_allclose(p_correct, [0.5, 0.5], atol=1e-6)
