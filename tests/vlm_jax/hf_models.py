"""Tiny random transformers Qwen2.5-VL models and matching inputs, for parity tests.

Nothing is downloaded: models are built from configs with random weights (norm scales and biases
are randomised too, so a transform that drops them cannot pass).
"""

from __future__ import annotations

import os

import numpy as np

IMG, VID, VSTART, VEND = 990, 991, 992, 993
VOCAB = 1000

# Three configs: plain; many windows per image + non-trivial fullatt_block_indexes + GQA 6:1 +
# tied embeddings; MHA, smaller patches, odd widths, other rope theta.
CONFIGS = {
    "base": dict(
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, mrope_section=[2, 3, 3]),
        vision=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                    fullatt_block_indexes=[1], window_size=112, tokens_per_second=2)),
    "windows": dict(
        text=dict(hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                  num_attention_heads=6, num_key_value_heads=1, mrope_section=[2, 3, 3],
                  rms_norm_eps=1e-6),
        vision=dict(depth=4, hidden_size=48, intermediate_size=80, num_heads=3,
                    fullatt_block_indexes=[0, 3], window_size=56, tokens_per_second=4),
        tie_word_embeddings=True),
    "odd": dict(
        text=dict(hidden_size=80, intermediate_size=100, num_hidden_layers=2,
                  num_attention_heads=5, num_key_value_heads=5, mrope_section=[4, 2, 2],
                  rope_theta=1e6),
        vision=dict(depth=3, hidden_size=40, intermediate_size=56, num_heads=2, patch_size=7,
                    fullatt_block_indexes=[2], window_size=56, tokens_per_second=2)),
    # Every sharded axis divisible by 8 (heads, kv heads, MLP, vocab, vision widths).
    "shardable": dict(
        text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=8, mrope_section=[2, 3, 3]),
        vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=8,
                    fullatt_block_indexes=[1], window_size=112, tokens_per_second=2)),
    # As "shardable", but with 2 KV heads and a 90-wide vision MLP, which a tensor axis of 4
    # does not divide (Qwen2.5-VL-3B: 2 KV heads; 3B/7B vision MLP 3420 against tensor = 8).
    "few_kv_heads": dict(
        text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=2, mrope_section=[2, 3, 3]),
        vision=dict(depth=2, hidden_size=64, intermediate_size=90, num_heads=8,
                    fullatt_block_indexes=[1], window_size=112, tokens_per_second=2)),
}
PARITY_CONFIGS = ("base", "windows", "odd")


def hf_config(name: str):
  from transformers import Qwen2_5_VLConfig
  spec = CONFIGS[name]
  text = dict(spec["text"])
  section = text.pop("mrope_section")
  theta = text.pop("rope_theta", 10000.0)
  text.update(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0,
              rope_parameters=dict(rope_type="default", mrope_section=section, rope_theta=theta))
  vision = dict(spec["vision"], out_hidden_size=text["hidden_size"])
  return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=IMG,
                          video_token_id=VID, vision_start_token_id=VSTART,
                          vision_end_token_id=VEND,
                          tie_word_embeddings=spec.get("tie_word_embeddings", False))


def hf_model(name: str, seed: int = 0, weight_scale: float = 1.0, config=None):
  """weight_scale multiplies the matrices (not embeddings): at 0.02 init, tiny random models
  greedily repeat one token; a scale of ~6 makes their continuations varied."""
  import torch
  from transformers import Qwen2_5_VLForConditionalGeneration
  torch.manual_seed(seed)
  model = Qwen2_5_VLForConditionalGeneration(config or hf_config(name)).eval()
  with torch.no_grad():
    for param_name, p in model.named_parameters():
      if p.ndim == 1:
        p.add_(0.2 * torch.randn_like(p))
      elif "embed" not in param_name:
        p.mul_(weight_scale)
  return model


def save_hf_model(name: str, path: str, seed: int = 0, weight_scale: float = 1.0, config=None):
  model = hf_model(name, seed, weight_scale, config)
  model.save_pretrained(path)
  return model


def vision_tokens(grid, merge: int = 2) -> int:
  t, h, w = grid
  return t * h * w // merge ** 2


def build_batch(samples, patch_dim: int, padding: str = "left", seed: int = 0):
  """HF-processor-like arrays for `samples`: each a list of items, an item being an int (that
  many random text tokens), ("image", (t, h, w)) or ("video", (t, h, w), seconds_per_grid)."""
  rng = np.random.RandomState(seed)
  rows, img_grids, vid_grids, seconds = [], [], [], []
  for items in samples:
    ids = []
    for item in items:
      if isinstance(item, int):
        ids += rng.randint(3, 900, size=item).tolist()
        continue
      kind, grid = item[0], item[1]
      ids += [VSTART] + [IMG if kind == "image" else VID] * vision_tokens(grid) + [VEND]
      if kind == "image":
        img_grids.append(grid)
      else:
        vid_grids.append(grid)
        seconds.append(item[2])
    rows.append(ids)
  length = max(map(len, rows))
  input_ids = np.zeros((len(rows), length), np.int64)
  mask = np.zeros_like(input_ids)
  for b, ids in enumerate(rows):
    sl = slice(length - len(ids), length) if padding == "left" else slice(0, len(ids))
    input_ids[b, sl] = ids
    mask[b, sl] = 1
  out = dict(input_ids=input_ids, attention_mask=mask,
             mm_token_type_ids=(input_ids == IMG) * 1 + (input_ids == VID) * 2)
  if img_grids:
    grid = np.array(img_grids, np.int64)
    out["pixel_values"] = rng.randn(int(grid.prod(-1).sum()), patch_dim).astype(np.float32)
    out["image_grid_thw"] = grid
  if vid_grids:
    grid = np.array(vid_grids, np.int64)
    out["pixel_values_videos"] = rng.randn(int(grid.prod(-1).sum()), patch_dim).astype(np.float32)
    out["video_grid_thw"] = grid
    out["second_per_grid_ts"] = np.array(seconds, np.float32)
  return out


def hf_logits(model, batch) -> np.ndarray:
  import torch
  with torch.no_grad():
    tensors = {k: torch.tensor(v) for k, v in batch.items()}
    return model(**tensors).logits.float().numpy()


def hf_truncates_video_seconds() -> bool:
  """Whether the installed transformers rounds second_per_grid_ts down to an int in
  Qwen2.5-VL's M-RoPE index (5.17 does: `int(next(second_per_grid_ts))`; 5.24 does not, and
  neither does the released Qwen2.5-VL code). A fractional value then gives other positions."""
  import inspect
  from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
  return "int(next(second_per_grid_ts))" in inspect.getsource(modeling_qwen2_5_vl)


def hf_greedy(model, batch, max_new_tokens: int, pad_id: int = 0, **generate_kw) -> np.ndarray:
  """transformers' `generate(do_sample=False)` continuation tokens, no eos stopping."""
  import torch
  with torch.no_grad():
    out = model.generate(**{k: torch.tensor(v) for k, v in batch.items()}, do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=None, pad_token_id=pad_id,
                         **generate_kw)
  return out[:, batch["input_ids"].shape[1]:].numpy()


def tiny_real_vocab_config():
  """The `tiny` preset as a transformers config: real Qwen vocabulary and special token ids."""
  from transformers import Qwen2_5_VLConfig
  from vlm_jax import config as config_lib, config_json
  return Qwen2_5_VLConfig(**config_json.to_hf(config_lib.get_config("tiny"), dtype="float32"))


def save_tiny_qwen3_chat(path: str, seed: int = 0) -> str:
  """A random 1-layer Qwen3 checkpoint with the real Qwen vocabulary and tokenizer files in
  `path` (a local judge or text generator as `evals.llm_judge` loads one)."""
  import shutil
  import torch
  import transformers
  from vlm_jax import processor as proc_lib
  cfg = transformers.Qwen3Config(
      vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
      num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
      bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
  torch.manual_seed(seed)
  transformers.Qwen3ForCausalLM(cfg).save_pretrained(path)
  for name in os.listdir(proc_lib.qwen_tokenizer_dir()):
    shutil.copy(os.path.join(proc_lib.qwen_tokenizer_dir(), name), path)
  return path
