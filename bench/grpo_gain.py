"""Does GRPO raise accuracy? Format-only warm-up, held-out eval, GRPO, held-out eval, paired diff.

The pipeline (each stage is the public CLI, run as a subprocess; stages already done in --out are
skipped, so a killed run resumes):
  1. python -m rl.sft   sft_answers=random: teaches `<think>..</think><answer>X</answer>` with a
                        uniformly random option (and that option's statement), so the warm-up
                        model knows the format but not which answer is right;
  2. python -m evals.run on held-out synthetic items (seed --eval-seed, disjoint from training
                        items drawn with seed 0), base prompt, greedy;
  3. python -m rl.train GRPO from the warm-up checkpoint;
  4. python -m vlm_jax.convert train-to-hf, then evals.run again on the same held-out items;
  5. both models sampled at temperature 1 (the policy GRPO optimises) on --sample-seeds held-out
     sets of --eval-n items each.
Prints per-category and overall greedy accuracy, P(correct letter) and sampled accuracy
before/after with a paired bootstrap 95% interval of the difference (items resampled together),
the unparsed rates, and the training reward curve in blocks of steps.

  python bench/grpo_gain.py --out /tmp/grpo_gain [--grpo-steps 120] [--eval-n 250]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd: list[str], done_marker: str) -> None:
  if os.path.exists(done_marker):
    print(f"[skip] {' '.join(cmd)}", flush=True)
    return
  print(f"[run] {' '.join(cmd)}", flush=True)
  subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, check=True,
                 stdout=subprocess.DEVNULL)


def by_item(path: str) -> dict[str, tuple[str, bool, float]]:
  """item id -> (category, greedy answer correct, P(correct letter) at the answer position)."""
  out = {}
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      if r["variant"] == "base":
        out[r["item_id"]] = (r["category"], bool(r["correct"]), float(r["p_correct"]))
  return out


def paired_interval(before: np.ndarray, after: np.ndarray, n: int = 2000, seed: int = 0):
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(before), size=(n, len(before)))
  diffs = after[idx].mean(1) - before[idx].mean(1)
  return np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default="/tmp/grpo_gain")
  p.add_argument("--sft-steps", type=int, default=150)
  p.add_argument("--sft-lr", default="3e-3")
  p.add_argument("--sft-answers", default="random", help="random (format only) | correct")
  p.add_argument("--grpo-steps", type=int, default=120)
  p.add_argument("--grpo-lr", default="3e-4")
  p.add_argument("--kl-coef", default="0.0")
  p.add_argument("--train-n", type=int, default=512)
  p.add_argument("--eval-n", type=int, default=250)
  p.add_argument("--eval-seed", type=int, default=7)
  p.add_argument("--max-new-tokens", type=int, default=48)
  p.add_argument("--sample-seeds", default="7,8,9",
                 help="held-out sets (synthetic seeds) for the temperature-1 evaluation")
  p.add_argument("--extra", nargs="*", default=[], help="more key=value overrides for rl.train")
  a = p.parse_args()
  out = os.path.abspath(a.out)
  cfg = os.path.join(ROOT, "configs", "smoke.py")
  common = [f"synthetic_n={a.train_n}", "dtype=float32", "prompts_per_step=8"]
  run(["rl.sft", "--config", cfg, "--out", f"{out}/sft", f"steps={a.sft_steps}", f"lr={a.sft_lr}",
       "warmup_steps=5", f"sft_answers={a.sft_answers}", *common], f"{out}/sft/hf/config.json")
  evals = ["--benchmarks", "synthetic", "--synthetic-n", str(a.eval_n), "--variants", "base",
           "--max-new-tokens", str(a.max_new_tokens), "--dtype", "float32", "--seed",
           str(a.eval_seed), "--batch-size", "50"]
  run(["evals.run", "--model", f"{out}/sft/hf", *evals, "--out", f"{out}/eval_sft"],
      f"{out}/eval_sft/summary.csv")
  run(["rl.train", "--config", cfg, "--out", f"{out}/grpo", f"model={out}/sft/hf",
       f"steps={a.grpo_steps}", "group_size=8", f"max_new_tokens={a.max_new_tokens}",
       f"lr={a.grpo_lr}", f"kl_coef={a.kl_coef}", "warmup_steps=5", "checkpoint_every=1000000",
       *common, *a.extra], f"{out}/grpo_hf/config.json")
  run(["vlm_jax.convert", "train-to-hf", "--src", f"{out}/grpo", "--dst", f"{out}/grpo_hf",
       "--copy-files-from", f"{out}/sft/hf"], f"{out}/grpo_hf/config.json")
  run(["evals.run", "--model", f"{out}/grpo_hf", *evals, "--out", f"{out}/eval_grpo"],
      f"{out}/eval_grpo/summary.csv")
  seeds = [int(x) for x in a.sample_seeds.split(",") if x]
  for seed in seeds:
    for name, model in (("sft", f"{out}/sft/hf"), ("grpo", f"{out}/grpo_hf")):
      sampled = [x if x != str(a.eval_seed) else str(seed) for x in evals]
      run(["evals.run", "--model", model, *sampled, "--temperature", "1.0", "--out",
           f"{out}/evalT1_{name}_{seed}"], f"{out}/evalT1_{name}_{seed}/summary.csv")

  before = by_item(f"{out}/eval_sft/results.jsonl")
  after = by_item(f"{out}/eval_grpo/results.jsonl")
  ids = sorted(set(before) & set(after))
  cats = sorted({before[i][0] for i in ids})
  print(f"\nheld-out synthetic items: {len(ids)} (seed {a.eval_seed}); warm-up {a.sft_steps} steps "
        f"({a.sft_answers} answers); GRPO {a.grpo_steps} steps, lr {a.grpo_lr}, kl {a.kl_coef}, "
        f"8 prompts x G=8")
  for k, what in ((1, "greedy accuracy"), (2, "P(correct letter)")):
    print(f"\n| category | items | {what} after warm-up | after GRPO | diff [paired 95% CI] |")
    print("|---|---|---|---|---|")
    for cat in [*cats, "all"]:
      sel = [i for i in ids if cat == "all" or before[i][0] == cat]
      b = np.array([before[i][k] for i in sel], float)
      c = np.array([after[i][k] for i in sel], float)
      lo, hi = paired_interval(b, c)
      print(f"| {cat} | {len(sel)} | {b.mean():.1%} | {c.mean():.1%} | "
            f"{c.mean() - b.mean():+.1%} [{lo:+.1%}, {hi:+.1%}] |")
  if seeds:
    before, after = {}, {}
    for seed in seeds:
      for store, name in ((before, "sft"), (after, "grpo")):
        found = by_item(f"{out}/evalT1_{name}_{seed}/results.jsonl")
        store.update({(seed, k): v for k, v in found.items()})
    ids = sorted(set(before) & set(after))
    print("\n| category | items | sampled (T=1) accuracy after warm-up | after GRPO | "
          "diff [paired 95% CI] |")
    print("|---|---|---|---|---|")
    for cat in [*cats, "all"]:
      sel = [i for i in ids if cat == "all" or before[i][0] == cat]
      b = np.array([before[i][1] for i in sel], float)
      c = np.array([after[i][1] for i in sel], float)
      lo, hi = paired_interval(b, c)
      print(f"| {cat} | {len(sel)} | {b.mean():.1%} | {c.mean():.1%} | "
            f"{c.mean() - b.mean():+.1%} [{lo:+.1%}, {hi:+.1%}] |")
    for name in ("sft", "grpo"):
      recs = [json.loads(line) for seed in seeds
              for line in open(f"{out}/evalT1_{name}_{seed}/results.jsonl")]
      parsed = [r for r in recs if r["parsed"] is not None]
      print(f"{name}: sampled unparsed {1 - len(parsed) / len(recs):.1%}, accuracy among parsed "
            f"{np.mean([r['correct'] for r in parsed]):.1%}")
  rows = [json.loads(l) for l in open(f"{out}/grpo/metrics.jsonl")]
  block = max(len(rows) // 6, 1)
  print("\n| GRPO steps | rollout accuracy | format reward | consistency | entropy |")
  print("|---|---|---|---|---|")
  for s in range(0, len(rows), block):
    chunk = rows[s:s + block]
    mean = lambda k: np.mean([r[k] for r in chunk if k in r])  # noqa: E731
    print(f"| {chunk[0]['step']}-{chunk[-1]['step']} | {mean('accuracy'):.1%} | "
          f"{mean('reward/format'):.2f} | {mean('consistency'):.1%} | {mean('entropy'):.2f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
