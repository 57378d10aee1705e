"""Shared pieces of the benchmarks: the ~50M-parameter Qwen2.5-VL-shaped config, timing."""

from __future__ import annotations

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


def timed(fn, runs):
  fn()  # warm-up / compile
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), min(times)


def device_bandwidth(mbytes: int | None = None) -> float:
  """Bytes/s of a large sequential read on the default JAX device (best of 5).

  CPU: a numpy sum over 512 MiB (what a decode step's weight read sees on this machine);
  accelerators: a jitted float32 sum over 4 GiB (HBM read bandwidth; datasheets quote it too).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  cpu = jax.devices()[0].platform == "cpu"
  mbytes = mbytes or (512 if cpu else 4096)
  if cpu:
    a = np.ones(mbytes * 2**20 // 4, np.float32)
    run = a.sum
  else:
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
