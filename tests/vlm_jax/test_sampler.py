"""The KV-cache sampler: greedy parity with transformers' generate, sampling, stops, buckets
(with the real tokenizer: test_sampler_text.py; token choice: test_token_choice.py)."""

import warnings

import jax
import numpy as np
import pytest

import vlm_jax
from vlm_jax import buckets, decode_step, device_memory, logprobs, model as model_lib, sampler
from vlm_jax.sampler import Sampler, SamplingParams
from tests.vlm_jax import hf_models

torch = pytest.importorskip("torch")

BATCH = [[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10], [6]]
# A video whose temporal positions (0, 8, 16: 2 s per frame pair at 4 tokens/s) outrun its spatial
# size (6) and the 5 text tokens after it: decoding must continue from the last text position,
# not from the highest position of the prompt.
VIDEO_BATCH = [[4, ("video", (3, 8, 12), 2.0), 5], [3, ("image", (1, 8, 8)), 7], [6]]


def _repeat_rows(batch: dict, rows) -> dict:
  """The HF batch's rows `rows` (with their images and videos), in that order."""
  out = {k: batch[k][rows] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
  for kind, pixels, grid_key in ((1, "pixel_values", "image_grid_thw"),
                                 (2, "pixel_values_videos", "video_grid_thw")):
    if grid_key not in batch:
      continue
    blocks = np.diff((batch["mm_token_type_ids"] == kind).astype(int), axis=1, prepend=0) == 1
    per_row = np.cumsum([0] + blocks.sum(1).tolist())  # blocks before each row
    grid = batch[grid_key]
    chunks = np.split(batch[pixels], np.cumsum(grid.prod(-1))[:-1])
    picks = [i for r in rows for i in range(per_row[r], per_row[r + 1])]
    if picks:
      out[pixels] = np.concatenate([chunks[i] for i in picks])
      out[grid_key] = grid[picks]
      if kind == 2:
        out["second_per_grid_ts"] = batch["second_per_grid_ts"][picks]
  return out


def _kernel_scores(params, config, batch, rows, tokens, temperature=1.0):
  """(inputs, log p, entropy) of the sampled `tokens` after the prompts `rows` of `batch`, from
  the chunked kernel over the whole sequences: the generated positions only."""
  full = _repeat_rows(batch, rows)
  for key, tail in (("input_ids", tokens), ("attention_mask", np.ones_like(tokens)),
                    ("mm_token_type_ids", np.zeros_like(tokens))):
    full[key] = np.concatenate([full[key], tail], 1)
  inputs = model_lib.prepare_inputs(config, **full)
  inputs.pop("rope_deltas")
  logp, ent = logprobs.sequence_logprobs(params, config, inputs, chunk_t=16,
                                         temperature=temperature)
  gen = slice(batch["input_ids"].shape[1] - 1, None)
  return inputs, np.asarray(logp[:, gen]), np.asarray(ent[:, gen])


@pytest.fixture(scope="module")
def lively(tmp_path_factory):
  """A tiny random model whose greedy continuations are not one repeated token."""
  path = str(tmp_path_factory.mktemp("lively"))
  model = hf_models.save_hf_model("windows", path, weight_scale=6.0)
  config, params = vlm_jax.load_hf(path)
  return model, config, params, path


@pytest.mark.parametrize("samples,padding", [(BATCH, "left"), (BATCH, "right"),
                                             (VIDEO_BATCH, "left")], ids=["left", "right", "video"])
def test_greedy_matches_transformers_generate(lively, samples, padding):
  model, config, params, _ = lively
  batch = hf_models.build_batch(samples, config.vision.patch_dim, padding=padding)
  # transformers' generate is only right for left padding; right-padded prompts must give the
  # same continuation as the left-padded ones.
  want = hf_models.hf_greedy(model, buckets.left_align(batch), 40)
  # transformers may sample the video placeholder id; our default forbids it
  s = Sampler(params, config, pad_id=0)
  assert s.greedy_screen  # float32 on CPU: tokens-only greedy goes through `greedy_screen`
  for with_logprobs in (True, False):
    out = s(batch, SamplingParams(max_new_tokens=40, suppress_vision_tokens=False,
                                  logprobs=with_logprobs, stop_token_ids=()))
    assert len(np.unique(want)) > 5  # a real test: varied continuations
    np.testing.assert_array_equal(out.tokens, want)
    assert out.lengths.tolist() == [40, 40, 40] and out.finish_reasons == ["length"] * 3
  # by default a row stops at the config's eos (id 2 here), as generate does: kept, then pad
  out = s(batch, SamplingParams(max_new_tokens=40, suppress_vision_tokens=False))
  eos = config.eos_token_id
  assert (want == eos).any(), "the fixture should reach eos in some row"
  for r, row in enumerate(want):
    end = int(np.argmax(row == eos)) + 1 if (row == eos).any() else 40
    assert out.lengths[r] == end and out.finish_reasons[r] == ("stop" if end < 40 else "length")
    np.testing.assert_array_equal(out.tokens[r, :end], row[:end])
    assert (out.tokens[r, end:] == 0).all()


def test_repetition_penalty_matches_transformers_generate(lively):
  """Greedy with transformers' repetition_penalty: each row as transformers continues it alone
  (its prompt's tokens and its own output penalised), in a padded batch, with and without
  log-probs (the greedy screen is off under a penalty); the penalty changes the tokens."""
  model, config, params, _ = lively
  samples = VIDEO_BATCH  # a video, an image, text only
  batch = hf_models.build_batch(samples, config.vision.patch_dim)
  s = Sampler(params, config, pad_id=0)
  kw = dict(max_new_tokens=24, suppress_vision_tokens=False, stop_token_ids=())
  plain = s(batch, SamplingParams(**kw, logprobs=False)).tokens
  want = []
  for r in range(len(samples)):
    alone = _repeat_rows(batch, [r])
    real = alone["attention_mask"][0] == 1  # without its padding: transformers counts pad ids
    alone.update({k: alone[k][:, real] for k in ("input_ids", "attention_mask",
                                                 "mm_token_type_ids")})
    want.append(hf_models.hf_greedy(model, alone, 24, repetition_penalty=1.3)[0])
  for with_logprobs in (True, False):
    out = s(batch, SamplingParams(**kw, logprobs=with_logprobs, repetition_penalty=1.3))
    np.testing.assert_array_equal(out.tokens, np.stack(want))
  assert not np.array_equal(out.tokens, plain)


def test_repetition_penalty_keeps_the_models_own_logprobs(lively):
  """Sampled under a penalty, the returned log-probs are the model's (what GRPO's ratio
  needs): equal to the kernel's on the same tokens; seeded runs repeat."""
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH[:2], config.vision.patch_dim)
  s = Sampler(params, config, pad_id=0)
  sp = SamplingParams(max_new_tokens=24, temperature=0.5, n=2, seed=5, repetition_penalty=3.0,
                      stop_token_ids=())
  a, b = s(batch, sp), s(batch, sp)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  plain = s(batch, SamplingParams(max_new_tokens=24, temperature=0.5, n=2, seed=5,
                                  stop_token_ids=()))
  assert not np.array_equal(a.tokens, plain.tokens)
  _, logp, ent = _kernel_scores(params, config, batch, [0, 0, 1, 1], a.tokens)
  np.testing.assert_allclose(a.logprobs, logp, atol=2e-5)
  np.testing.assert_allclose(a.entropies, ent, atol=2e-5)
  with pytest.raises(ValueError, match="repetition_penalty"):
    SamplingParams(repetition_penalty=0.0)


def test_stacked_and_unstacked_decode_agree(lively):
  """Decode over per-layer weight copies (`text.unstack_layers`) = decode through lax.scan."""
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  sampling = SamplingParams(max_new_tokens=12, n=2, temperature=1.0, seed=3)
  a = Sampler(params, config, pad_id=0, unstack_layers=True)(batch, sampling)
  b = Sampler(params, config, pad_id=0, unstack_layers=False)(batch, sampling)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
  np.testing.assert_allclose(a.entropies, b.entropies, atol=1e-5)


def test_auto_unstack_falls_back_to_scanned_when_the_copy_does_not_fit(lively, monkeypatch):
  """unstack_layers="auto": per-layer decode while a copy of the layer weights fits in half of
  the free device memory, else the scanned decode (same tokens), with one warning."""
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  sampling = SamplingParams(max_new_tokens=6)
  need, free = device_memory.layer_copy_bytes(params["text"]["layers"])
  leaves = jax.tree.leaves(params["text"]["layers"])
  assert need == sum(x.nbytes for x in leaves) and free is None  # CPU: no allocator statistics
  chosen = []
  real_decode = decode_step.decode
  per_layer = lambda params: isinstance(params["text"]["layers"], list)
  monkeypatch.setattr(decode_step, "decode",
                      lambda *a: chosen.append(a[-1] or per_layer(a[0])) or real_decode(*a))
  monkeypatch.setitem(sampler._WARNED, "scanned", False)
  s = Sampler(params, config, pad_id=0)
  want = s(batch, sampling).tokens
  rows, length = s.prepare(batch)[0]["input_ids"].shape  # the batch and length buckets
  cache_len = length + sampling.max_new_tokens
  cache = device_memory.cache_bytes(config, rows, cache_len, None, leaves[0].dtype)
  assert cache == 2 * config.text.num_layers * rows * cache_len * config.text.num_kv_heads * (
      config.text.head_dim * leaves[0].dtype.itemsize)
  for limit in (cache + 2 * need, cache + 2 * need - 1):  # fits in half of the rest / does not
    monkeypatch.setattr(device_memory, "memory_stats",
                        lambda device, limit=limit: {"bytes_limit": limit, "bytes_in_use": 0})
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      np.testing.assert_array_equal(s(batch, sampling).tokens, want)
      s(batch, sampling)
    assert len([w for w in caught if "does not fit" in str(w.message)]) == (
        limit < cache + 2 * need)
  assert chosen == [True, True, True, False, False]
  with pytest.raises(ValueError, match="unstack_layers='yes'"):
    Sampler(params, config, unstack_layers="yes")


def test_sampling_is_reproducible_and_n_rows_differ(lively):
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH[:2], config.vision.patch_dim)
  s = Sampler(params, config, pad_id=0)
  params_ = SamplingParams(max_new_tokens=12, temperature=1.0, n=3, seed=7)
  a, b = s(batch, params_), s(batch, params_)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logprobs, b.logprobs)
  assert a.tokens.shape == (6, 12) and a.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
  assert len({tuple(r) for r in a.tokens}) == 6  # the n samples of a prompt differ
  c = s(batch, SamplingParams(max_new_tokens=12, temperature=1.0, n=3, seed=8))
  assert not np.array_equal(a.tokens, c.tokens)
  # with row keys, a prompt's samples do not depend on its place in the batch
  swapped = {k: v[::-1].copy() for k, v in batch.items() if k != "pixel_values"}
  swapped["pixel_values"] = np.concatenate(  # the same images, in the new row order
      np.split(batch["pixel_values"], [96])[::-1])
  keyed = s(batch, params_, row_keys=[11, 22])
  other = s(swapped, params_, row_keys=[22, 11])
  np.testing.assert_array_equal(keyed.tokens[3:], other.tokens[:3])
  np.testing.assert_array_equal(keyed.tokens[:3], other.tokens[3:])


def test_top_k_1_and_tiny_top_p_are_greedy(lively):
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH[:2], config.vision.patch_dim)
  s = Sampler(params, config, pad_id=0)
  greedy = s(batch, SamplingParams(max_new_tokens=10)).tokens
  for kw in (dict(top_k=1), dict(top_p=1e-6)):
    got = s(batch, SamplingParams(max_new_tokens=10, temperature=1.0, seed=3, **kw)).tokens
    np.testing.assert_array_equal(got, greedy)


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_tokens_only_mode_samples_the_same_tokens(lively, temperature):
  """SamplingParams(logprobs=False) skips the per-step softmax statistics, nothing else."""
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH[:2], config.vision.patch_dim)
  s = Sampler(params, config, pad_id=0)
  kw = dict(max_new_tokens=12, temperature=temperature, n=2, seed=3)
  full, bare = s(batch, SamplingParams(**kw)), s(batch, SamplingParams(**kw, logprobs=False))
  np.testing.assert_array_equal(full.tokens, bare.tokens)
  np.testing.assert_array_equal(full.lengths, bare.lengths)
  assert bare.logprobs is None and bare.entropies is None
  assert np.all(full.logprobs[:, :1] < 0)


@pytest.mark.parametrize("samples", [BATCH[:2], VIDEO_BATCH[:2]], ids=["images", "video"])
def test_sampler_logprobs_equal_the_kernel(lively, samples):
  """Rollout log-probs (temperature 1) == scoring the same sequences with the chunked kernel."""
  _, config, params, _ = lively
  batch = hf_models.build_batch(samples, config.vision.patch_dim)
  out = Sampler(params, config, pad_id=0)(
      batch, SamplingParams(max_new_tokens=8, temperature=1.5, n=2, seed=1))
  inputs, logp, ent = _kernel_scores(params, config, batch, np.repeat(np.arange(2), 2),
                                     out.tokens)
  np.testing.assert_allclose(out.logprobs, logp, atol=2e-5)
  np.testing.assert_allclose(out.entropies, ent, atol=2e-5)
  tail, _ = logprobs.sequence_logprobs(params, config, inputs, chunk_t=16, last=8)
  np.testing.assert_allclose(np.asarray(tail), logp[:, -8:], atol=1e-6)
  # tempered_logprobs: those of softmax(logits / 1.5), the distribution sampled from (GRPO's
  # rollouts), and the same tokens
  tempered = Sampler(params, config, pad_id=0)(batch, SamplingParams(
      max_new_tokens=8, temperature=1.5, n=2, seed=1, tempered_logprobs=True))
  np.testing.assert_array_equal(tempered.tokens, out.tokens)
  _, logp_t, ent_t = _kernel_scores(params, config, batch, np.repeat(np.arange(2), 2),
                                    out.tokens, temperature=1.5)
  np.testing.assert_allclose(tempered.logprobs, logp_t, atol=2e-5)
  np.testing.assert_allclose(tempered.entropies, ent_t, atol=2e-5)
  assert np.abs(logp_t - logp).max() > 0.05  # the two are different distributions


def test_stop_tokens_end_rows_early(lively):
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  s = Sampler(params, config, pad_id=0)
  free = s(batch, SamplingParams(max_new_tokens=20, stop_token_ids=())).tokens
  stop = int(free[0, 5])
  first = [int(np.argmax(r == stop)) if (r == stop).any() else None for r in free]
  out = s(batch, SamplingParams(max_new_tokens=20, stop_token_ids=(stop,)))
  for r, f in enumerate(first):
    want_len = 20 if f is None else f + 1
    assert out.lengths[r] == want_len
    np.testing.assert_array_equal(out.tokens[r, :want_len], free[r, :want_len])
    assert (out.tokens[r, want_len:] == 0).all() and (out.logprobs[r, want_len:] == 0).all()
    assert out.finish_reasons[r] == ("length" if f is None else "stop")


def test_one_compile_per_bucket(lively):
  _, config, params, _ = lively
  s = Sampler(params, config, pad_id=0)
  sp = SamplingParams(max_new_tokens=6)
  first = s(hf_models.build_batch([[4, ("image", (1, 8, 8)), 3]], config.vision.patch_dim), sp)
  before = dict(sampler.TRACE_COUNTS)
  # max_new_tokens is bucketed too (5 and 6 share a bucket): a prefix of the same greedy tokens
  short = s(hf_models.build_batch([[4, ("image", (1, 8, 8)), 3]], config.vision.patch_dim),
            SamplingParams(max_new_tokens=5))
  assert short.tokens.shape == short.logprobs.shape == (1, 5) and short.lengths.tolist() == [5]
  np.testing.assert_array_equal(short.tokens, first.tokens[:, :5])
  np.testing.assert_allclose(short.logprobs, first.logprobs[:, :5], rtol=1e-6, atol=1e-6)
  assert short.finish_reasons == ["length"]
  for samples in ([[9, ("image", (1, 8, 12)), 2]], [[2, ("image", (1, 4, 8)), 20]]):
    s(hf_models.build_batch(samples, config.vision.patch_dim, seed=len(samples[0])), sp)
  for ids in ((5,), (5, 6, 7)):  # stop-id counts are bucketed too
    s(hf_models.build_batch([[4, ("image", (1, 8, 8)), 3]], config.vision.patch_dim),
      SamplingParams(max_new_tokens=6, stop_token_ids=ids))
  assert sampler.TRACE_COUNTS == before  # same length/batch/patch buckets: no new compile


def test_the_per_layer_copy_is_kept_on_cpu_while_the_layers_are_the_same(lively, monkeypatch):
  """`Sampler._layer_copy`: one per-layer copy of the layer weights for a run of calls, which
  the prefill, the decode and `next_token_logprobs` all run on (not with unstack_layers=False);
  new params get a new copy, and their tokens (against the scanned decode of the new params)."""
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  sampling = SamplingParams(max_new_tokens=6)
  used = []
  for name in ("prefill", "decode", "last_logprobs"):
    real = getattr(decode_step, name)
    monkeypatch.setattr(decode_step, name, lambda *a, real=real, name=name: used.append(
        (name, isinstance(a[0]["text"]["layers"], list),
         isinstance(a[0]["vision"]["blocks"], list))) or real(*a))
  s = Sampler(params, config, pad_id=0, unstack_layers=True)
  before = s(batch, sampling).tokens
  copy = s._derived.held("layers")
  scanned = Sampler(params, config, pad_id=0, unstack_layers=False)
  ids = [3, 5, 7]
  np.testing.assert_allclose(s.next_token_logprobs(batch, ids),
                             scanned.next_token_logprobs(batch, ids), atol=1e-5)
  assert scanned._derived.held("layers") is None
  assert used == [("prefill", True, True), ("decode", True, True),
                  ("last_logprobs", True, True), ("last_logprobs", False, False)]
  s(batch, sampling)
  assert s._derived.held("layers") is copy
  s.params = dict(params, text=dict(params["text"], layers=jax.tree.map(
      lambda x: -x, params["text"]["layers"])))
  after = s(batch, sampling).tokens
  assert s._derived.held("layers") is not copy
  want = Sampler(s.params, config, pad_id=0, unstack_layers=False)(batch, sampling).tokens
  np.testing.assert_array_equal(after, want)
  assert (after != before).any()


def test_without_a_kept_copy_the_decode_program_unstacks(lively, monkeypatch):
  """The accelerator path (`_keeps_layer_copy` False): stacked params into the prefill and the
  decode, which makes its own per-layer copy; no copy held; the kept path's tokens."""
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  sampling = SamplingParams(max_new_tokens=6)
  want = Sampler(params, config, pad_id=0)(batch, sampling).tokens
  monkeypatch.setattr(Sampler, "_keeps_layer_copy", lambda self: False)
  calls = []
  real = decode_step.decode
  monkeypatch.setattr(decode_step, "decode", lambda *a: calls.append(
      (isinstance(a[0]["text"]["layers"], list), a[-1])) or real(*a))
  s = Sampler(params, config, pad_id=0, unstack_layers=True)
  np.testing.assert_array_equal(s(batch, sampling).tokens, want)
  assert calls == [(False, True)] and s._derived.held("layers") is None


@pytest.mark.parametrize("unstack,screen", [(True, False), (False, False), (True, True)])
def test_decode_state_is_donated_in_place(lively, unstack, screen):
  """The cache the prefill builds is the layout the decode carries, so XLA aliases it to the
  decode's output (a donated buffer it cannot use is a second KV cache held through a decode)."""
  _, config, params, _ = lively
  s = Sampler(params, config, pad_id=0, unstack_layers=unstack)
  inputs, _ = s.prepare(hf_models.build_batch(BATCH, config.vision.patch_dim))
  spec = (decode_step.Spec(4, 2, True, 0, False, False, screen=True) if screen
          else decode_step.Spec(4, 2, False, 0, False, True))
  out = decode_step.prefill(params, config, inputs, 2, inputs["input_ids"].shape[1] + 4, None,
                            unstack)
  state = decode_step.init_state(out, spec, 1, 0, np.ones(2 * inputs["input_ids"].shape[0], bool))
  controls = {"rng": jax.random.key(0), "max_new": np.int32(4), "temperature": np.float32(1),
              "top_p": np.float32(1), "pad_id": np.int32(0),
              "stop_table": np.zeros((1, 4, config.text.vocab_size), np.int8),
              "stop_ids": np.array([-3], np.int32), "banned": np.array([0], np.int32),
              "row_ids": np.arange(2 * inputs["input_ids"].shape[0], dtype=np.int32)}
  if screen:
    controls["screen"] = s._screen_tables()
  with warnings.catch_warnings():
    warnings.filterwarnings("error", message="Some donated buffers were not usable")
    compiled = decode_step.decode.lower(params, config, state, spec, controls, unstack).compile()
  cache_bytes = sum(x.nbytes for x in jax.tree.leaves((state["cache"]["k"], state["cache"]["v"])))
  assert compiled.memory_analysis().alias_size_in_bytes >= cache_bytes


def test_prefill_runs_each_prompt_once_for_n_samples(lively):
  """n samples per prompt repeat the prompt's cache, not its computation."""
  _, config, params, _ = lively
  s = Sampler(params, config, pad_id=0)
  inputs, _ = s.prepare(hf_models.build_batch(BATCH, config.vision.patch_dim))
  cache_len = inputs["input_ids"].shape[1] + 8
  flops = {n: decode_step.prefill.lower(params, config, inputs, n, cache_len, None, True).compile()
           .cost_analysis()["flops"] for n in (1, 8)}
  assert flops[8] < 1.05 * flops[1], flops


def test_row_keys_need_one_key_per_prompt():
  from vlm_jax.sampler import _row_ids
  assert _row_ids([5, 6], 2, 4, 2).shape == (8,)
  for keys in (7, [7]):  # one key for all prompts would give them the same noise
    with pytest.raises(ValueError, match=r"row_keys: one int per prompt \(2\)"):
      _row_ids(keys, 2, 4, 2)


def test_bad_stop_strings_and_large_top_k(lively):
  with pytest.raises(ValueError, match="non-empty strings"):
    SamplingParams(stop_strings=("",))
  with pytest.raises(ValueError, match="non-empty strings"):
    SamplingParams(stop_strings="</answer>")
  _, config, params, _ = lively
  s = Sampler(params, config, pad_id=0)
  batch = hf_models.build_batch(BATCH[:1], config.vision.patch_dim)
  sp = dict(max_new_tokens=6, temperature=1.0, seed=2)
  whole = s(batch, SamplingParams(top_k=config.text.vocab_size + 5, **sp))  # = no top-k
  np.testing.assert_array_equal(whole.tokens, s(batch, SamplingParams(**sp)).tokens)
  with pytest.raises(ValueError, match=r"stop_token_ids \[-1, \d+\] are outside the model's "
                     r"vocabulary \[0, \d+\)"):
    s(batch, SamplingParams(stop_token_ids=(3, -1, config.text.vocab_size), **sp))


def test_prompt_plus_new_tokens_past_the_context_and_empty_batches_are_refused(lively):
  """Refused before anything is allocated (a KV cache for a million tokens a row, or an
  endless loop), naming the counts; an empty batch names its shape."""
  import dataclasses
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH[:1], config.vision.patch_dim)
  prompt = int(batch["attention_mask"].sum())
  small = dataclasses.replace(config, text=dataclasses.replace(
      config.text, max_position_embeddings=prompt + 4))
  s = Sampler(params, small, pad_id=0)
  assert s(batch, SamplingParams(max_new_tokens=4)).tokens.shape == (1, 4)  # exactly fits
  with pytest.raises(ValueError, match=f"longest prompt \\({prompt} tokens\\) \\+ max_new_tokens "
                     f"\\(5\\) exceeds the model's context \\(max_position_embeddings {prompt + 4}"):
    s(batch, SamplingParams(max_new_tokens=5))
  empty = {k: v[:0] for k, v in batch.items() if k in ("input_ids", "attention_mask")}
  with pytest.raises(ValueError, match=r"at least one token, got shape \(0, "):
    Sampler(params, config, pad_id=0)(empty, SamplingParams(max_new_tokens=2))


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_sharded_sampling_equals_single_device(tmp_path):
  from vlm_jax import sharding
  path = str(tmp_path)
  hf_models.save_hf_model("shardable", path, weight_scale=6.0)
  config, params = vlm_jax.load_hf(path)
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  want = Sampler(params, config, pad_id=0)(batch, SamplingParams(max_new_tokens=12, n=2))
  mesh = sharding.parse_mesh("data=2,fsdp=2,tensor=2")
  _, sharded = vlm_jax.load_hf(path, mesh=mesh)
  s = Sampler(sharded, config, pad_id=0, mesh=mesh)
  got = s(batch, SamplingParams(max_new_tokens=12, n=2))
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
  # tokens only: the greedy screen over the vocabulary-sharded head (CPU devices: on)
  assert s.greedy_screen
  bare = s(batch, SamplingParams(max_new_tokens=12, n=2, logprobs=False))
  np.testing.assert_array_equal(bare.tokens, want.tokens)
  spec = sharded["text"]["lm_head"]["kernel"].sharding.spec  # [D, V]
  for name in ("wb", "rows"):  # [V, D] copies, split like the head (nothing gathered)
    assert tuple(s._derived.held("screen")[name].sharding.spec) == tuple(spec)[::-1]
  # the kept per-layer copies (CPU devices) hold no more bytes per device than their sources
  per_device = lambda tree: sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                                for x in jax.tree.leaves(tree))
  for name, source in (("layers", sharded["text"]["layers"]),
                       ("vision", sharded["vision"]["blocks"])):
    assert per_device(s._derived.held(name)) <= per_device(source), name


def test_vision_placeholders_are_never_sampled(lively):
  _, config, params, _ = lively
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  free = Sampler(params, config, pad_id=0)(batch, SamplingParams(max_new_tokens=40,
                                                                 suppress_vision_tokens=False))
  assert (free.tokens == config.video_token_id).any()  # this model does emit one greedily
  out = Sampler(params, config, pad_id=0)(batch, SamplingParams(max_new_tokens=40))
  assert not np.isin(out.tokens, [config.image_token_id, config.video_token_id]).any()
