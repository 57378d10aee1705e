"""Token choice over a row of logits: the blocked argmax and the two-level Gumbel-max."""

import jax
import numpy as np
import pytest

from vlm_jax import token_choice


@pytest.mark.parametrize("vocab", [1000, 1024, 200, 100])
def test_blocked_argmax_is_first_index_of_max(vocab):
  """Ties inside a block, ties across blocks (the first wins), -inf and all-equal rows."""
  rng = np.random.RandomState(vocab)
  z = rng.randint(-3, 4, size=(6, vocab)).astype(np.float32)  # many ties
  z[1] = -np.inf
  z[1, vocab - 1] = 0.0
  z[2] = 5.0
  z[3, [vocab // 3, vocab - 2]] = 9.0
  z[4] = rng.randn(vocab)
  z[5, ::2] = -np.inf
  token, z_max = token_choice.argmax(jax.numpy.asarray(z))
  np.testing.assert_array_equal(np.asarray(token), np.argmax(z, -1))
  np.testing.assert_array_equal(np.asarray(z_max), z.max(-1))


@pytest.mark.parametrize("vocab", [300, 256])
def test_two_level_gumbel_max_samples_the_softmax(vocab):
  """`token_choice.gumbel_max` (a block by its mass, then an id inside it): frequencies over
  20000 rows match softmax(z) within 5 standard errors; -inf ids (masked, banned, and every id of some
  blocks) never come; a NaN row still gives an id in range."""
  rng = np.random.RandomState(vocab)
  z = rng.randn(vocab).astype(np.float32) * 2
  z[:128] = rng.randn(128) * 0.1  # block 0: many near-equal ids, most of the mass
  z[128:] = -np.inf
  z[130] = 0.5                    # block 1: one id, a larger logit but far less mass
  z[256:] = rng.randn(vocab - 256) * 2  # (vocab 300: a padded last block)
  z[::7] = -np.inf
  rows = 20000
  keys = jax.random.split(jax.random.key(0), rows)
  zz = jax.numpy.asarray(np.tile(z, (rows, 1)))
  tokens = np.asarray(jax.jit(token_choice.gumbel_max)(zz, keys))
  p = np.exp(z - z.max())
  p /= p.sum()
  freq = np.bincount(tokens, minlength=vocab) / rows
  assert (freq[p == 0] == 0).all()
  se = np.sqrt(p * (1 - p) / rows)
  assert (np.abs(freq - p) <= 5 * se + 1e-4).all(), np.abs(freq - p).max()
  nan = zz[:2].at[1, 3].set(np.nan)
  out = np.asarray(token_choice.gumbel_max(nan, keys[:2]))
  assert 0 <= out.min() and out.max() < vocab
