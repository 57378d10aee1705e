"""Randomized parity with transformers: drawn configs and batches, logits and greedy decoding.

Each seed draws a tiny Qwen2.5-VL config (head dims, GQA ratio, M-RoPE split, theta, eps, tied
embeddings, vision depth, patch size, windows, full-attention blocks, tokens per second) and a
batch (text-only rows, several images, videos with integer seconds per grid, left padding).
Seeds 1, 3 and 6 draw videos whose temporal positions outrun their spatial size, which once put
decoding at the wrong position (they failed before that fix; seeds 0-39 of this generator, and the
failing and 140 further seeds of a wider one, now all match).
"""

import numpy as np
import pytest

import vlm_jax
from vlm_jax.sampler import Sampler, SamplingParams
from tests.vlm_jax import hf_models

torch = pytest.importorskip("torch")

SEEDS = (0, 1, 2, 3, 6)


def _config(rng):
  from transformers import Qwen2_5_VLConfig
  head_dim = int(rng.choice(np.arange(8, 33, 2)))
  kv_heads, group = int(rng.randint(1, 3)), int(rng.randint(1, 7))
  cuts = np.sort(rng.randint(0, head_dim // 2 + 1, size=2))
  section = [int(cuts[0]), int(cuts[1] - cuts[0]), int(head_dim // 2 - cuts[1])]
  text = dict(hidden_size=kv_heads * group * head_dim, num_attention_heads=kv_heads * group,
              num_key_value_heads=kv_heads, intermediate_size=int(rng.choice([32, 64, 100])),
              num_hidden_layers=int(rng.randint(1, 4)),
              rms_norm_eps=float(rng.choice([1e-6, 1e-5, 1e-3])), vocab_size=hf_models.VOCAB,
              bos_token_id=1, eos_token_id=2, pad_token_id=0,
              rope_parameters=dict(rope_type="default", mrope_section=section,
                                   rope_theta=float(rng.choice([1e4, 1e6, 500.0]))))
  patch, heads, depth = int(rng.choice([7, 14])), int(rng.randint(1, 5)), int(rng.randint(1, 5))
  vision = dict(depth=depth, hidden_size=heads * int(rng.choice([8, 12, 16])), num_heads=heads,
                intermediate_size=int(rng.choice([24, 40, 64])), patch_size=patch,
                window_size=int(2 * patch * rng.choice([1, 2, 4])),
                fullatt_block_indexes=[int(i) for i in np.flatnonzero(rng.rand(depth) < 0.4)],
                tokens_per_second=int(rng.randint(1, 5)), out_hidden_size=text["hidden_size"])
  return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=hf_models.IMG,
                          video_token_id=hf_models.VID, vision_start_token_id=hf_models.VSTART,
                          vision_end_token_id=hf_models.VEND,
                          tie_word_embeddings=bool(rng.rand() < 0.5))


def _samples(rng):
  rows = []
  for _ in range(int(rng.randint(1, 5))):
    kind = rng.choice(["text", "images", "video", "mixed"])
    if kind == "text":
      rows.append([int(rng.randint(1, 20))])
      continue
    items = [int(rng.randint(1, 8))]
    for _ in range({"images": rng.randint(1, 4), "video": 1, "mixed": 2}[kind]):
      video = kind == "video" or (kind == "mixed" and rng.rand() < 0.5)
      grid = (int(rng.randint(2, 5)) if video else 1, 2 * int(rng.randint(1, 7)),
              2 * int(rng.randint(1, 7)))
      items.append(("video", grid, float(rng.choice([1.0, 2.0]))) if video else ("image", grid))
      items.append(int(rng.randint(1, 6)))
    rows.append(items)
  return rows


@pytest.mark.parametrize("seed", SEEDS)
def test_random_config_matches_transformers(seed, tmp_path):
  rng = np.random.RandomState(seed)
  hf_config, samples = _config(rng), _samples(rng)
  model = hf_models.save_hf_model(None, str(tmp_path), seed=seed, weight_scale=6.0,
                                  config=hf_config)
  config, params = vlm_jax.load_hf(str(tmp_path))
  batch = hf_models.build_batch(samples, config.vision.patch_dim, "left", seed=seed)
  want = hf_models.hf_logits(model, batch)
  got = np.asarray(vlm_jax.forward(params, config, **batch))
  real = batch["attention_mask"] == 1
  scale = max(1.0, float(np.abs(want[real]).max()))
  assert np.abs(got[real] - want[real]).max() < 1e-4 * scale, samples
  want = hf_models.hf_greedy(model, batch, 16)
  sampler = Sampler(params, config, pad_id=0)
  for logprobs in (True, False):  # tokens only: the float32 head screened in bfloat16
    tokens = sampler(batch, SamplingParams(max_new_tokens=16, suppress_vision_tokens=False,
                                           logprobs=logprobs, stop_token_ids=())).tokens
    np.testing.assert_array_equal(tokens, want, err_msg=str(samples))
