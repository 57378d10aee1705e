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


def matmul_loop(layer_list: list, head, rows: int, steps: int):
  """A zero-argument callable running `steps` decode steps of the weight matmuls alone in one
  jitted loop over `rows` rows: each layer's fused q/k/v, o, gate/up and down matmuls, through
  the per-layer copy the sampler decodes with (`text.unstack_layers`), then the LM head as the
  sampler reads it (`head`: the greedy screen's bfloat16 [V, D] table, or the float32 [D, V]
  head). No attention, norms, cache or token choice. The weights are arguments, not constants,
  so the loop reads the sampler's own arrays: timed in the same rounds as the sampler, it meets
  the same VM speed and cache pressure. On CPU at small batch the step's weight matmuls, not the
  memory read, bound a decode step (bench/RESULTS.md, sessions 11-14)."""
  import jax
  import jax.numpy as jnp
  dim = layer_list[0]["o"]["kernel"].shape[-1]

  def step(_, carry):
    x, layer_list, head = carry
    for p in layer_list:
      o = p["o"]["kernel"].reshape(-1, dim)
      x = x + (x @ p["qkv"]["kernel"])[:, :o.shape[0]] @ o
      g = x @ p["mlp"]["gate_up"]["kernel"]
      f = g.shape[-1] // 2
      x = x + (jax.nn.silu(g[:, :f]) * g[:, f:]) @ p["mlp"]["down"]["kernel"]
    if head.dtype == jnp.bfloat16:  # the screen's [V, D] table
      s = jnp.einsum("VD,RD->VR", head, x.astype(head.dtype), preferred_element_type=jnp.float32)
    else:
      s = x @ head
    x = x + 1e-3 * jnp.max(s)
    return x / (1 + jnp.max(jnp.abs(x))), layer_list, head

  loop = jax.jit(lambda x, ls, h: jax.lax.fori_loop(0, steps, step, (x, ls, h))[0])
  weights = [{"qkv": p["qkv"], "o": p["o"], "mlp": {k: p["mlp"][k] for k in ("gate_up", "down")}}
             for p in layer_list]
  x = jnp.ones((rows, dim), jnp.float32)
  return lambda: jax.block_until_ready(loop(x, weights, head))


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
