"""GRPO maths against hand-computed numbers and a finite-difference gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import grpo, optimizer, precision

jax.config.update("jax_enable_x64", False)


def test_group_advantages_hand_values():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
  a = grpo.group_advantages(r, 4, eps=0.0)
  # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735
  np.testing.assert_allclose(a[:4], [0.866025, -0.866025, -0.866025, 0.866025], atol=1e-5)
  np.testing.assert_allclose(grpo.group_advantages(r, 4)[4:], 0.0)  # equal rewards: no signal
  np.testing.assert_allclose(grpo.group_advantages(r, 4, scale_by_std=False)[:4],
                             [0.5, -0.5, -0.5, 0.5])


@pytest.mark.parametrize("group", [8, 12, 16])
@pytest.mark.parametrize("reward", [0.1, 0.2, 1.1, 1.2])
def test_equal_rewards_give_exactly_zero_advantage(group, reward):
  """0.1 (format right, answer wrong: a common group) is not exact in binary: its float32 group
  mean differs from it by ~1e-8, as much as its std, so an unguarded normalisation gave every
  row an advantage of up to 0.1, of one sign, step after step."""
  r = jnp.concatenate([jnp.full((group,), reward), jnp.arange(group) % 2 * 1.0])
  a = grpo.group_advantages(r, group)
  assert (a[:group] == 0).all()
  assert np.allclose(np.abs(a[group:]), np.abs(a[group]), atol=1e-6) and a[group] != 0
  assert (grpo.group_advantages(r, group, scale_by_std=False)[:group] == 0).all()


def test_group_advantages_over_the_valid_rows_only():
  """Rows without a known reward (the judge failed) get 0, and their group's baseline is that
  of the other rows, as if they had not been sampled."""
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 0.3, 0.9, 0.0, 0.0])
  valid = jnp.array([True, True, False, True, False, True, True, False])
  a = grpo.group_advantages(r, 4, valid=valid)
  pick = lambda x, rows: x[jnp.array(rows)]
  np.testing.assert_allclose(pick(a, [0, 1, 3]), grpo.group_advantages(pick(r, [0, 1, 3]), 3),
                             atol=1e-6)
  assert a[2] == 0 and a[4] == 0 and a[7] == 0
  np.testing.assert_allclose(pick(a, [5, 6]), grpo.group_advantages(pick(r, [5, 6]), 2), atol=1e-6)
  np.testing.assert_allclose(grpo.group_advantages(r, 4, valid=jnp.ones(8, bool)),
                             grpo.group_advantages(r, 4), atol=1e-6)
  lone = grpo.group_advantages(jnp.array([1.0, 0.0]), 2, valid=jnp.array([True, False]))
  np.testing.assert_allclose(lone, [0.0, 0.0])  # one valid row: nothing to compare it with


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


def test_masked_tokens_never_make_the_loss_or_its_gradient_nan():
  """A masked column may hold any log-probs (prompt, padding): with ref - logp = 93 there, exp
  overflows float32; the mask selects it away (jnp.where, not a 0 weight) before any exp."""
  logp = jnp.array([[-1.0, -95.0]])
  old, ref, mask = jnp.array([[-1.0, 0.0]]), jnp.array([[-1.1, -2.0]]), jnp.array([[1.0, 0.0]])
  f = lambda lp: grpo.grpo_loss(lp, old, ref, jnp.array([1.0]), mask, kl_coef=0.01)
  (loss, stats), grad = jax.value_and_grad(f, has_aux=True)(logp)
  k3 = np.exp(-0.1) + 0.1 - 1  # the unmasked token's KL
  np.testing.assert_allclose(loss, -1.0 + 0.01 * k3, rtol=1e-6)
  np.testing.assert_allclose(stats["kl"], k3, rtol=1e-5)
  assert np.isfinite(grad).all() and grad[0, 1] == 0.0
  # the same through the kernel's per-token form (what rl.train differentiates)
  aux = grpo.token_aux(old, ref, jnp.array([1.0]), mask)
  terms = lambda lp: jnp.sum(grpo.token_terms(lp, aux, kl_coef=0.01))
  assert np.isfinite(jax.grad(terms)(logp)).all()


def test_exponents_are_clamped_like_verls_low_var_kl():
  big = jnp.array([100.0, -100.0])
  np.testing.assert_allclose(grpo.kl_k3(jnp.zeros(2), big),
                             [np.exp(20.0) - 21.0, np.exp(-20.0) + 19.0], rtol=1e-6)
  _, ratio, _ = grpo.clipped_surrogate(big[None], jnp.zeros((1, 2)), jnp.array([1.0]))
  np.testing.assert_allclose(ratio, [[np.exp(20.0), np.exp(-20.0)]], rtol=1e-6)


def test_on_policy_ratio_is_exactly_one_with_the_gradient_of_the_ratio():
  """old=None: old = stop_gradient(logp), so rho = 1 exactly and d rho / d logp = 1: the loss
  and gradient of the clipped surrogate with old fixed at the current log-probs."""
  rng = np.random.RandomState(0)
  logp = jnp.asarray(np.log(rng.uniform(0.2, 0.9, (3, 4))), jnp.float32)
  ref = logp + jnp.asarray(rng.normal(0, 0.1, (3, 4)), jnp.float32)
  adv, mask = jnp.array([1.0, -0.5, 0.3]), jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
  on = lambda x: grpo.grpo_loss(x, None, ref, adv, mask, kl_coef=0.05)
  fixed = lambda x: grpo.grpo_loss(x, logp, ref, adv, mask, kl_coef=0.05)
  (loss, stats), grad = jax.value_and_grad(on, has_aux=True)(logp)
  (want, _), want_grad = jax.value_and_grad(fixed, has_aux=True)(logp)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-6)
  assert stats["ratio_min"] == stats["ratio_max"] == 1.0 and stats["clip_frac"] == 0.0


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


@pytest.mark.parametrize("mode, with_ref, tied, sweep, shards, with_old", [
    ("token_mean", True, False, "sequence", 1, True),
    ("seq_mean_token_mean", False, False, "auto", 1, True),
    ("token_mean", True, True, "auto", 1, False), ("token_mean", True, False, "vocab", 4, True),
    ("seq_mean_token_mean", True, True, "vocab", 1, False)])
def test_training_loss_equals_plain_composition(mode, with_ref, tied, sweep, shards, with_old):
  """rl.train._loss (one-sweep kernel, either gradient sweep) = sequence_logprobs + grpo_loss:
  value, stats, grads; with_old=False: on-policy (old = stop_gradient(logp)), with the
  sampler-vs-training log-prob gap as a diagnostic."""
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
  sampler = None if with_old else old  # (the rollout's log-probs: a diagnostic alone)
  old = old if with_old else None
  adv = jnp.asarray(rng.randn(r), jnp.float32)
  tc = TrainConfig(kl_coef=0.05, loss_agg=mode, clip_low=0.1, clip_high=0.3, logprob_sweep=sweep,
                   dtype="float32")
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
    if sampler is not None:
      stats["sampler_logp_diff"] = jnp.sum(jnp.abs(sampler - logp) * mask) / jnp.sum(mask)
    return 0.5 * loss, stats

  (want, want_stats), want_g = jax.value_and_grad(plain, has_aux=True)(params)
  (got, got_stats), got_g = train._grad(params, config, inputs, mask, old, ref, adv,
                                        np.float32(0.5), tc, head, sampler)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert sorted(got_stats) == sorted(want_stats)
  for key in want_stats:
    np.testing.assert_allclose(got_stats[key], want_stats[key], rtol=1e-5, atol=1e-6, err_msg=key)
  flat_want = dict(jax.tree_util.tree_leaves_with_path(want_g))
  for path, g in jax.tree_util.tree_leaves_with_path(got_g):
    np.testing.assert_allclose(g, flat_want[path], atol=1e-5, rtol=1e-4, err_msg=str(path))
  head = got_g["text"]["embed"]["embedding"] if tied else got_g["text"]["lm_head"]["kernel"]
  assert float(jnp.abs(head).max()) > 1e-4


def _tiny_text_model(vocab=512):
  import dataclasses
  from vlm_jax import config as config_lib, params as params_lib
  config = config_lib.get_config("tiny")
  config = dataclasses.replace(config, vision=None, architecture="qwen2", text=dataclasses.replace(
      config.text, mrope_section=None, vocab_size=vocab))
  return config, params_lib.init_params(config, jax.random.key(0))


def test_training_log_probs_are_those_of_the_sampling_temperature():
  """TrainConfig(temperature=T): the loss, its gradient and the pre-update / reference scores
  (`_score`) use softmax(logits / T), the distribution the rollouts came from (TRL, verl)."""
  from rl import train
  from rl.config import TrainConfig
  from vlm_jax import logprobs
  config, params = _tiny_text_model()
  rng = np.random.RandomState(2)
  r, t, k, temp = 4, 20, 7, 0.7
  inputs = {"input_ids": jnp.asarray(rng.randint(0, 512, (r, t)), jnp.int32),
            "token_mask": jnp.ones((r, t), bool),
            "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (3, r, t))}
  mask = jnp.asarray(rng.rand(r, k) < 0.8, jnp.float32)
  cold, _ = logprobs.sequence_logprobs(params, config, inputs, last=k)
  hot, _ = logprobs.sequence_logprobs(params, config, inputs, last=k, temperature=temp)
  assert float(jnp.abs(hot - cold).max()) > 1e-2
  old = hot + jnp.asarray(rng.normal(0, 0.2, (r, k)), jnp.float32)
  ref = hot + jnp.asarray(rng.normal(0, 0.2, (r, k)), jnp.float32)
  adv = jnp.asarray(rng.randn(r), jnp.float32)
  tc = TrainConfig(kl_coef=0.05, temperature=temp, dtype="float32")

  def plain(p):
    logp, ent = logprobs.sequence_logprobs(p, config, inputs, last=k, temperature=temp)
    return grpo.grpo_loss(logp, old, ref, adv, mask, clip_low=tc.clip_low,
                          clip_high=tc.clip_high, kl_coef=0.05, mode=tc.loss_agg, entropy=ent)

  (want, want_stats), want_g = jax.value_and_grad(plain, has_aux=True)(params)
  (got, got_stats), got_g = train._grad(params, config, inputs, mask, old, ref, adv,
                                        np.float32(1.0), tc)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got_stats["entropy"], want_stats["entropy"], rtol=1e-5)
  for g, w in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g)):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)
  scored_old, scored_ref, _ = train._score(params, params, config, inputs, mask, hot, k, 128,
                                           temp)
  np.testing.assert_allclose(scored_old, hot, atol=1e-6)
  np.testing.assert_allclose(scored_ref, hot, atol=1e-6)


def test_bf16_compute_over_float32_masters_matches_float32_and_moves_every_weight():
  """dtype=bfloat16, param_dtype=float32: the loss and gradient are those of float32 within
  bfloat16 tolerance, the gradient reaches the masters in float32, and one AdamW update at the
  study's lr 1e-6 changes essentially every weight that has a gradient (bfloat16 masters: a
  small share of them)."""
  from rl import train
  from rl.config import TrainConfig
  config, params = _tiny_text_model()
  rng = np.random.RandomState(2)
  r, t, k = 4, 24, 9
  inputs = {"input_ids": jnp.asarray(rng.randint(0, 512, (r, t)), jnp.int32),
            "token_mask": jnp.ones((r, t), bool),
            "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (3, r, t))}
  mask = jnp.ones((r, k), jnp.float32)
  adv = jnp.asarray(rng.randn(r), jnp.float32)
  old = jnp.full((r, k), -np.log(512.0), jnp.float32)  # about the random model's log-probs
  grads = {}
  for dtype in ("float32", "bfloat16"):
    tc = TrainConfig(dtype=dtype, kl_coef=0.0, lr=1e-6, warmup_steps=0)
    (loss, _), grads[dtype] = train._grad(params, config, inputs, mask, old, None, adv,
                                          np.float32(1.0), tc)
    grads[dtype + "_loss"] = float(loss)
  np.testing.assert_allclose(grads["bfloat16_loss"], grads["float32_loss"], rtol=2e-2, atol=1e-3)
  leaves = lambda d: jax.tree.leaves(grads[d])
  assert all(g.dtype == jnp.float32 for g in leaves("bfloat16"))
  cos = lambda a, b: float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30))
  flat = lambda d: jnp.concatenate([g.ravel() for g in leaves(d)])
  assert cos(flat("bfloat16"), flat("float32")) > 0.99
  assert not np.array_equal(flat("bfloat16"), flat("float32"))  # it did compute in bfloat16
  tc = TrainConfig(dtype="bfloat16", lr=1e-6, warmup_steps=0)
  opt = optimizer.make_optimizer(tc, params)
  new, _, _, _ = optimizer.apply_updates(opt, jax.tree.map(jnp.copy, params), opt.init(params),
                                          grads["bfloat16"])
  # (weights with no gradient, e.g. embeddings of tokens not in the batch, stay: Adam's 0/eps)
  pairs = list(zip(jax.tree.leaves(new), jax.tree.leaves(params), leaves("bfloat16")))
  moved = sum(int(jnp.sum((a != b) & (g != 0))) for a, b, g in pairs)
  assert moved / sum(int(jnp.sum(g != 0)) for _, _, g in pairs) > 0.999
  # bfloat16 masters would keep most of them: param_dtype=bfloat16 says so
  with pytest.warns(UserWarning, match=r"lr=1e-06: .* resolution of 9\d% of the weights"):
    precision.warn_bf16_masters(TrainConfig(param_dtype="bfloat16", lr=1e-6), params)


def test_freeze_vision_takes_no_gradient_through_the_vision_tower():
  """freeze_vision: `_grad` differentiates the text params alone, so the vision tower's
  backward is not in the program (FLOPs of the lowered program: the saving is more than one
  vision forward); grad_norm is that of the trained params."""
  import dataclasses
  from rl import train
  from rl.config import TrainConfig
  from tests.vlm_jax import hf_models
  from vlm_jax import config as config_lib, model as model_lib, params as params_lib, vision
  config = config_lib.get_config("tiny").replace(
      image_token_id=hf_models.IMG, video_token_id=hf_models.VID,
      vision_start_token_id=hf_models.VSTART, vision_end_token_id=hf_models.VEND)
  config = dataclasses.replace(config, text=dataclasses.replace(config.text, vocab_size=1024))
  params = params_lib.init_params(config, jax.random.key(0))
  batch = hf_models.build_batch([[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10]],
                                config.vision.patch_dim, padding="left")
  inputs = model_lib.prepare_inputs(config, **batch)
  mask, adv = np.ones((2, 6), np.float32), np.array([1.0, -1.0], np.float32)
  old = np.full((2, 6), -np.log(1024.0), np.float32)
  args = lambda freeze: (params, config, inputs, mask, old, None, adv, np.float32(1.0),
                         TrainConfig(kl_coef=0.0, freeze_vision=freeze))
  trained, frozen = (train._grad.lower(*args(freeze)) for freeze in (False, True))
  vision_forward = jax.jit(lambda p: vision.vision_forward(
      p, config.vision, inputs["pixel_values"], inputs["vision_layout"])).lower(
      params["vision"]).cost_analysis()["flops"]
  flops = lambda lowered: lowered.cost_analysis()["flops"]
  assert flops(trained) - flops(frozen) > vision_forward
  _, grads = frozen.out_info
  assert sorted(grads) == ["text"]
  opt = optimizer.make_optimizer(args(True)[-1], params)
  text_grad = jax.tree.map(jnp.ones_like, {"text": params["text"]})
  new, _, norm, _ = optimizer.apply_updates(opt, jax.tree.map(jnp.copy, params), opt.init(params),
                                            text_grad)
  np.testing.assert_allclose(norm, np.sqrt(sum(x.size for x in jax.tree.leaves(text_grad))),
                             rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, new["vision"], params["vision"])
