"""Decode throughput: our jitted KV-cache sampler vs transformers' `generate`, same weights.

The ~50M-parameter config of bench/forward.py; batch 8 prompts of different lengths, each with a
224x224 image (64 image tokens), left padded; greedy, exactly --new-tokens tokens per row (no eos),
float32 (on a GPU the script turns torch's TF32 off; run it with
JAX_DEFAULT_MATMUL_PRECISION=highest so JAX does not use TF32 either); with CUDA, transformers
runs on the GPU (`--torch-device`). Tokens/s = batch * new tokens / wall time of the whole call
(prefill included), median of --runs rounds after a warm-up (which compiles ours). Each round
calls transformers and both of ours once, in rotating order, and the speed-up is the median of
the per-round ratios (the shared VM's speed drifts). Ours runs twice: tokens only
(`SamplingParams(logprobs=False)`, what `generate` computes) and with the per-token log-probs and
entropies GRPO needs. The outputs are compared token for token. A 1-token call of ours (the
prefill) and a loop of the decode step's weight matmuls alone (`bench.common.matmul_loop`,
over the sampler's own weight copies) are timed in the same rounds for two printed ceilings:
that prefill plus every decode step at the read roofline, and that prefill plus every decode
step at the matmul loop's speed, what the backend's matmuls allow a float32-exact sampler.

With --n G > 1 (a GRPO rollout: G samples per prompt, --batch prompts), both sample at
temperature 1 (transformers: num_return_sequences=G, no top-k/top-p), so tokens differ and only
the time compares; ours prefills each prompt once and repeats its KV cache for the G samples.

  python bench/sampler.py [--batch 8] [--new-tokens 128] [--runs 3] [--n 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (device_bandwidth, interleaved, lively_bench_model,  # noqa: E402
                          machine, matmul_loop, paired_ratio)


def prompts(batch: int):
  rng = np.random.RandomState(0)
  rows = []
  for b in range(batch):
    text = rng.randint(3, 31000, 8 + 3 * b).tolist()
    rows.append(text[:4] + [31992] + [31990] * 64 + [31993] + text[4:])
  length = max(map(len, rows))
  ids = np.zeros((batch, length), np.int64)
  mask = np.zeros_like(ids)
  for b, r in enumerate(rows):
    ids[b, length - len(r):] = r
    mask[b, length - len(r):] = 1
  grid = np.tile(np.array([[1, 16, 16]]), (batch, 1))
  return dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=(ids == 31990).astype(np.int64),
              pixel_values=rng.randn(batch * 256, 1176).astype(np.float32), image_grid_thw=grid)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--runs", type=int, default=5, help="interleaved rounds")
  parser.add_argument("--n", type=int, default=1, help="samples per prompt (temperature 1)")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--torch-device", default=None, help="default: cuda when available")
  args = parser.parse_args()
  import jax
  import torch
  import transformers
  from vlm_jax import params as params_lib
  from vlm_jax.sampler import Sampler, SamplingParams
  torch.set_num_threads(args.threads)
  device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
  # float32 means float32: cuDNN convolutions (the patch embedding) use TF32 by default
  torch.backends.cudnn.allow_tf32 = False
  torch.backends.cuda.matmul.allow_tf32 = False
  model, config, params = lively_bench_model()
  batch = prompts(args.batch)
  tensors = {k: torch.tensor(v, device=device) for k, v in batch.items()}
  model = model.to(device)
  sampler = Sampler(params, config, pad_id=0)
  temperature = 1.0 if args.n > 1 else 0.0
  # with log-probs + entropies (GRPO); tokens only, as `generate`
  # no stop ids: every row makes all its tokens, as generate(min_new_tokens=..., eos=None)
  fixed = dict(n=args.n, temperature=temperature, stop_token_ids=())
  sampling = SamplingParams(max_new_tokens=args.new_tokens, **fixed)
  tokens_only = SamplingParams(max_new_tokens=args.new_tokens, logprobs=False, **fixed)
  one_token = SamplingParams(max_new_tokens=1, logprobs=False, **fixed)
  sample_kw = (dict(do_sample=True, num_return_sequences=args.n, temperature=1.0, top_k=None,
                    top_p=1.0) if args.n > 1 else dict(do_sample=False))

  def run_hf():
    with torch.no_grad():
      out = model.generate(**tensors, max_new_tokens=args.new_tokens, **sample_kw,
                           min_new_tokens=args.new_tokens, eos_token_id=None, pad_token_id=0)
    return out[:, batch["input_ids"].shape[1]:].cpu().numpy()

  progress = lambda *a: print(*a, file=sys.stderr, flush=True)  # where a cut-off run was
  progress("models ready")
  # the decode step's weight matmuls alone, through the sampler's own weight copies (the head as
  # the tokens-only call reads it), timed in the same rounds: the floor of a decode step
  rows = args.batch * args.n
  sampler(batch, tokens_only)  # makes the kept per-layer copy and the screen tables
  screened = sampler.greedy_screen and args.n == 1
  head = (sampler._screen_tables()["wb"] if screened  # noqa: SLF001 (bench introspection)
          else params["text"]["lm_head"]["kernel"])
  matmuls = matmul_loop(sampler._layer_copy()["text"]["layers"], head, rows,  # noqa: SLF001
                        args.new_tokens - 1)
  # interleaved rounds (one call of each per round): the VM's speed drifts by 10-30% over
  # minutes, and timing one side after the other put that drift into the speed-up
  runs = interleaved({"hf": run_hf, "ours": lambda: sampler(batch, sampling),
                      "bare": lambda: sampler(batch, tokens_only),
                      "prefill": lambda: sampler(batch, one_token), "matmuls": matmuls},
                     args.runs)
  t_hf, t_ours, t_bare = (statistics.median(runs[k]) for k in ("hf", "ours", "bare"))
  ratio_bare, ratio_ours = (paired_ratio(runs["hf"], runs[k]) for k in ("bare", "ours"))
  progress(f"medians over {args.runs} rounds: transformers {t_hf:.3f} s, ours with log-probs "
           f"{t_ours:.3f} s, tokens only {t_bare:.3f} s")
  theirs, ours = run_hf(), sampler(batch, sampling).tokens
  same = np.array_equal(theirs, ours) and np.array_equal(ours, sampler(batch, tokens_only).tokens)
  differ = theirs != ours  # first step where each row's greedy tokens part (near-tied logits)
  first = [int(np.argmax(d)) if d.any() else None for d in differ]
  n = args.batch * args.n * args.new_tokens
  # Two floors for a decode step (prefill excluded): reading the decoder weights and the LM
  # head once (the embedding only B rows) at the measured read bandwidth, and the step's weight
  # matmuls alone at this batch (on CPU the larger of the two: XLA's and torch's skinny matmuls
  # stream weights from memory at about half the read bandwidth).
  layer_params = params_lib.count_params(params["text"]["layers"])
  head_params = params_lib.count_params(params["text"]["lm_head"])
  step_bytes = 4 * (layer_params + head_params)
  bandwidth = device_bandwidth()
  roofline = rows * bandwidth / step_bytes
  # The ceiling of the speed-up on this machine for a float32-exact sampler: our prefill as
  # measured (a 1-token call; on CPU it is compute-bound near the float32 matmul peak), then
  # every decode step at the read roofline with the head read as the sampler reads it (bfloat16
  # when greedy-screened). Where this is under 3x, the CPU target is out of reach of any
  # implementation that keeps float32 weights (bench/RESULTS.md, sessions 11-12).
  read_bytes = 4 * layer_params + (2 if screened else 4) * head_params
  t_prefill = statistics.median(runs["prefill"])
  steps = args.new_tokens - 1
  t_floor = t_prefill + steps * read_bytes / bandwidth
  t_step = statistics.median(runs["matmuls"]) / steps
  matmul_floor = rows / t_step
  t_matmul_floor = t_prefill + steps * t_step
  ours_step = statistics.median(b - p for b, p in zip(runs["bare"], runs["prefill"])) / steps
  mode = (f"{args.n} samples per prompt at temperature 1 (tokens differ by design)" if args.n > 1
          else "greedy")
  print(f"batch {args.batch}, {args.new_tokens} new tokens, {mode}, float32; jax on "
        f"{jax.devices()[0].device_kind}, torch on {device} (threads {args.threads})"
        + ("" if args.n > 1 else f"; identical tokens: {same}"
           + ("" if same else f" (first differing step per row: {first})")))
  print(f"host CPU: {machine()}")
  print("| implementation | median s | tokens/s |")
  print("|---|---|---|")
  print(f"| transformers {transformers.__version__} generate | {t_hf:.2f} | {n / t_hf:.0f} |")
  print(f"| vlm_jax Sampler (jax {jax.__version__}), tokens only, as generate | {t_bare:.2f} | "
        f"{n / t_bare:.0f} |")
  print(f"| vlm_jax Sampler, + per-token log-probs and entropies (GRPO rollouts) | {t_ours:.2f} | "
        f"{n / t_ours:.0f} |")
  print(f"| decode roofline ({step_bytes / 1e6:.0f} MB weights per step at the measured "
        f"{bandwidth / 1e9:.0f} GB/s read bandwidth; prefill excluded) | - | {roofline:.0f} |")
  print(f"| decode matmul floor (the step's weight matmuls alone, [{rows}, in] x [in, out], in "
        f"one jitted loop over the sampler's weights, same rounds; prefill excluded) | - | "
        f"{matmul_floor:.0f} |")
  print(f"speed-up (median of per-round ratios): {ratio_bare:.2f}x tokens only "
        f"({ratio_ours:.2f}x with log-probs); per-round tokens-only ratios: "
        + ", ".join(f"{a / b:.2f}" for a, b in zip(runs["hf"], runs["bare"])))
  print(f"ours at {n / t_bare / roofline:.0%} of the read roofline and "
        f"{n / t_bare / matmul_floor:.0%} "
        f"of the matmul floor, transformers at {n / t_hf / roofline:.0%} / "
        f"{n / t_hf / matmul_floor:.0%}")
  print(f"ceiling: our 1-token call {t_prefill:.3f} s + {args.new_tokens - 1} steps reading "
        f"{read_bytes / 1e6:.0f} MB at {bandwidth / 1e9:.0f} GB/s = {t_floor:.3f} s, "
        f"{t_hf / t_floor:.2f}x this transformers run (ours takes {t_bare / t_floor:.2f}x that)")
  print(f"matmul ceiling: that call + {steps} steps of the matmul loop ({t_step * 1e3:.2f} ms "
        f"each; ours {ours_step * 1e3:.2f} ms per decode step) = {t_matmul_floor:.3f} s, "
        f"{t_hf / t_matmul_floor:.2f}x this transformers run")


if __name__ == "__main__":
  main()
