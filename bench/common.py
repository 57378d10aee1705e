"""Shared pieces of the benchmarks: the ~50M-parameter Qwen2.5-VL-shaped config, timing."""

from __future__ import annotations

import os
import platform
import statistics
import time


def bench_config():
  from transformers import Qwen2_5_VLConfig
  text = dict(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
              num_attention_heads=8, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
              rope_parameters=dict(rope_type="default", mrope_section=[8, 12, 12],
                                   rope_theta=1e6))
  vision = dict(depth=8, hidden_size=256, intermediate_size=640, num_heads=4,
                out_hidden_size=512, fullatt_block_indexes=[3, 7], tokens_per_second=2)
  return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=31990,
                          video_token_id=31991, vision_start_token_id=31992,
                          vision_end_token_id=31993)


def lively_bench_model():
  """(transformers model, our config, our params): the random `bench_config` model with its
  matrices scaled 6x, so greedy continuations vary (a 0.02-init model repeats one token),
  loaded into vlm_jax from a saved copy. The model is on CPU, in eval mode."""
  import tempfile

  import torch
  import transformers

  import vlm_jax
  torch.manual_seed(0)
  model = transformers.Qwen2_5_VLForConditionalGeneration(bench_config()).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 2 and "embed" not in name:
        p.mul_(6.0)
  with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    config, params = vlm_jax.load_hf(tmp)
  return model, config, params


def timed(fn, runs):
  fn()  # warm-up / compile
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), min(times)


def interleaved(fns: dict, rounds: int) -> dict:
  """Times several callables in alternation: one warm-up call each, then `rounds` rounds that
  call every one of them once (the order rotating per round). Returns {name: [seconds]}.

  On a shared VM whose speed drifts over minutes, timing A's runs and then B's runs puts the
  drift into the A/B ratio; per-round ratios of interleaved runs keep most of it out.
  """
  names = list(fns)
  for name in names:
    fns[name]()
  times = {name: [] for name in names}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      start = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - start)
  return times


def paired_ratio(numerator: list, denominator: list) -> float:
  """Median over rounds of numerator[i] / denominator[i] (`interleaved` times)."""
  return statistics.median(a / b for a, b in zip(numerator, denominator))


def device_bandwidth(mbytes: int | None = None) -> float:
  """Bytes/s of a large sequential read on the default JAX device (best of 5): a jitted float32
  sum, 512 MiB on CPU, 4 GiB on accelerators (HBM read bandwidth; datasheets quote it too).

  On CPU XLA's sum is vectorised and multi-threaded, which a numpy sum is not: on the 2-core VM
  it reads ~70 GB/s where numpy's single-threaded pairwise sum reached ~21-25 GB/s (the figure
  this function gave before 2026-11-26, which understated the CPU roofline ~3x).
  """
  import jax
  import jax.numpy as jnp
  cpu = jax.devices()[0].platform == "cpu"
  mbytes = mbytes or (512 if cpu else 4096)
  a = jnp.ones(mbytes * 2**20 // 4, jnp.float32)
  total = jax.jit(jnp.sum)
  run = lambda: total(a).block_until_ready()
  run()
  best = float("inf")
  for _ in range(5):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  return a.nbytes / best


def decode_matmul_floor(text_params: dict, hidden_size: int, rows: int, runs: int = 20) -> float:
  """Seconds per decode step of the step's weight matmuls alone (every decoder kernel and the
  LM head, activations [rows, in]), best of `runs`: what the backend's matmuls need for one
  step, with no attention, norms, sampling or loop overhead. On CPU at small batch this, not
  the memory read, bounds a step (XLA's [8, 512] x [512, N] matmul reads ~35 GB/s)."""
  import jax
  import jax.numpy as jnp
  mats = []
  for path, w in jax.tree_util.tree_leaves_with_path(text_params["layers"]):
    if "kernel" in jax.tree_util.keystr(path):
      for layer in w:  # per-layer arrays: no slicing inside the timed program
        shape = (hidden_size, -1) if layer.shape[0] == hidden_size else (-1, hidden_size)
        mats.append(jnp.asarray(layer.reshape(shape)))
  head = text_params.get("lm_head", {}).get("kernel")
  mats.append(head if head is not None else text_params["embed"]["embedding"].T)
  xs = [jnp.ones((rows, m.shape[0]), m.dtype) for m in mats]
  step = jax.jit(lambda xs, ms: [jnp.sum(x @ m) for x, m in zip(xs, ms)])
  jax.block_until_ready(step(xs, mats))
  best = float("inf")
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(step(xs, mats))
    best = min(best, time.perf_counter() - start)
  return best


def machine() -> str:
  """The host CPU in one line: model name, cores this process may use, and the vector/matrix
  extensions that decide which BLAS kernels run (x86: AVX-512, AVX-512 BF16, AMX). The same
  bench gives different ratios on different CPUs (bench/RESULTS.md: transformers' MKL/oneDNN
  matmuls are relatively faster on Intel than on AMD), so each printed table names its CPU."""
  name, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          name = value.strip()
        elif key.strip() in ("flags", "Features"):
          flags = set(value.split())
          break
  except OSError:
    pass
  wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "sve", "asimd") if f in flags]
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return f"{name}, {cores} cores" + (f" ({' '.join(wanted)})" if wanted else "")
