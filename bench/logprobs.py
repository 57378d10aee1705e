"""Chunked log-prob/entropy kernel vs the naive full-logits computation: peak memory and time.

Shapes: B=1, T=2048, V=152064 (Qwen2.5-VL vocabulary), D=512 (a narrow hidden keeps the CPU run
short; memory of the naive path is dominated by the [B, T, V] float32 logits either way).
Peak memory is XLA's own accounting of the compiled program (`memory_analysis()`: temporaries
plus outputs, arguments excluded), the same number the allocator must provide on any backend;
temporaries alone are printed too (at a wide D the [D, V] weight gradient, an output every
implementation must produce, dominates the peak). Time: median of --runs runs after a warm-up,
forward alone and forward + backward; forward + backward also for the one-sweep kernel
(`logprobs.token_loss`, what GRPO and SFT train through).

  python bench/logprobs.py [--t 2048] [--v 152064] [--d 512] [--chunk-t 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--b", type=int, default=1)
  parser.add_argument("--t", type=int, default=2048)
  parser.add_argument("--v", type=int, default=152064)
  parser.add_argument("--d", type=int, default=512)
  parser.add_argument("--chunk-t", type=int, default=256)
  parser.add_argument("--chunk-v", type=int, default=0)
  parser.add_argument("--runs", type=int, default=3)
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp
  from vlm_jax import logprobs

  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  hidden = jax.random.normal(k1, (args.b, args.t, args.d), jnp.float32)
  w = jax.random.normal(k2, (args.d, args.v), jnp.float32) * 0.02
  targets = jax.random.randint(k3, (args.b, args.t), 0, args.v)
  chunk_v = args.chunk_v or None
  forward = {
      "naive": lambda h, w_: logprobs.naive_logprobs_and_entropy(h, w_, targets),
      "chunked": lambda h, w_: logprobs.logprobs_and_entropy(h, w_, targets, args.chunk_t,
                                                             chunk_v),
  }
  summed = lambda fn: lambda h, w_: sum(jnp.sum(x) for x in fn(h, w_))
  one_sweep = lambda h, w_: logprobs.token_loss(h, w_, targets, lambda lp, e, a: lp + e, {},
                                                args.chunk_t, chunk_v)[0]
  backward = {name: jax.grad(summed(fn), (0, 1)) for name, fn in forward.items()}
  backward["one-sweep token_loss"] = jax.grad(one_sweep, (0, 1))

  rows = []
  for mode, impls in (("forward", forward), ("forward+backward", backward)):
    for name, f in impls.items():
      compiled = jax.jit(f).lower(hidden, w).compile()
      mem = compiled.memory_analysis()
      temp, out = mem.temp_size_in_bytes / 2**20, mem.output_size_in_bytes / 2**20
      jax.block_until_ready(compiled(hidden, w))
      times = []
      for _ in range(args.runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(hidden, w))
        times.append(time.perf_counter() - start)
      rows.append((name, mode, temp + out, temp, statistics.median(times)))
  device = jax.devices()[0]
  print(f"B={args.b} T={args.t} V={args.v} D={args.d} chunk_t={args.chunk_t} "
        f"chunk_v={chunk_v} on {device.device_kind} ({device.platform}), jax {jax.__version__}")
  print("loss for the backward pass: sum(log p) + sum(entropy); outputs of forward+backward are "
        "the gradients (the [D, V] weight gradient is the same for every implementation)")
  print("| implementation | pass | peak MiB (temporaries + outputs) | temporaries MiB | median s |")
  print("|---|---|---|---|---|")
  for name, mode, peak, temp, t in rows:
    print(f"| {name} | {mode} | {peak:.0f} | {temp:.0f} | {t:.4f} |")
  for name, mode, peak, temp, t in rows:
    if name == "naive":
      continue
    naive = next(r for r in rows if r[0] == "naive" and r[1] == mode)
    print(f"{mode}, {name}/naive: peak memory {peak / naive[2]:.3f}, temporaries "
          f"{temp / max(naive[3], 1e-9):.3f}, time {t / naive[4]:.2f}x")


if __name__ == "__main__":
  main()
