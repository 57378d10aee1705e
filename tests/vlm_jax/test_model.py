"""Model-level behaviour that needs no transformers: bf16, KV cache, input validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vlm_jax
from vlm_jax import model as model_lib
from vlm_jax import text
from vlm_jax.config import get_config
from tests.vlm_jax import hf_models

CONFIG = get_config("tiny").replace(image_token_id=hf_models.IMG, video_token_id=hf_models.VID,
                                    vision_start_token_id=hf_models.VSTART,
                                    vision_end_token_id=hf_models.VEND)
SAMPLES = [[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10]]


@pytest.fixture(scope="module")
def params():
  p = vlm_jax.init_params(CONFIG, jax.random.key(0))
  # non-trivial norms and biases
  return jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), p)


def test_bf16_forward_stays_close_to_float32(params):
  batch = hf_models.build_batch(SAMPLES, CONFIG.vision.patch_dim)
  f32 = np.asarray(vlm_jax.forward(params, CONFIG, **batch))
  bf16_params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  bf16 = np.asarray(vlm_jax.forward(bf16_params, CONFIG, **batch))
  real = batch["attention_mask"] == 1
  err = np.abs(bf16[real] - f32[real]).max()
  scale = np.abs(f32[real]).max()
  print(f"bf16 vs f32: max |diff| {err:.4f}, max |logit| {scale:.3f}")
  assert np.isfinite(bf16).all()
  assert err < 0.05 * scale, (err, scale)
  # the same argmax for almost every position
  agree = (bf16[real].argmax(-1) == f32[real].argmax(-1)).mean()
  assert agree > 0.9, agree


def test_kv_cache_prefill_then_decode_equals_full_forward(params):
  batch = hf_models.build_batch(SAMPLES, CONFIG.vision.patch_dim, padding="left")
  full = model_lib.prepare_inputs(CONFIG, **batch)
  hidden_full, _ = model_lib.apply(params, CONFIG, full)
  split = batch["input_ids"].shape[1] - 3
  prefix = {k: v[:, :split] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v
            for k, v in batch.items()}
  inputs = model_lib.prepare_inputs(CONFIG, **prefix)
  cache = text.init_cache(CONFIG.text, 2, split + 8)
  hidden, cache = model_lib.apply(params, CONFIG, inputs, cache)
  real = batch["attention_mask"][:, :split] == 1  # padding rows are meaningless
  np.testing.assert_allclose(hidden[real], hidden_full[:, :split][real], atol=1e-5)
  for step in range(split, split + 3):  # one token at a time, positions from the rope deltas
    n_real = batch["attention_mask"][:, :step].sum(-1, keepdims=True)
    pos = (n_real + inputs["rope_deltas"]).astype(np.int32)
    one = {"input_ids": batch["input_ids"][:, step:step + 1].astype(np.int32),
           "token_mask": np.ones((2, 1), bool), "positions": np.broadcast_to(pos, (3, 2, 1))}
    hidden, cache = model_lib.apply(params, CONFIG, one, cache)
    np.testing.assert_allclose(hidden[:, 0], hidden_full[:, step], atol=1e-5)
  assert int(cache["end"]) == split + 3


def test_image_token_count_mismatch_is_a_clear_error(params):
  batch = hf_models.build_batch(SAMPLES, CONFIG.vision.patch_dim)
  batch["image_grid_thw"] = batch["image_grid_thw"][::-1].copy() * np.array([1, 2, 1])
  with pytest.raises(ValueError, match="pixel_values has shape"):
    vlm_jax.forward(params, CONFIG, **batch)
  batch = hf_models.build_batch(SAMPLES, CONFIG.vision.patch_dim)
  batch["input_ids"][0, -1] = CONFIG.image_token_id  # one image token too many
  with pytest.raises(ValueError, match=r"image tokens \(per sample \[25, 60\]\)"):
    vlm_jax.forward(params, CONFIG, **batch)


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(pixel_values=b["pixel_values"][:, :100]), "pixel_values has shape"),
    (lambda b: b.update(image_grid_thw=np.array([[1, 7, 12], [1, 12, 20]])), "image_grid_thw rows"),
    (lambda b: b.pop("pixel_values"), "pixel_values is None"),
    (lambda b: b.pop("image_grid_thw"), "without image_grid_thw"),
    (lambda b: b.update(attention_mask=b["attention_mask"][:, 1:]), "attention_mask shape"),
    (lambda b: b.update(input_ids=b["input_ids"] + 10**6), "input_ids outside"),
])
def test_bad_inputs(params, change, message):
  batch = hf_models.build_batch(SAMPLES, CONFIG.vision.patch_dim)
  change(batch)
  with pytest.raises(ValueError, match=message):
    vlm_jax.forward(params, CONFIG, **batch)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("per_layer", [False, True], ids=["stacked", "per-layer"])
def test_last_only_decoder_is_the_last_position_of_the_full_one(params, layers, per_layer):
  """`decoder(last_only=True)`: the last position's hidden state and every layer's keys and
  values of all positions, as the full decoder gives them (stacked params by index, and the
  per-layer lists the sampler uses; one layer: the pruned layer alone)."""
  config = dataclasses.replace(CONFIG.text, num_layers=layers)
  text_params = dict(params["text"], layers=jax.tree.map(lambda a: a[:layers],
                                                         params["text"]["layers"]))
  if per_layer:
    text_params = dict(text_params, layers=text.unstack_layers(text_params["layers"]))
  batch = hf_models.build_batch(SAMPLES, CONFIG.vision.patch_dim, padding="left")
  inputs = model_lib.prepare_inputs(CONFIG, **batch)
  x = model_lib.embed(params, CONFIG, inputs)
  run = lambda last_only: text.decoder(text_params, config, x, inputs["positions"],
                                       inputs["token_mask"], return_kv=True, last_only=last_only)
  (full, kv_full), (last, kv_last) = run(False), run(True)
  assert last.shape == (2, 1, config.hidden_size)
  np.testing.assert_allclose(last[:, 0], full[:, -1], atol=1e-5)
  for a, b in zip(jax.tree.leaves(kv_full), jax.tree.leaves(kv_last)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  with pytest.raises(ValueError, match="last_only"):
    text.decoder(text_params, config, x, inputs["positions"], inputs["token_mask"],
                 text.init_cache(config, 2, 64), last_only=True)


def test_per_block_fused_params_give_the_stacked_forward(params):
  """`text.unstack_layers` + `vision.unstack_blocks` (per-block trees, q/k/v and gate/up fused,
  what the Sampler keeps on CPU) through `forward`: the stacked params' logits."""
  from vlm_jax import vision
  batch = hf_models.build_batch(SAMPLES, CONFIG.vision.patch_dim, padding="left")
  want = np.asarray(vlm_jax.forward(params, CONFIG, **batch))
  blocks = vision.unstack_blocks(params["vision"]["blocks"])
  assert isinstance(blocks, list) and len(blocks) == CONFIG.vision.depth
  assert {"qkv", "proj"} <= set(blocks[0]) and "gate_up" in blocks[0]["mlp"]
  assert blocks[0]["qkv"]["bias"].shape == (3 * CONFIG.vision.hidden_size,)
  split = dict(params, vision=dict(params["vision"], blocks=blocks),
               text=dict(params["text"], layers=text.unstack_layers(params["text"]["layers"])))
  got = np.asarray(vlm_jax.forward(split, CONFIG, **batch))
  real = batch["attention_mask"] == 1
  np.testing.assert_allclose(got[real], want[real], atol=1e-4 * max(1, np.abs(want).max()))


def test_concat_dense_fuses_kernels_and_biases_only_when_all_have_one():
  from vlm_jax import layers
  rng = np.random.RandomState(0)
  a = {"kernel": rng.randn(4, 2, 3), "bias": rng.randn(2, 3)}
  b = {"kernel": rng.randn(4, 5), "bias": rng.randn(5)}
  fused = layers.concat_dense([a, b])
  x = rng.randn(7, 4)
  want = np.concatenate([(x @ a["kernel"].reshape(4, -1)) + a["bias"].reshape(-1),
                         x @ b["kernel"] + b["bias"]], -1)
  np.testing.assert_allclose(layers.dense(jnp.asarray(x), fused), want, atol=1e-5)
  assert layers.concat_dense([a, {"kernel": b["kernel"]}]) is None  # mixed: not fused
  plain = layers.fuse_projections({"q": {"kernel": a["kernel"]}, "k": {"kernel": b["kernel"]},
                                   "v": {"kernel": b["kernel"]}, "mlp": {
                                       "gate": b, "up": {"kernel": b["kernel"]}, "down": b}})
  assert plain["qkv"]["kernel"].shape == (4, 16) and "bias" not in plain["qkv"]
  assert set(plain["mlp"]) == {"gate", "up", "down"}  # gate biased, up not: kept apart
