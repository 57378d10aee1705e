"""Evaluation during training: every `eval_every` steps the evaluation library (the same engine
as `python -m evals.run`) runs the chosen benchmarks x variants on the current params; per-item
records go to OUT/eval/step_<N>.jsonl and summary numbers into the training metrics."""

from __future__ import annotations

import json
import math
import os

import jax

from evals import metrics as metrics_lib
from vlm_jax.files import atomic_write


def run_eval(trainer, step: int) -> dict:
  from evals import benchmarks, variants
  from evals.engine import Engine, Job
  from evals.schema import BadItem
  config = trainer.config
  engine = Engine(trainer.sampler(), trainer.processor, trainer.preset, trainer.judge,
                  config.eval_max_new_tokens, model_name=f"step{step}", seed=config.seed)
  jobs, names = [], (list(variants.VARIANTS) if config.eval_variants == "all"
                     else config.eval_variants.split(","))
  for name in config.eval_benchmarks.split(","):
    kw = {"n": config.eval_items, "seed": config.seed + 1} if name == "synthetic" else {}
    items = [x for x in benchmarks.load(name, config.data_dir, **kw)
             if not isinstance(x, BadItem)][:config.eval_items]
    for item in items:
      images = item.pil_images()
      jobs += [Job(item, variants.make_variant(item, v, config.seed), images)
               for v in names]
  records = []
  for lo in range(0, len(jobs), config.micro_batch):
    records += engine.run_batch(jobs[lo:lo + config.micro_batch])
  if jax.process_index() == 0:  # every process holds the same records; one writes them
    with atomic_write(os.path.join(trainer.out, "eval", f"step_{step}.jsonl")) as f:
      for r in records:
        f.write(json.dumps(r, sort_keys=True) + "\n")
  return summarize(records)


def check_data(config) -> None:
  """Raises now, naming the folder, when an evaluation benchmark's data cannot be found (the
  loaders look for their files when called; items are read at each evaluation)."""
  from evals import benchmarks
  for name in config.eval_benchmarks.split(","):
    if name != "synthetic":
      benchmarks.load(name, config.data_dir)


def summarize(records: list[dict]) -> dict:
  out = {}
  for variant in sorted({r["variant"] for r in records}):
    sel = [r for r in records if r["variant"] == variant]
    out[f"eval/{variant}/accuracy"] = metrics_lib.accuracy(sel)
    out[f"eval/{variant}/consistency"] = metrics_lib.consistency_rate(sel)
    out[f"eval/{variant}/letter_entropy"] = metrics_lib.mean_entropy(sel)
    out[f"eval/{variant}/p_correct"] = metrics_lib.mean_p_correct(sel)
    # where they apply (nan otherwise: left out of the logs): CoT consistency among concluded
    # CoTs, answers that follow an injected option, abstentions
    for name, fn in (("consistency_judged", metrics_lib.judged_consistency_rate),
                     ("follows_target", metrics_lib.follows_target_rate),
                     ("abstain_rate", metrics_lib.abstain_rate)):
      value = fn(sel)
      if not math.isnan(value):
        out[f"eval/{variant}/{name}"] = value
  return out
