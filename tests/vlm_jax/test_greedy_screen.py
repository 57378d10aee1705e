"""The bfloat16-screened greedy argmax: its bound holds on this backend, its token is the float32
argmax (ties, banned ids, odd vocabularies, fallbacks), and the sampler gives the same tokens
with it as without."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vlm_jax
from vlm_jax import greedy_screen, sampler
from vlm_jax.sampler import Sampler, SamplingParams
from tests.vlm_jax import hf_models


def _head(rng, dim, vocab, scale=0.1):
  """A [D, V] head whose column norms vary 100x, as a trained head's do."""
  return (rng.randn(dim, vocab) * scale * np.exp(rng.uniform(-2.3, 2.3, vocab))).astype(np.float32)


def _full(h, w, mask):
  return np.asarray(sampler._argmax(jnp.asarray(h) @ jnp.asarray(w) + mask)[0])


@pytest.mark.parametrize("dim,scale", [(64, 1.0), (512, 0.02), (1536, 3.0)])
def test_bound_covers_the_bfloat16_logits(dim, scale):
  """|s - z| <= B against float64 logits: the backend's bfloat16 dot has exact products and
  float32 accumulation, which the bound assumes (a coarser dot would fail here)."""
  rng = np.random.RandomState(dim)
  w = _head(rng, dim, 3000, scale)
  h = (rng.randn(8, dim) * np.exp(rng.uniform(-3, 3, (8, 1)))).astype(np.float32)
  h[0, : dim // 2] *= 1e-6  # mixed magnitudes inside a row
  s, bound = greedy_screen.screen(jnp.asarray(h), greedy_screen.tables(jnp.asarray(w)))
  z = h.astype(np.float64) @ w.astype(np.float64)
  err = np.abs(np.asarray(s, np.float64) - z)
  assert (err <= np.asarray(bound)).all()
  assert (err > 0).any() and np.median(np.asarray(bound)) < 0.05 * np.abs(z).std()  # not vacuous


@pytest.mark.parametrize("vocab", [1000, 4096, 4099, 130])
def test_screened_argmax_is_the_float32_argmax(vocab):
  rng = np.random.RandomState(vocab)
  dim = 96
  w = _head(rng, dim, vocab)
  w[:, vocab // 2] = w[:, 7]  # an exact tie across blocks: the first index wins
  w[:, 9] = w[:, 7]           # and inside a block
  h = rng.randn(16, dim).astype(np.float32) * 4
  scores = h @ w
  h[3] = np.linalg.lstsq(w[:, [7, 11]].T, [5.0, 5.0], rcond=None)[0]  # near-tie 7 vs 11
  t = greedy_screen.tables(jnp.asarray(w))
  banned = jnp.asarray([int(np.argmax(scores[0])), vocab + 5])  # out of range: ignored
  for ids in (jnp.asarray([vocab + 1]), banned):
    mask = greedy_screen.ban_mask(vocab, ids)
    got = np.asarray(jax.jit(greedy_screen.argmax)(jnp.asarray(h), t, mask))
    np.testing.assert_array_equal(got, _full(h, w, mask))
  assert got[0] != np.argmax(scores[0])


def test_bfloat16_exact_inputs_at_a_small_width():
  """h and W already bfloat16 numbers (zero residuals) and D = 8: the bound is then only the
  summation terms, and near-equal logits must still resolve to the float32 argmax."""
  rng = np.random.RandomState(1)
  bf = lambda a: np.array(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32))
  w = bf(rng.randn(8, 700))
  w[:, 40] = w[:, 300] = 0.0
  w[0, 40] = w[0, 300] = 10.0  # an exact tie at the top for rows along e0: 40 wins
  h = bf(rng.randn(32, 8) * 3)
  h[:4] = bf(np.eye(8)[0] * 3 + rng.randn(4, 8) * 0.01)
  t = greedy_screen.tables(jnp.asarray(w))
  assert float(jnp.max(t["wr_norm"])) == 0.0
  mask = greedy_screen.ban_mask(700, jnp.asarray([700]))
  got = np.asarray(greedy_screen.argmax(jnp.asarray(h), t, mask))
  np.testing.assert_array_equal(got, _full(h, w, mask))
  assert (got[:4] == 40).all()


def test_crowded_and_nonfinite_rows_fall_back_to_the_full_head():
  """More columns near the top than `CANDIDATES` (or in more than `BLOCKS` blocks), or a NaN
  row: the full float32 head decides, so the token is still its argmax."""
  rng = np.random.RandomState(0)
  dim, vocab = 64, 4096
  w = _head(rng, dim, vocab, 0.05)
  spread = rng.choice(vocab, 3 * greedy_screen.CANDIDATES, replace=False)
  w[:, spread] = w[:, :1] + 1e-7 * rng.randn(dim, len(spread))  # all within the bound
  h = rng.randn(4, dim).astype(np.float32)
  h[0] = w[:, 0] * 50  # row 0's top is the crowd
  h[2, 5] = np.nan
  t = greedy_screen.tables(jnp.asarray(w))
  s, bound = greedy_screen.screen(jnp.asarray(h[:1]), t)
  crowd = np.asarray(s + bound >= jnp.max(s - bound))
  assert crowd.sum() > greedy_screen.CANDIDATES
  mask = greedy_screen.ban_mask(vocab, jnp.asarray([vocab]))
  got = np.asarray(greedy_screen.argmax(jnp.asarray(h), t, mask))
  np.testing.assert_array_equal(got, _full(h, w, mask))


@pytest.fixture(scope="module")
def lively(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("lively"))
  hf_models.save_hf_model("windows", path, weight_scale=6.0)
  return vlm_jax.load_hf(path)


def test_sampler_tokens_are_the_same_with_and_without_the_screen(lively):
  """Greedy, tokens only, with vision ids banned and a stop token: screened == float32 head,
  and the screen tables are made once per head."""
  config, params = lively
  batch = hf_models.build_batch([[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10],
                                 [6]], config.vision.patch_dim)
  on = Sampler(params, config, pad_id=0)
  off = Sampler(params, config, pad_id=0, greedy_screen=False)
  assert on.greedy_screen and not off.greedy_screen
  free = off(batch, SamplingParams(max_new_tokens=30, logprobs=False))
  stop = int(free.tokens[1, 4])
  for kw in ({}, {"stop_token_ids": (stop,)}):
    sp = SamplingParams(max_new_tokens=30, logprobs=False, **kw)
    a, b = on(batch, sp), off(batch, sp)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.lengths, b.lengths)
  assert (a.lengths < 30).any()
  tables = on._screen
  on(batch, sp)
  assert on._screen is tables


def test_auto_screen_needs_a_float32_head(lively):
  config, params = lively
  assert Sampler(params, config).greedy_screen
  half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  assert not Sampler(half, config).greedy_screen
  with pytest.raises(ValueError, match="greedy_screen"):
    Sampler(params, config, greedy_screen="yes")
