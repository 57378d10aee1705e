"""Decode throughput of the sampler at real model shapes (random weights) vs the bandwidth roofline.

The text decoder of a preset (default 7B: 28 layers, hidden 3584, 152k vocabulary), random
bfloat16 weights, text-only prompts of --prompt tokens, greedy, exactly --new-tokens per row.
A decode step must read every decoder weight and the LM head once, plus the live KV cache; at
these batch sizes that read, not arithmetic, bounds the step, so the roofline is

    step time >= (weight bytes + live KV bytes) / bandwidth,   tokens/s <= batch / step time,

with the read bandwidth measured in the same run (a jitted sum over 4 GiB;
`bench.common.device_bandwidth`). Decode time = the whole `Sampler` call minus its
prefill (the same compiled prefill, timed alone), over --new-tokens steps. Each batch size is run
with the layers scanned over the stacked weights and with per-layer weights (`unstack_layers`).

With --hf, transformers' `generate` (Qwen2ForCausalLM of the same shapes and dtype, its own
random init, SDPA attention, static shapes off) is timed the same way as a reference: the
decode time of a --new-tokens call minus a 1-token call.

  python bench/decode.py                       # 7B shapes; needs an accelerator (~16 GB weights)
  python bench/decode.py --preset tiny --batch 1,4 --prompt 32 --new-tokens 16   # CPU smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import device_bandwidth  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", default="7b")
  parser.add_argument("--layers", type=int, default=None, help="override the layer count")
  parser.add_argument("--batch", default="1,16,64", help="comma-separated batch sizes")
  parser.add_argument("--prompt", type=int, default=512)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--unstack", default="both", choices=["both", "yes", "no"])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--hf", action="store_true", help="also time transformers' generate")
  args = parser.parse_args()
  if args.hf:  # share the device with torch: allocate on demand instead of 75% up front
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  import jax
  import jax.numpy as jnp
  from vlm_jax import config as config_lib, decode_step, params as params_lib
  from vlm_jax import sampler as sampler_lib

  config = config_lib.get_config(args.preset)
  text = config.text
  if args.layers:
    text = dataclasses.replace(text, num_layers=args.layers)
  config = dataclasses.replace(config, vision=None, architecture="qwen2",
                               text=dataclasses.replace(text, mrope_section=None))
  dtype = jnp.dtype(args.dtype)
  params = jax.block_until_ready(params_lib.init_params(config, jax.random.key(0), dtype))
  weight_bytes = dtype.itemsize * (params_lib.count_params(params["text"]["layers"])
                                   + text.hidden_size * text.vocab_size)  # + the LM head
  kv_per_token = 2 * text.num_layers * text.num_kv_heads * text.head_dim * dtype.itemsize
  bandwidth = device_bandwidth()
  sampling = sampler_lib.SamplingParams(stop_token_ids=(), max_new_tokens=args.new_tokens)
  modes = {"both": (False, True), "yes": (True,), "no": (False,)}[args.unstack]
  rng = np.random.RandomState(0)
  device = jax.devices()[0]
  print(f"{args.preset} text decoder, {text.num_layers} layers, {args.dtype}, prompt "
        f"{args.prompt}, {args.new_tokens} new tokens, greedy; {device.device_kind} "
        f"({device.platform}), jax {jax.__version__}")
  print(f"weights read per step {weight_bytes / 1e9:.2f} GB; KV cache {kv_per_token / 1e3:.1f} kB "
        f"per token; measured read bandwidth {bandwidth / 1e12:.2f} TB/s")
  print("| batch | decode | compile+first s | prefill ms | decode ms/step | tokens/s | "
        "roofline tokens/s | of roofline |")
  print("|---|---|---|---|---|---|---|---|")

  def report(b, unstack, compile_s, t_prefill, step, floor):  # as soon as measured
    kind = {"hf": "transformers generate", True: "per-layer", False: "scanned"}[unstack]
    ours = unstack != "hf"
    print(f"| {b} | {kind} | {f'{compile_s:.1f}' if ours else '-'} | "
          f"{f'{t_prefill * 1e3:.1f}' if ours else '-'} | {step * 1e3:.2f} | {b / step:.0f} | "
          f"{b / floor:.0f} | {floor / step:.0%} |", flush=True)

  for b in [int(x) for x in args.batch.split(",")]:
    batch = {"input_ids": rng.randint(3, 150000, (b, args.prompt)).astype(np.int64),
             "attention_mask": np.ones((b, args.prompt), np.int64)}
    for unstack in modes:
      sampler = sampler_lib.Sampler(params, config, pad_id=0, unstack_layers=unstack,
                                    min_length_bucket=args.prompt)
      start = time.perf_counter()
      sampler(batch, sampling)  # compile
      compile_s = time.perf_counter() - start
      inputs, _ = sampler.prepare(batch)
      cache_len = inputs["input_ids"].shape[1] + args.new_tokens
      prefill = lambda: jax.block_until_ready(decode_step.prefill(
          params, config, inputs, 1, cache_len, None, unstack)["logits"])
      prefill()
      t_total = median_time(lambda: sampler(batch, sampling), args.runs)
      t_prefill = median_time(prefill, args.runs)
      step = (t_total - t_prefill) / args.new_tokens
      live = args.prompt + (args.new_tokens + 1) / 2  # mean context over the decode steps
      floor = (weight_bytes + b * live * kv_per_token) / bandwidth
      report(b, unstack, compile_s, t_prefill, step, floor)
      del sampler
    if args.hf:
      report(b, "hf", 0.0, float("nan"), hf_step(config, args, batch), floor)


def hf_step(config, args, batch) -> float:
  """Seconds per decode step of transformers' generate on a Qwen2 model of these shapes."""
  import torch
  import transformers
  text = config.text
  device = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = getattr(torch, args.dtype)
  hf_config = transformers.Qwen2Config(
      vocab_size=text.vocab_size, hidden_size=text.hidden_size,
      intermediate_size=text.intermediate_size, num_hidden_layers=text.num_layers,
      num_attention_heads=text.num_heads, num_key_value_heads=text.num_kv_heads,
      rms_norm_eps=text.rms_norm_eps, tie_word_embeddings=text.tie_word_embeddings,
      max_position_embeddings=max(text.max_position_embeddings, args.prompt + args.new_tokens))
  with torch.device(device):
    model = transformers.Qwen2ForCausalLM._from_config(hf_config, dtype=dtype).eval()
  ids = torch.tensor(batch["input_ids"], device=device)

  def generate(n):
    with torch.no_grad():
      out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    out.cpu()

  generate(2)  # warm-up
  t_full = median_time(lambda: generate(args.new_tokens + 1), args.runs)
  t_one = median_time(lambda: generate(1), args.runs)
  del model
  if device == "cuda":
    torch.cuda.empty_cache()
  return (t_full - t_one) / args.new_tokens


def median_time(fn, runs: int) -> float:
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


if __name__ == "__main__":
  main()
