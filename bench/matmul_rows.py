"""Why a CPU decode step costs what it does: XLA's [M, 512] x [512, 32000] matmul (the bench
config's LM head) against the row count M, float32 warm and cold (the weights evicted by a 256
MiB read first, as the layers' weights are inside a decode step), and at 8 rows the bfloat16
and int8 variants the greedy screen could use. Best of --runs calls each. With torch installed,
the same dots in torch (what transformers' generate runs, --threads threads), and a second table
of prefill-shaped float32 matmuls (the bench's vision and text layers) in both: the CPU's BLAS
decides much of the sampler bench's ratio (bench/RESULTS.md, session 11). A last table runs the
decode step's weight matmuls inside one jitted loop (no attention, no sampling): 8 rows through
the bench config's float32 layer matrices, the bfloat16 head, or both, and the rate each step
reads its weights at, which shows what the step's working set costs once it outgrows the cache.

  python bench/matmul_rows.py [--runs 50] [--threads 2] [--loop-steps 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import device_bandwidth, machine  # noqa: E402

K, N = 512, 32000
# [M, K] x [K, N] of the bench model's prefill: vision qkv, gate/up and down over 8 images of
# 256 patches; text gate/up and down over 8 prompts of 96 tokens
PREFILL = ((2048, 256, 768), (2048, 256, 1280), (2048, 640, 256), (768, 512, 2816),
           (768, 1408, 512))
# one decoder layer's [K, N] weights in the bench config: q|k|v, o, gate|up, down
LAYER = ((512, 768), (512, 512), (512, 2816), (1408, 512))


def loop_step_ms(layers: int, head: bool, steps: int, runs: int) -> tuple[float, float]:
  """(median ms per step, MB of weights per step) of a jitted `steps`-step loop over 8 rows:
  `layers` layers of float32 `LAYER` matmuls (a residual stream through them), then with
  `head` the bfloat16 [N, K] head screen's dot. Median of `runs` calls after a compile."""
  import jax
  import jax.numpy as jnp
  rng = np.random.RandomState(1)
  ws = [[jnp.asarray(rng.randn(*s).astype(np.float32) * 0.02) for s in LAYER]
        for _ in range(layers)]
  wb = jnp.asarray(rng.randn(N, K).astype(np.float32) * 0.02).astype(jnp.bfloat16)

  def step(_, x):
    for qkv, o, gate_up, down in ws:
      x = x + (x @ qkv)[:, :K] @ o
      g = x @ gate_up
      x = x + (jax.nn.silu(g[:, :1408]) * g[:, 1408:]) @ down
    if head:
      s = jnp.einsum("VD,RD->RV", wb, x.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
      x = x + jnp.max(s, -1, keepdims=True) * 1e-3
    return x / (1 + jnp.max(jnp.abs(x)))

  loop = jax.jit(lambda x: jax.lax.fori_loop(0, steps, step, x))
  x = jnp.asarray(rng.randn(8, K).astype(np.float32))
  jax.block_until_ready(loop(x))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(loop(x))
    times.append((time.perf_counter() - start) / steps)
  mb = (layers * sum(k * n for k, n in LAYER) * 4 + (N * K * 2 if head else 0)) / 1e6
  return float(np.median(times)) * 1e3, mb


def torch_best(a, b, runs: int) -> float:
  """Best of `runs` torch matmuls of the float32 arrays a @ b (numpy or torch)."""
  import torch
  a, b = (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, np.float32))
          for x in (a, b))
  a @ b
  out = float("inf")
  for _ in range(runs):
    start = time.perf_counter()
    a @ b
    out = min(out, time.perf_counter() - start)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", type=int, default=50)
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
  parser.add_argument("--loop-steps", type=int, default=64, help="steps of the decode loop")
  args = parser.parse_args()
  try:
    import torch
    torch.set_num_threads(args.threads)
  except ImportError:
    torch = None
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
  print(f"host CPU: {machine()}")
  with_torch = f" torch {torch.__version__} ({args.threads} threads) warm ms |" if torch else ""
  print(f"| rows | float32 warm ms | GB/s | GFLOP/s | float32 cold ms | GB/s |{with_torch}")
  print("|---|---|---|---|---|---|" + ("---|" if torch else ""))
  w_torch = torch.from_numpy(np.array(w)) if torch else None  # one host copy of the head
  for m in (1, 2, 4, 8, 16, 32):
    x = jnp.asarray(rng.randn(m, K).astype(np.float32))
    warm, cold = best(dot, x, w), best(dot, x, w, cold=True)
    theirs = f" {torch_best(x, w_torch, args.runs) * 1e3:.3f} |" if torch else ""
    print(f"| {m} | {warm * 1e3:.3f} | {w.nbytes / warm / 1e9:.0f} | "
          f"{2 * m * K * N / warm / 1e9:.0f} | {cold * 1e3:.3f} | {w.nbytes / cold / 1e9:.0f} |"
          + theirs)
  x = rng.randn(8, K).astype(np.float32)
  wb = w.astype(jnp.bfloat16)
  bf16 = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32))
  q8 = jnp.asarray(rng.randint(-127, 128, (K, N)).astype(np.int8))
  i8 = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.int32))
  print(f"8 rows, warm: bfloat16 inputs {best(bf16, jnp.asarray(x, jnp.bfloat16), wb) * 1e3:.3f} "
        f"ms, int8 {best(i8, jnp.asarray(np.clip(x * 40, -127, 127), jnp.int8), q8) * 1e3:.3f} ms")
  print(f"\ndecode-shaped loop: 8 rows, {args.loop_steps} steps in one jitted loop, median of "
        f"{max(args.runs // 10, 3)} calls")
  print("| float32 layers | bfloat16 head | MB read per step | ms per step | GB/s |")
  print("|---|---|---|---|---|")
  for layers, head in ((4, False), (8, False), (16, False), (0, True), (4, True)):
    ms, mb = loop_step_ms(layers, head, args.loop_steps, max(args.runs // 10, 3))
    print(f"| {layers} | {'yes' if head else 'no'} | {mb:.1f} | {ms:.2f} | {mb / ms:.1f} |")
  if torch is None:
    return
  print("\nprefill-shaped float32 matmuls, warm, GFLOP/s (best of --runs)")
  print("| [M, K] x [K, N] | XLA | torch | XLA time / torch time |")
  print("|---|---|---|---|")
  for m, k, n in PREFILL:
    a, b = rng.randn(m, k).astype(np.float32), rng.randn(k, n).astype(np.float32)
    ours, theirs = best(dot, jnp.asarray(a), jnp.asarray(b)), torch_best(a, b, args.runs)
    flop = 2 * m * k * n / 1e9
    print(f"| [{m}, {k}] x [{k}, {n}] | {flop / ours:.0f} | {flop / theirs:.0f} | "
          f"{ours / theirs:.2f} |")


if __name__ == "__main__":
  main()
