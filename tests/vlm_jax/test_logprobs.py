"""Chunked log-prob / entropy kernel vs the naive full-logits computation (values and grads)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlm_jax import logprobs, sharding

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


# sweep: "sequence" chunks the gradient over tokens, "vocab" over vocabulary tiles (shards: the
# [D, S, V/S] view of a vocabulary-split head; 97 and shards 2 of 94 leave overlapping tiles)
SWEEPS = [(8, None, "sequence", 1), (5, 24, "sequence", 1), (8, None, "vocab", 1),
          (1, None, "vocab", 1), (5, None, "vocab", 3), (37, None, "vocab", 2)]


@pytest.mark.parametrize("chunk_t, chunk_v, sweep, shards", SWEEPS)
def test_gradients_match_naive(chunk_t, chunk_v, sweep, shards):
  hidden, w, targets = _inputs(1)
  weights = jax.random.normal(jax.random.key(2), (B, T))

  def loss(fn, hidden, w):
    logp, ent = fn(hidden, w, targets)
    return jnp.sum(weights * logp) + 0.3 * jnp.sum(weights * ent)

  chunked = lambda h, w_, y: logprobs.logprobs_and_entropy(h, w_, y, chunk_t, chunk_v, sweep,
                                                          shards)
  want = jax.grad(lambda h, w_: loss(logprobs.naive_logprobs_and_entropy, h, w_), (0, 1))(hidden, w)
  got = jax.grad(lambda h, w_: loss(chunked, h, w_), (0, 1))(hidden, w)
  for g, e in zip(got, want):
    np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


def _grpo_like(logp, ent, aux):
  """A nonlinear per-token loss of log p and entropy (ratio, clip, k3 KL, entropy bonus)."""
  ratio = jnp.exp(logp - aux["old"])
  pg = -jnp.minimum(ratio * aux["adv"], jnp.clip(ratio, 0.8, 1.2) * aux["adv"])
  d = aux["ref"] - logp
  return aux["weight"] * (pg + 0.1 * (jnp.exp(d) - d - 1.0) - 0.01 * ent)


@pytest.mark.parametrize("chunk_t, chunk_v, sweep, shards", SWEEPS + [(37, 32, "sequence", 1)])
def test_token_loss_matches_naive(chunk_t, chunk_v, sweep, shards):
  """The one-sweep value + gradient kernel = autodiff through the full logits."""
  hidden, w, targets = _inputs(3)
  keys = jax.random.split(jax.random.key(4), 4)
  naive_logp, _ = logprobs.naive_logprobs_and_entropy(hidden, w, targets)
  aux = {"old": naive_logp + 0.3 * jax.random.normal(keys[0], (B, T)),
         "ref": naive_logp + 0.3 * jax.random.normal(keys[1], (B, T)),
         "adv": jax.random.normal(keys[2], (B, T)),
         "weight": jax.random.uniform(keys[3], (B, T)) / (B * T)}

  def naive(h, w_):
    logp, ent = logprobs.naive_logprobs_and_entropy(h, w_, targets)
    return jnp.sum(_grpo_like(logp, ent, aux))

  fused = jax.jit(lambda h, w_: logprobs.token_loss(h, w_, targets, _grpo_like, aux, chunk_t,
                                                    chunk_v, sweep, shards))
  loss, logp, ent = fused(hidden, w)
  np.testing.assert_allclose(loss, naive(hidden, w), rtol=1e-5, atol=1e-6)
  want_logp, want_ent = logprobs.naive_logprobs_and_entropy(hidden, w, targets)
  np.testing.assert_allclose(logp, want_logp, atol=1e-5)
  np.testing.assert_allclose(ent, want_ent, atol=1e-5)
  want = jax.grad(naive, (0, 1))(hidden, w)
  # a scaled cotangent (e.g. a loss weight outside) must scale the gradient
  got = jax.jit(jax.grad(lambda h, w_: 3.0 * fused(h, w_)[0], (0, 1)))(hidden, w)
  assert jnp.abs(want[0]).max() > 1e-3 and jnp.abs(want[1]).max() > 1e-3
  for g, e in zip(got, want):
    np.testing.assert_allclose(g, 3.0 * e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vocab", [97, 94])
def test_vocab_sweep_with_overlapping_tiles(vocab):
  """Tile sizes that do not divide the (per-shard) vocabulary: the last tile overlaps."""
  k1, k2, k3 = jax.random.split(jax.random.key(vocab), 3)
  hidden, w = jax.random.normal(k1, (B, T, D)), jax.random.normal(k2, (D, vocab)) * 0.5
  targets = jax.random.randint(k3, (B, T), 0, vocab)
  shards = 1 if vocab % 2 else 2
  assert (vocab // shards) % logprobs._tile_cols(vocab // shards, B * T * shards,
                                                 B * 3 * vocab)
  loss = lambda fn: lambda h, w_: jnp.sum(jnp.sin(fn(h, w_)[0])) + jnp.sum(jnp.cos(fn(h, w_)[1]))
  want = jax.grad(loss(lambda h, w_: logprobs.naive_logprobs_and_entropy(h, w_, targets)),
                  (0, 1))(hidden, w)
  got = jax.grad(loss(lambda h, w_: logprobs.logprobs_and_entropy(
      h, w_, targets, 3, sweep="vocab", vocab_shards=shards)), (0, 1))(hidden, w)
  for g, e in zip(got, want):
    np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_vocab_sweep_on_a_vocabulary_split_head_gathers_no_weights():
  """LM head split over `tensor`: the vocab sweep's tiles stay on their devices (no all-gather
  of the [D, V] weight or its gradient), and the gradients equal the single-device ones."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from vlm_jax import sharding
  mesh = sharding.parse_mesh("data=2,tensor=4")
  hidden, w, targets = _inputs(6)
  aux = {"weight": jnp.ones((B, T)) / (B * T)}
  fn = lambda lp, e, a: -a["weight"] * (lp + 0.1 * e)
  grad = lambda shards: jax.jit(jax.grad(lambda h, w_: logprobs.token_loss(
      h, w_, targets, fn, aux, 8, sweep="vocab", vocab_shards=shards)[0], (0, 1)))
  want = grad(1)(hidden, w)
  w_sharded = jax.device_put(w, NamedSharding(mesh, P(None, "tensor")))
  h_sharded = jax.device_put(hidden, NamedSharding(mesh, P("data")))
  compiled = grad(4).lower(h_sharded, w_sharded).compile()
  hlo = compiled.as_text()
  gathers = [line for line in hlo.splitlines() if "all-gather(" in line and f",{V}]" in line]
  assert not gathers, gathers[:3]
  got = compiled(h_sharded, w_sharded)
  assert got[1].sharding.spec == P(None, "tensor")
  for g, e in zip(got, want):
    np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sweep", ["sequence", "vocab"])
def test_empty_sequences_give_zero_gradients(sweep):
  hidden, w, targets = jnp.zeros((B, 0, D)), jnp.ones((D, V)), jnp.zeros((B, 0), jnp.int32)
  gh, gw = jax.grad(lambda h, w_: logprobs.token_loss(h, w_, targets, lambda lp, e, a: lp, {}, 8,
                                                      sweep=sweep)[0], (0, 1))(hidden, w)
  assert gh.shape == (B, 0, D) and gw.shape == (D, V) and not jnp.any(gw)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
@pytest.mark.parametrize("sweep", ["sequence", "vocab"])
@pytest.mark.parametrize("mesh_spec", ["fsdp=8", "fsdp=2,tensor=4"])
def test_head_sharding_keeps_the_weight_gradient_sharded(mesh_spec, sweep):
  """With `head_sharding` the [D, V] gradient (here of a tied embedding, w = embedding.T) comes
  out laid out like the parameter; without it XLA returns it replicated over fsdp (per-device
  outputs 2-8x larger here)."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from vlm_jax import sharding
  mesh = sharding.parse_mesh(mesh_spec)
  k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
  hidden, emb = jax.random.normal(k1, (8, 16, 64)), jax.random.normal(k2, (4096, 64)) * 0.5
  targets = jax.random.randint(k3, (8, 16), 0, 4096)
  aux = {"weight": jnp.ones((8, 16)) / 128}
  fn = lambda lp, e, a: -a["weight"] * (lp + 0.1 * e)
  emb_s = jax.device_put(emb, NamedSharding(mesh, sharding.logical_to_spec(("vocab", "embed"),
                                                                          mesh)))
  h_s = jax.device_put(hidden, NamedSharding(mesh, P("fsdp")))

  def grad(layout):
    return jax.jit(jax.grad(lambda h, e: logprobs.token_loss(
        h, e.T, targets, fn, aux, 4, sweep=sweep, head_sharding=layout,
        vocab_shards=None if layout else split)[0], (0, 1))).lower(h_s, emb_s).compile()

  split = logprobs._vocab_split(sharding.head_sharding(mesh))  # the same tiles either way

  free, laid_out = grad(None), grad(sharding.head_sharding(mesh))
  got = laid_out(h_s, emb_s)
  assert got[1].sharding.spec == emb_s.sharding.spec
  assert free(h_s, emb_s)[1].sharding.spec != emb_s.sharding.spec  # what the option fixes
  peak = lambda c: (c.memory_analysis().temp_size_in_bytes
                    + c.memory_analysis().output_size_in_bytes)
  assert peak(laid_out) < peak(free)
  want = jax.grad(lambda h, e: logprobs.token_loss(h, e.T, targets, fn, aux, 4)[0],
                  (0, 1))(hidden, emb)
  for g, e in zip(got, want):
    np.testing.assert_allclose(g, e, atol=1e-6)


def test_sweep_options_are_checked():
  hidden, w, targets = _inputs()
  with pytest.raises(ValueError, match="sweep='tiles'"):
    logprobs.logprobs_and_entropy(hidden, w, targets, 8, sweep="tiles")
  with pytest.raises(ValueError, match="vocab_shards=5"):
    logprobs.logprobs_and_entropy(hidden, w, targets, 8, sweep="vocab", vocab_shards=5)
  with pytest.raises(ValueError, match="chunk_v"):
    logprobs.token_loss(hidden, w, targets, lambda lp, e, a: lp, {}, 8, 24, sweep="vocab")
  accelerated = jax.default_backend() != "cpu"
  assert logprobs.resolve_sweep("auto", 256) == ("vocab" if accelerated else "sequence")
  assert logprobs.resolve_sweep("auto", 512) == ("vocab" if accelerated else "sequence")
  assert logprobs.resolve_sweep("auto", 512, one_sweep=True) == "sequence"
  assert logprobs.resolve_sweep("auto", 4096) == "sequence"


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_auto_sweep_counts_the_tokens_of_one_device():
  """The rows are split over the batch axes of the head's mesh (padded to a multiple), and the
  thresholds hold per device."""
  mesh = sharding.parse_mesh("data=2,fsdp=4")
  layout = sharding.head_sharding(mesh)
  assert logprobs.tokens_per_device(4, 512, layout) == 512  # 4 rows over 8 devices: 1 each
  assert logprobs.tokens_per_device(16, 512, layout) == 1024
  assert logprobs.tokens_per_device(9, 512, layout) == 1024  # padded to 16 rows: 2 per device
  assert logprobs.tokens_per_device(4, 512, sharding.head_sharding(
      sharding.parse_mesh("data=1,tensor=8"))) == 2048  # tensor does not split the batch
  assert logprobs.tokens_per_device(4, 512) == 2048


# chunk_t=T with the vocab sweep: the whole vocabulary is one tile (once failed to run on CPU:
# XLA CPU had no bf16 x bf16 -> f32 dot for it)
@pytest.mark.parametrize("sweep, chunk_t", [("sequence", 8), ("vocab", 8), ("vocab", T)])
def test_token_loss_bfloat16_params_give_bfloat16_grads(sweep, chunk_t):
  hidden, w, targets = _inputs(5)
  hidden, w = hidden.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  aux = {"weight": jnp.ones((B, T))}
  fn = lambda lp, e, a: -a["weight"] * lp
  gh, gw = jax.jit(jax.grad(lambda h, w_: logprobs.token_loss(
      h, w_, targets, fn, aux, chunk_t, sweep=sweep)[0], (0, 1)))(hidden, w)
  assert gh.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16
  want = jax.grad(lambda h, w_: -jnp.sum(logprobs.naive_logprobs_and_entropy(
      h.astype(jnp.float32), w_.astype(jnp.float32), targets)[0]), (0, 1))(hidden, w)
  np.testing.assert_allclose(gw.astype(jnp.float32), want[1], atol=0.05, rtol=0.05)
  np.testing.assert_allclose(gh.astype(jnp.float32), want[0], atol=0.05, rtol=0.05)
  # the custom VJP of logprobs_and_entropy takes the same vocabulary sweep
  gw2 = jax.jit(jax.grad(lambda w_: -jnp.sum(logprobs.logprobs_and_entropy(
      hidden, w_, targets, chunk_t, sweep=sweep)[0])))(w)
  np.testing.assert_allclose(gw2.astype(jnp.float32), want[1], atol=0.05, rtol=0.05)


def test_token_loss_rejects_misshaped_aux():
  hidden, w, targets = _inputs()
  with pytest.raises(ValueError, match="aux\\['weight'\\]"):
    logprobs.token_loss(hidden, w, targets, lambda lp, e, a: lp, {"weight": jnp.ones((B, 3))})


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
