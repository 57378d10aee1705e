"""Where a sampler call goes: the decode step by ablation, and prefill vs decode for both sides.

The bench/sampler.py setup (~50M config, batch 8 prompts with a 224x224 image each, greedy,
float32, tokens only). Two tables:

1. Decode step ablations. The decode program is compiled once as is and once per variant with
   one piece replaced by a trivial op of the same shapes (so the rest of the step is unchanged);
   the variants' decode calls (--new-tokens steps from the same compiled prefill) alternate,
   --rounds times, and each row is the median ms per step. A piece costs (base - variant).
   The variants run the float32 head; a last row times the step as the Sampler runs greedy
   tokens-only on CPU, with the head screened in bfloat16 (`vlm_jax/greedy_screen.py`).
2. Phases: our prefill (the compiled `decode_step.prefill` alone) and per-step decode
   ((call - prefill) / steps), and transformers' `generate` with 1 and with --new-tokens new
   tokens (its prefill is the 1-token call; per step = the difference / (new tokens - 1)),
   interleaved per round.

  python bench/decode_parts.py [--new-tokens 128] [--rounds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved, lively_bench_model, machine  # noqa: E402
from bench.sampler import prompts  # noqa: E402


def _swap(module, name, fn):
  """A patch: module.name = fn while the variant traces; returns the undo."""
  def patch():
    old = getattr(module, name)
    setattr(module, name, fn)
    return lambda: setattr(module, name, old)
  return patch


def _variants():
  import jax.numpy as jnp
  from vlm_jax import layers, text
  lm_head = text.lm_head

  def fake_head(p, c, h):  # [R, D] -> [R, V] without the matmul (the prefill keeps the real one)
    return jnp.tile(h, (1, -(-c.vocab_size // h.shape[-1])))[..., :c.vocab_size]

  def matmuls_only(x, p, kv, layer, cos, sin, mask, end, config, last_only=False):
    """The layer's four weight matmuls (fused q/k/v, o, fused gate/up, down) and nothing else."""
    d, f = x.shape[-1], p["mlp"]["down"]["kernel"].shape[0]
    o = p["o"]["kernel"].reshape(-1, d)  # [N H, D]; the q part of the fused output is N H wide
    x = x + layers.dense(x, p["qkv"])[..., :o.shape[0]] @ o
    g = layers.dense(x, p["mlp"]["gate_up"])
    return x + layers.dense(g[..., :f] * g[..., f:], p["mlp"]["down"]), kv

  decode_only = lambda fn: (lambda p, c, h: fn(p, c, h) if h.ndim == 2 else lm_head(p, c, h))
  no_layers = _swap(text, "_layer", lambda x, p, kv, *a: (x * 1.0001, kv))
  no_head = _swap(text, "lm_head", decode_only(fake_head))

  def neither():
    undo = [no_layers(), no_head()]
    return lambda: [u() for u in undo]

  return {
      "whole step": None,
      "no attention": _swap(layers, "attention_heads_major",
                            lambda q, k, v, m: q + k[..., :1, :1].sum() + v[..., :1, :1].sum()),
      "layers: weight matmuls only": _swap(text, "_layer", matmuls_only),
      "no layers": no_layers,
      "no layers, no LM head": neither,
  }


def decode_ablations(params, config, batch, new_tokens: int, rounds: int):
  import jax
  import jax.numpy as jnp
  from vlm_jax import decode_step, sampler as sampler_lib, stops
  s = sampler_lib.Sampler(params, config, pad_id=0, unstack_layers=True)
  inputs, rows = s.prepare(batch)
  padded = inputs["input_ids"].shape[0]
  cache_len = inputs["input_ids"].shape[1] + new_tokens
  spec = decode_step.Spec(new_tokens, 1, True, 0, False, False)
  prefill = decode_step.prefill.lower(params, config, inputs, 1, cache_len, None,
                                      True).compile()
  controls = {"rng": jax.random.key(0), "max_new": jnp.int32(new_tokens),
              "temperature": jnp.float32(1e-6),
              "top_p": jnp.float32(1), "pad_id": jnp.int32(0),
              "stop_table": jnp.asarray(stops.stop_table(None, (), config.text.vocab_size)),
              "stop_ids": jnp.asarray(stops.stop_ids(())),
              "banned": jnp.asarray(s._banned(sampler_lib.SamplingParams()), jnp.int32),
              "row_ids": jnp.asarray(sampler_lib._row_ids(None, rows, padded, 1))}
  fresh = lambda: jax.block_until_ready(decode_step.init_state(
      prefill(params, inputs), spec, controls["stop_table"].shape[0], 0, np.arange(padded) < rows))
  compiled = {}
  for name, patch in _variants().items():
    decode_step.decode.clear_cache()
    undo = patch() if patch else None
    try:
      compiled[name] = (decode_step.decode.lower(params, config, fresh(), spec, controls,
                                                 True).compile(), controls)
    finally:
      if undo:
        undo()
  decode_step.decode.clear_cache()
  # the step as the Sampler runs tokens-only greedy on CPU: the head screened in bfloat16
  screened = dict(controls, screen=s._screen_tables())
  spec_screened = decode_step.Spec(new_tokens, 1, True, 0, False, False, screen=True)
  compiled["whole step, bf16-screened head"] = (decode_step.decode.lower(
      params, config, fresh(), spec_screened, screened, True).compile(), screened)
  times = {name: [] for name in compiled}
  for _ in range(rounds):
    for name, (program, ctl) in compiled.items():
      state = fresh()
      start = time.perf_counter()
      jax.block_until_ready(program(params, state, ctl))
      times[name].append((time.perf_counter() - start) / new_tokens)
  return {name: statistics.median(t) for name, t in times.items()}


def phases(model, params, config, batch, new_tokens: int, rounds: int):
  import jax
  import torch
  from vlm_jax import decode_step, sampler as sampler_lib
  s = sampler_lib.Sampler(params, config, pad_id=0)
  tokens_only = sampler_lib.SamplingParams(max_new_tokens=new_tokens, logprobs=False,
                                           stop_token_ids=())  # fixed length, as generate
  inputs, _ = s.prepare(batch)
  cache_len = inputs["input_ids"].shape[1] + new_tokens
  tensors = {k: torch.tensor(v) for k, v in batch.items()}

  def hf(n):
    with torch.no_grad():
      model.generate(**tensors, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                     eos_token_id=None, pad_token_id=0)

  runs = interleaved({
      "ours prefill": lambda: jax.block_until_ready(decode_step.prefill(
          params, config, inputs, 1, cache_len, None, True)["logits"]),
      "ours call": lambda: s(batch, tokens_only),
      "hf 1 token": lambda: hf(1), "hf call": lambda: hf(new_tokens)}, rounds)
  med = {k: statistics.median(v) for k, v in runs.items()}
  return {"ours": (med["ours prefill"], (med["ours call"] - med["ours prefill"]) / new_tokens),
          "transformers": (med["hf 1 token"],
                           (med["hf call"] - med["hf 1 token"]) / (new_tokens - 1))}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  args = parser.parse_args()
  import jax
  import torch
  import transformers
  torch.set_num_threads(args.threads)
  model, config, params = lively_bench_model()  # as bench/sampler.py
  batch = prompts(8)
  steps = decode_ablations(params, config, batch, args.new_tokens, args.rounds)
  print(f"decode step ablations: batch 8, {args.new_tokens} steps, float32, jax "
        f"{jax.__version__} on {jax.devices()[0].device_kind}, medians of {args.rounds} "
        "alternating calls")
  print(f"host CPU: {machine()}")
  print("| variant | ms per step | the removed piece costs (ms) |")
  print("|---|---|---|")
  base = steps["whole step"]
  for name, t in steps.items():
    cost = "" if name.startswith("whole step") else f"{(base - t) * 1e3:.3f}"
    print(f"| {name} | {t * 1e3:.3f} | {cost} |")
  split = phases(model, params, config, batch, args.new_tokens, args.rounds)
  print(f"\nphases (interleaved, medians of {args.rounds} rounds; transformers "
        f"{transformers.__version__}, torch threads {args.threads})")
  print("| implementation | prefill s | ms per decode step |")
  print("|---|---|---|")
  for name, (pre, step) in split.items():
    print(f"| {name} | {pre:.3f} | {step * 1e3:.2f} |")
  print(f"ours faster by: prefill {split['transformers'][0] / split['ours'][0]:.2f}x, decode "
        f"step {split['transformers'][1] / split['ours'][1]:.2f}x")


if __name__ == "__main__":
  main()
