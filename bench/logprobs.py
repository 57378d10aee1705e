"""Chunked log-prob/entropy kernel vs the naive full-logits computation: peak memory and time.

Shapes: B=1, T=2048, V=152064 (Qwen2.5-VL vocabulary), D=512 (a narrow hidden keeps the CPU run
short; memory of the naive path is dominated by the [B, T, V] float32 logits either way).
Peak memory is XLA's own accounting of the compiled program (`memory_analysis()`: temporaries
plus outputs, arguments excluded), the same number the allocator must provide on any backend;
temporaries alone are printed too (at a wide D the [D, V] weight gradient, an output every
implementation must produce, dominates the peak). Time: median of --runs runs after a warm-up,
forward alone and forward + backward; forward + backward also for the one-sweep kernel
(`logprobs.token_loss`, what GRPO and SFT train through). Each chunk_t and gradient sweep
("sequence", "vocab", "auto"; see `vlm_jax/logprobs.py`) given is measured in the same run.

  python bench/logprobs.py [--t 2048] [--v 152064] [--d 512] [--chunk-t 256,512]
                           [--sweep sequence,vocab] [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import machine  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--b", type=int, default=1)
  parser.add_argument("--t", type=int, default=2048)
  parser.add_argument("--v", type=int, default=152064)
  parser.add_argument("--d", type=int, default=512)
  parser.add_argument("--chunk-t", default="256", help="comma-separated")
  parser.add_argument("--sweep", default="auto", help="comma-separated gradient sweeps")
  parser.add_argument("--chunk-v", type=int, default=0)
  parser.add_argument("--dtype", default="float32", help="of the hidden states and LM head")
  parser.add_argument("--runs", type=int, default=3)
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp
  from vlm_jax import logprobs

  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  hidden = jax.random.normal(k1, (args.b, args.t, args.d), jnp.float32).astype(args.dtype)
  w = (jax.random.normal(k2, (args.d, args.v), jnp.float32) * 0.02).astype(args.dtype)
  targets = jax.random.randint(k3, (args.b, args.t), 0, args.v)
  chunk_v = args.chunk_v or None
  chunks = [int(c) for c in args.chunk_t.split(",")]
  sweeps = args.sweep.split(",")
  forward = {"naive": lambda h, w_: logprobs.naive_logprobs_and_entropy(h, w_, targets)}
  for c in chunks:
    forward[f"chunked c{c}"] = functools.partial(
        lambda h, w_, c: logprobs.logprobs_and_entropy(h, w_, targets, c, chunk_v), c=c)
  summed = lambda fn: lambda h, w_: sum(jnp.sum(x) for x in fn(h, w_))
  backward = {"naive": jax.grad(summed(forward["naive"]), (0, 1))}
  for c in chunks:
    for sweep in sweeps:
      custom = lambda h, w_, c=c, sweep=sweep: logprobs.logprobs_and_entropy(
          h, w_, targets, c, chunk_v, sweep)
      one_sweep = lambda h, w_, c=c, sweep=sweep: logprobs.token_loss(
          h, w_, targets, lambda lp, e, a: lp + e, {}, c, chunk_v, sweep)[0]
      backward[f"custom VJP c{c} {sweep}"] = jax.grad(summed(custom), (0, 1))
      backward[f"one-sweep token_loss c{c} {sweep}"] = jax.grad(one_sweep, (0, 1))

  device = jax.devices()[0]
  print(f"B={args.b} T={args.t} V={args.v} D={args.d} {args.dtype} chunk_v={chunk_v} on "
        f"{device.device_kind} ({device.platform}), jax {jax.__version__}")
  print(f"host CPU: {machine()}")
  print("loss for the backward pass: sum(log p) + sum(entropy); outputs of forward+backward are "
        "the gradients (the [D, V] weight gradient is the same for every implementation)")
  print("| implementation | pass | peak MiB (temporaries + outputs) | temporaries MiB | median s "
        "| vs naive |")
  print("|---|---|---|---|---|---|")
  for mode, impls in (("forward", forward), ("forward+backward", backward)):
    naive = None
    for name, f in impls.items():  # naive first: each row is printed as soon as it is measured
      compiled = jax.jit(f).lower(hidden, w).compile()
      mem = compiled.memory_analysis()
      temp, peak = mem.temp_size_in_bytes / 2**20, (mem.temp_size_in_bytes
                                                   + mem.output_size_in_bytes) / 2**20
      jax.block_until_ready(compiled(hidden, w))
      times = []
      for _ in range(args.runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(hidden, w))
        times.append(time.perf_counter() - start)
      t = statistics.median(times)
      ratio = "" if naive is None else (
          f"memory {peak / naive[0]:.3f} (temporaries {temp / max(naive[1], 1e-9):.3f}), "
          f"time {t / naive[2]:.2f}x")
      naive = naive or (peak, temp, t)
      print(f"| {name} | {mode} | {peak:.0f} | {temp:.0f} | {t:.4f} | {ratio} |", flush=True)

if __name__ == "__main__":
  main()
