"""Forward-pass latency: our jitted JAX forward vs transformers' PyTorch forward, same weights.

A ~50M-parameter Qwen2.5-VL-shaped config (32k vocabulary, 4 text layers at width 512, an 8-block
vision tower at width 256), one 448x448 image (1024 patches -> 256 image tokens) plus 32 text
tokens, float32 on CPU. Both models load the same random checkpoint; the JAX time is the public
`forward` end to end (host-side rope index and window layout included), after one warm-up call.

  python bench/forward.py [--runs 10] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import bench_config, machine, timed  # noqa: E402


def inputs(config):
  rng = np.random.RandomState(0)
  grid = np.array([[1, 32, 32]])
  n_img = int(grid.prod()) // 4
  ids = np.concatenate([rng.randint(3, 31000, 16), [31992], np.full(n_img, 31990), [31993],
                        rng.randint(3, 31000, 16)])[None]
  return dict(input_ids=ids, attention_mask=np.ones_like(ids),
              pixel_values=rng.randn(int(grid.prod()), 1176).astype(np.float32),
              image_grid_thw=grid, mm_token_type_ids=(ids == 31990).astype(np.int64))


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", type=int, default=10)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  args = parser.parse_args()
  import jax
  import torch
  from transformers import Qwen2_5_VLForConditionalGeneration
  import vlm_jax
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  model = Qwen2_5_VLForConditionalGeneration(bench_config()).eval()
  n_params = sum(p.numel() for p in model.parameters())
  batch = inputs(model.config)
  with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    config, params = vlm_jax.load_hf(tmp)
  tensors = {k: torch.tensor(v) for k, v in batch.items()}

  def run_torch():
    with torch.no_grad():
      return model(**tensors).logits

  def run_jax():
    return jax.block_until_ready(vlm_jax.forward(params, config, **batch))

  err = np.abs(np.asarray(run_jax()) - run_torch().numpy()).max()
  t_torch, best_torch = timed(run_torch, args.runs)
  t_jax, best_jax = timed(run_jax, args.runs)
  print(f"config: {n_params / 1e6:.1f}M params, 1 image 448x448 (256 tokens) + 32 text tokens, "
        f"float32, {jax.devices()[0].platform}, torch threads {args.threads}, {args.runs} runs")
  print(f"host CPU: {machine()}")
  print(f"max |logit diff| JAX vs PyTorch: {err:.2e}")
  print("| implementation | median ms | best ms |")
  print("|---|---|---|")
  print(f"| transformers {__import__('transformers').__version__} (PyTorch {torch.__version__}) "
        f"| {t_torch * 1e3:.1f} | {best_torch * 1e3:.1f} |")
  print(f"| vlm_jax forward (jax {jax.__version__}) | {t_jax * 1e3:.1f} | {best_jax * 1e3:.1f} |")
  print(f"speed-up (PyTorch median / JAX median): {t_torch / t_jax:.2f}x")


if __name__ == "__main__":
  main()
