"""GRPO policy-update step time and model FLOPs utilisation (MFU) at a given shape.

One step = forward + backward of the GRPO loss (chunked log-probs over the response, k3 KL)
over `--batch` sequences of `--prompt` + `--response` tokens in the compute `--dtype` (cast
from `--param-dtype` master params inside the loss, as rl.train), then the AdamW update, on the
text decoder (vision tower excluded: it is a small share of a 7B step and frozen in many runs).
Model FLOPs = 6 * (decoder + LM-head params on the scored positions) * tokens + attention
12 * L * T^2 * D / 2 (causal); MFU = model FLOPs / time / peak, where the peak is measured in the
same run as the best dense matmul throughput of this device; --peak-tflops adds the MFU against a
datasheet number.

  python bench/train_step.py                                   # small CPU shape
  python bench/train_step.py --preset 7b --layers 4 --batch 8 --prompt 512 --response 512 \\
      --dtype bfloat16 --peak-tflops 989                       # 7B-shaped layers on an H100/H200
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measured_peak(dtype) -> float:
  """Best dense matmul FLOP/s of this device: 2048^3 on CPU, 8192^3 (random data) elsewhere."""
  import jax
  n = 2048 if jax.devices()[0].platform == "cpu" else 8192
  a = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  best = float("inf")
  for _ in range(5):
    start = time.perf_counter()
    jax.block_until_ready(f(a))
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--layers", type=int, default=None, help="override the layer count")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--prompt", type=int, default=192)
  parser.add_argument("--response", type=int, default=64)
  parser.add_argument("--dtype", default="float32", help="compute dtype (TrainConfig.dtype)")
  parser.add_argument("--param-dtype", default="float32",
                      help="master params and AdamW state (TrainConfig.param_dtype)")
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--peak-tflops", type=float, default=None)
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp
  from rl import optimizer, train
  from rl.config import TrainConfig
  from vlm_jax import config as config_lib, params as params_lib

  config = config_lib.get_config(args.preset)
  if args.layers:
    config = dataclasses.replace(config, text=dataclasses.replace(config.text,
                                                                   num_layers=args.layers))
  config = dataclasses.replace(config, vision=None, architecture="qwen2")
  config = dataclasses.replace(config, text=dataclasses.replace(config.text, mrope_section=None))
  tc = TrainConfig(kl_coef=1e-2, lr=1e-6, dtype=args.dtype, param_dtype=args.param_dtype)
  dtype = jnp.dtype(args.dtype)
  params = params_lib.init_params(config, jax.random.key(0), jnp.dtype(args.param_dtype))
  opt = optimizer.make_optimizer(tc, params)
  opt_state = optimizer.init_state(opt, params)
  b, t, k = args.batch, args.prompt + args.response, args.response
  rng = np.random.RandomState(0)
  inputs = {"input_ids": rng.randint(0, config.text.vocab_size, (b, t)).astype(np.int32),
            "token_mask": np.ones((b, t), bool),
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (3, b, t)).copy()}
  mask = np.ones((b, k), np.float32)
  old = np.full((b, k), -3.0, np.float32)
  ref = np.full((b, k), -3.0, np.float32)
  adv = rng.randn(b).astype(np.float32)

  def step(params, opt_state):
    (_, _), grads = train._grad(params, config, inputs, mask, old, ref, adv, np.float32(1.0), tc)
    params, opt_state, _, _ = optimizer.apply_updates(opt, params, opt_state, grads)
    return params, opt_state

  params, opt_state = step(params, opt_state)  # compile
  jax.block_until_ready(params)
  times = []
  for _ in range(args.runs):
    start = time.perf_counter()
    params, opt_state = step(params, opt_state)
    jax.block_until_ready(params)
    times.append(time.perf_counter() - start)
  t_step = float(np.median(times))
  text = config.text
  layer_params = params_lib.count_params(params_lib.text_specs(text)["layers"])
  head = text.hidden_size * text.vocab_size
  flops = (6 * layer_params * b * t + 6 * head * b * k
           + 6 * text.num_layers * b * t * t * text.num_heads * text.head_dim)  # causal attn
  peaks = [(measured_peak(dtype), "measured matmul")]
  if args.peak_tflops:
    peaks.append((args.peak_tflops * 1e12, "datasheet"))
  print(f"{args.preset} shapes, {text.num_layers} layers, batch {b} x ({args.prompt} prompt + "
        f"{args.response} response), {args.dtype} compute, {args.param_dtype} params, "
        f"{jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}")
  print("| step s | tokens/s | model TFLOP/step | peak TFLOP/s | MFU |")
  print("|---|---|---|---|---|")
  for peak, source in peaks:
    print(f"| {t_step:.3f} | {b * t / t_step:.0f} | {flops / 1e12:.3f} | {peak / 1e12:.2f} "
          f"({source}) | {flops / t_step / peak:.1%} |")


if __name__ == "__main__":
  main()
