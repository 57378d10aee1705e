"""The bfloat16-screened greedy argmax: its bound holds on this backend, its token is the float32
argmax (ties, banned ids, odd vocabularies, tiny rows), each fallback guard fires on its own
case, and the sampler gives the same tokens with it as without."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vlm_jax
from vlm_jax import decode_step, greedy_screen, token_choice
from vlm_jax.sampler import Sampler, SamplingParams
from tests.vlm_jax import hf_models

CROWD_GUARDS = ("blocks", "candidates")


def _head(rng, dim, vocab, scale=0.1):
  """A [D, V] head whose column norms vary 100x, as a trained head's do."""
  return (rng.randn(dim, vocab) * scale * np.exp(rng.uniform(-2.3, 2.3, vocab))).astype(np.float32)


def _tables(w):
  return greedy_screen.tables(jnp.asarray(w.T), keep_rows=True)


def _bf(a):
  return np.array(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32))


def _full(h, w, mask):
  return np.asarray(token_choice.argmax(jnp.asarray(h) @ jnp.asarray(w) + mask)[0])


def _screened(h, w, mask, poisoned_fallback=False):
  """(token, sound) of the screen alone, and the token `argmax` returns. A poisoned fallback
  returns constant logits (token 0), so a step that fell back shows."""
  t = _tables(w)
  token, sound = jax.jit(greedy_screen.candidates)(jnp.asarray(h), t, mask)
  logits = ((lambda x: jnp.zeros((x.shape[0], w.shape[1]))) if poisoned_fallback
            else (lambda x: x @ jnp.asarray(w)))
  chosen = jax.jit(greedy_screen.argmax, static_argnums=3)(jnp.asarray(h), t, mask, logits)
  return np.asarray(token), np.asarray(sound), np.asarray(chosen)


@pytest.mark.parametrize("dim,scale,exact", [(64, 1.0, False), (512, 0.02, False),
                                             (1536, 3.0, False), (1024, 1.0, True)])
def test_bound_covers_the_bfloat16_logits(dim, scale, exact):
  """|s - z| <= B against the float32 logits (the reference the bound is for) and float64 ones:
  the backend's bfloat16 dot has exact products and float32 accumulation, as the bound assumes.
  With bfloat16-exact inputs the residual terms vanish and only the summation terms remain."""
  rng = np.random.RandomState(dim)
  w = _head(rng, dim, 3000, scale)
  h = (rng.randn(8, dim) * np.exp(rng.uniform(-3, 3, (8, 1)))).astype(np.float32)
  h[0, : dim // 2] *= 1e-6  # mixed magnitudes inside a row
  if exact:
    w, h = _bf(w), _bf(h)
  s, bound = greedy_screen.screen(jnp.asarray(h), _tables(w))
  s, bound = np.asarray(s, np.float64), np.asarray(bound)
  z32 = np.asarray(jnp.asarray(h) @ jnp.asarray(w), np.float64)
  z64 = h.astype(np.float64) @ w.astype(np.float64)
  for z in (z32, z64):
    err = np.abs(s - z)
    assert (err <= bound).all() and (err > 0).any()
  assert np.median(bound) < 0.05 * np.abs(z64).std()  # not vacuous


def test_tiny_rows_keep_their_bound():
  """Rows of ~1e-18 (normal float32, but their squares flush to zero on XLA CPU): the norms
  are taken on rescaled entries, so the bound keeps its size and the token is right."""
  u7 = 2.0 ** -7  # an order the bfloat16 screen gets wrong: s ranks column 1 first
  base = np.array([1.5 + .45 * u7] * 4 + [1.5 + u7 - .45 * u7] + [1.5 - .45 * u7] * 3)
  w = np.zeros((8, 2), np.float32)
  w[:4, 0] = w[4:, 1] = 1
  mask = greedy_screen.ban_mask(2, jnp.asarray([2]))
  for scale in (1.0, 2.0 ** -60, 2.0 ** -70):
    h = (base * scale).astype(np.float32)[None]
    s, bound = greedy_screen.screen(jnp.asarray(h), _tables(w))
    assert float(s[0, 1]) > float(s[0, 0])  # the screen alone would pick column 1
    _, _, chosen = _screened(h, w, mask)
    assert chosen.tolist() == _full(h, w, mask).tolist() == [0]


_B = greedy_screen.BLOCK


@pytest.mark.parametrize("others", [[1], [_B + 3], [b * _B + 3 for b in range(1, 17)]],
                         ids=["one_block", "two_blocks", "seventeen_blocks"])
def test_the_bound_overrules_the_screens_order(others):
  """bfloat16 ranks runners-up first by more than their own (tiny) bound: column 0's weights
  round down by 0.45 bfloat16 ulps, the `others` are bfloat16-exact and 1 ulp higher. Only
  column 0's bound keeps it in play: within its block, at block level, and (with 17 blocks in
  play, more than `BLOCKS`) by sending the step to the full head. A screen without the column
  bounds or without the block bounds returns a runner-up."""
  dim, u7 = 8, 2.0 ** -7
  w = np.zeros((dim, 18 * _B), np.float32)
  w[:, 0] = 1 + 0.45 * u7
  w[:, others] = 1
  w[0, others] += u7
  mask = greedy_screen.ban_mask(w.shape[1], jnp.asarray([w.shape[1]]))
  for scale in (1.0, 2.0 ** -60):
    h = np.full((1, dim), scale, np.float32)
    s, _ = greedy_screen.screen(jnp.asarray(h), _tables(w))
    assert (np.asarray(s[0, others]) > float(s[0, 0])).all()  # the screen's order
    crowded = len(others) + 1 > greedy_screen.BLOCKS  # blocks in play, column 0's too
    token, sound, chosen = _screened(h, w, mask, poisoned_fallback=not crowded)
    assert sound.tolist() == [not crowded]
    assert chosen.tolist() == _full(h, w, mask).tolist() == [0]


@pytest.mark.parametrize("vocab", [1000, 4096, 4099, 130])
def test_screened_argmax_is_the_float32_argmax(vocab):
  """Exact ties at the top across blocks and inside one (the first index wins), a near-tie,
  banned ids, vocabularies not a multiple of 128; every row decided by the screen itself."""
  rng = np.random.RandomState(vocab)
  dim = 96
  w = _head(rng, dim, vocab)
  w[:, 7] = rng.randn(dim) * 3  # the largest column: rows along it have it on top
  w[:, vocab // 2] = w[:, 9] = w[:, 7]
  w[:, 11] = w[:, 7] * (1 - 1e-5)  # a near-tie inside the screen's bound, below 7's logit
  h = rng.randn(16, dim).astype(np.float32) * 4
  h[:4] = w[:, 7] * rng.uniform(0.5, 2, (4, 1))
  scores = np.asarray(jnp.asarray(h) @ jnp.asarray(w))  # the float32 logits
  assert np.isin(np.argmax(scores[:4], -1), [7, 9, vocab // 2]).all()  # the tied columns win
  banned = jnp.asarray([7, int(np.argmax(scores[5])), vocab + 5])  # out of range: ignored
  for ids in (jnp.asarray([vocab + 1]), banned):
    mask = greedy_screen.ban_mask(vocab, ids)
    token, sound, chosen = _screened(h, w, mask, poisoned_fallback=True)
    assert sound.all() and (token != 0).all()  # the screen decided: no fallback
    np.testing.assert_array_equal(token, _full(h, w, mask))
    np.testing.assert_array_equal(chosen, token)
  assert np.isin(token[:4], [9, vocab // 2]).all()  # 7 banned: one of its copies
  assert token[5] != np.argmax(scores[5])


def _crowd(kind: str):
  """A row whose top is a crowd of near-equal columns that only one guard catches: 17
  columns in 17 blocks (more blocks than `BLOCKS`, at most one candidate per kept block) or
  20 columns in 2 blocks (more candidates than `CANDIDATES`)."""
  rng = np.random.RandomState(3)
  dim, vocab = 64, 4096
  w = _head(rng, dim, vocab, 0.05)
  if kind == "blocks":
    crowd = np.arange(greedy_screen.BLOCKS + 1) * greedy_screen.BLOCK + 5
  else:
    crowd = np.arange(greedy_screen.CANDIDATES + 4) * 5 + 2 * greedy_screen.BLOCK
  top = rng.randn(dim).astype(np.float32)
  w[:, crowd] = top[:, None] + 1e-6 * rng.randn(dim, len(crowd))
  h = (top * 10)[None].astype(np.float32)
  return h, w


@pytest.mark.parametrize("kind", ["blocks", "candidates", "nan"])
def test_each_fallback_guard_fires_on_its_own_case(kind):
  """A crowd too wide for the kept blocks, a crowd of too many candidates, a NaN row: the
  screen says it is not sure, and the full float32 head decides (the same token as it)."""
  if kind == "nan":  # 8 padding columns: XLA's max skips NaN, so tau is -inf and the
    rng = np.random.RandomState(0)  # padding (-inf) would pass the crowd guards
    w = _head(rng, 64, 1016)
    h = rng.randn(1, 64).astype(np.float32)
    h[0, 5] = np.nan
  else:
    h, w = _crowd(kind)
    s, bound = greedy_screen.screen(jnp.asarray(h), _tables(w))
    near = np.asarray(s + bound >= jnp.max(s - bound))[0]
    blocks = np.unique(np.nonzero(near)[0] // greedy_screen.BLOCK)
    if kind == "blocks":  # only the block count is over its limit
      assert len(blocks) > greedy_screen.BLOCKS and near.sum() <= len(blocks) + 1
    else:
      assert near.sum() > greedy_screen.CANDIDATES and len(blocks) <= greedy_screen.BLOCKS
  mask = greedy_screen.ban_mask(w.shape[1], jnp.asarray([w.shape[1]]))
  _, sound, chosen = _screened(h, w, mask)
  assert not sound.any()
  np.testing.assert_array_equal(chosen, _full(h, w, mask))


@pytest.fixture(scope="module", params=["windows", "base"], ids=["tied", "untied"])
def lively(request, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("lively"))
  hf_models.save_hf_model(request.param, path, weight_scale=6.0)
  return vlm_jax.load_hf(path)


def test_sampler_tokens_are_the_same_with_and_without_the_screen(lively):
  """Greedy, tokens only, with vision ids banned and a stop token: screened == float32 head.
  The tables are made once per head (0.5x the head's bytes tied, 1.5x untied) and remade when
  the params change."""
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
  assert (a.lengths < 30).any() and len(np.unique(free.tokens)) > 5
  tables = on._derived.held("screen")
  head = decode_step.head_array(params, config)
  ratio = sum(tables[k].nbytes for k in ("wb", "rows") if k in tables) / head.nbytes
  assert ratio == pytest.approx(0.5 if config.text.tie_word_embeddings else 1.5, abs=0.01)
  on(batch, sp)
  assert on._derived.held("screen") is tables
  on.params = jax.tree.map(lambda x: x * 1.0, params)
  np.testing.assert_array_equal(on(batch, sp).tokens, a.tokens)
  assert on._derived.held("screen") is not tables


def test_auto_screen_needs_a_float32_head(lively):
  config, params = lively
  assert Sampler(params, config).greedy_screen
  half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  assert not Sampler(half, config).greedy_screen
  with pytest.raises(ValueError, match="greedy_screen"):
    Sampler(params, config, greedy_screen="yes")
  with pytest.raises(ValueError, match="greedy decoding without log-probs"):
    decode_step.Spec(4, 1, True, 0, False, True, screen=True)
