"""Why a CPU decode step costs what it does: XLA's [M, 512] x [512, 32000] matmul (the bench
config's LM head) against the row count M, float32 warm and cold (the weights evicted by a 256
MiB read first, as the layers' weights are inside a decode step), and at 8 rows the bfloat16
and int8 variants the greedy screen could use. Best of --runs calls each.

  python bench/matmul_rows.py [--runs 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import device_bandwidth  # noqa: E402

K, N = 512, 32000


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", type=int, default=50)
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp
  rng = np.random.RandomState(0)
  evict = jnp.ones(64 * 2**20, jnp.float32)
  flush = jax.jit(jnp.sum)

  def best(fn, *a, cold=False):
    jax.block_until_ready(fn(*a))
    out = float("inf")
    for _ in range(args.runs):
      if cold:
        flush(evict).block_until_ready()
      start = time.perf_counter()
      jax.block_until_ready(fn(*a))
      out = min(out, time.perf_counter() - start)
    return out

  w = jnp.asarray(rng.randn(K, N).astype(np.float32))
  dot = jax.jit(lambda x, w: x @ w)
  print(f"XLA on {jax.devices()[0].platform}, jax {jax.__version__}; weights {w.nbytes / 1e6:.1f} "
        f"MB; read bandwidth {device_bandwidth() / 1e9:.0f} GB/s (bench.common)")
  print("| rows | float32 warm ms | GB/s | GFLOP/s | float32 cold ms | GB/s |")
  print("|---|---|---|---|---|---|")
  for m in (1, 2, 4, 8, 16, 32):
    x = jnp.asarray(rng.randn(m, K).astype(np.float32))
    warm, cold = best(dot, x, w), best(dot, x, w, cold=True)
    print(f"| {m} | {warm * 1e3:.3f} | {w.nbytes / warm / 1e9:.0f} | "
          f"{2 * m * K * N / warm / 1e9:.0f} | {cold * 1e3:.3f} | {w.nbytes / cold / 1e9:.0f} |")
  x = rng.randn(8, K).astype(np.float32)
  wb = w.astype(jnp.bfloat16)
  bf16 = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32))
  q8 = jnp.asarray(rng.randint(-127, 128, (K, N)).astype(np.int8))
  i8 = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.int32))
  print(f"8 rows, warm: bfloat16 inputs {best(bf16, jnp.asarray(x, jnp.bfloat16), wb) * 1e3:.3f} "
        f"ms, int8 {best(i8, jnp.asarray(np.clip(x * 40, -127, 127), jnp.int8), q8) * 1e3:.3f} ms")


if __name__ == "__main__":
  main()
