"""Training data and the policy to start from.

The prompt order and the process-sharded, checkpointed reading are in `rl/pipeline.py`. Data
sources: the training sets of `rl/datasets` (`TRAINING_SOURCES`: sat2, pixmo_count,
geometry3k), the synthetic task (default) and any `evals.benchmarks` loader by name.
"""

from __future__ import annotations

import random

from evals.schema import BadItem
from rl.config import TRAINING_SOURCES
from rl.examples import Example
from rl import augment as augment_lib


def load_items(config) -> list[Example]:
  """Training examples of every source in `config.data`; bad rows are skipped and reported per
  source with the first few ids and reasons (a source whose rows are all bad is then findable)."""
  from evals import benchmarks
  from rl.datasets.common import BadExample
  items, bad, limits = [], {}, config.limits()
  for name in config.data.split(","):
    good = []
    if name in TRAINING_SOURCES:
      from rl import datasets
      rows = datasets.load(name, config.data_dir)
    else:
      kw = {"n": config.synthetic_n, "seed": config.seed} if name == "synthetic" else {}
      rows = benchmarks.load(name, config.data_dir, **kw)
    for x in rows:
      if isinstance(x, (BadItem, BadExample)):
        bad.setdefault(name, []).append(f"{name}/{x.id}: {x.reason}")
      else:
        good.append(x if isinstance(x, Example) else Example.from_item(x))
    items += subset(good, limits.get(name), name)
  if bad:
    print(f"skipped {sum(map(len, bad.values()))} unusable training rows", flush=True)
    for name, reasons in bad.items():
      more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
      print(f"  {name}: {len(reasons)} bad, e.g. " + "; ".join(reasons[:3]) + more, flush=True)
  if len(items) < config.prompts_per_step:
    raise ValueError(f"{len(items)} training items < prompts_per_step={config.prompts_per_step}"
                     + (f" ({', '.join(f'{n}: {len(r)} bad rows' for n, r in bad.items())})"
                        if bad else ""))
  return items


def subset(examples: list[Example], limit: int | None, name: str) -> list[Example]:
  """`limit` of a source's examples, drawn at random but fixed by the source and the limit (not
  by the run's seed: runs of several seeds train on the same subset), in release order."""
  if limit is None or limit >= len(examples):
    if limit is not None:
      print(f"data_limits: {name} has {len(examples)} usable rows, fewer than {limit}: all "
            "of them are used", flush=True)
    return examples
  rng = random.Random(f"{name}:{limit}")
  return [examples[i] for i in sorted(rng.sample(range(len(examples)), limit))]


def items_for_step(items: list[Example], step: int, config) -> list[Example]:
  """Step `step`'s prompts from an in-memory list (the order of `rl.pipeline.step_indices`)."""
  from rl.pipeline import step_indices
  return [items[i] for i in step_indices(step, config.prompts_per_step, len(items), config.seed)]


def augment_config(config):
  if not config.augment:
    return None
  return augment_lib.AugmentConfig(probs=(config.augment_prob,) * 4, seed=config.seed)


def policy_config(config):
  """The policy's model config alone (no params): what `load_policy` will load."""
  from vlm_jax import config as config_lib, config_json
  return (config_json.from_hf(config.model) if config.model
          else config_lib.get_config(config.model_preset))


def load_policy(config, mesh, dtype: str | None = None):
  """(model config, params on the mesh, processor): an HF checkpoint or a random preset, in
  `dtype` (default: `config.dtype`; rl.train loads its float32 masters, `config.param_dtype`)."""
  import jax
  from vlm_jax import config as config_lib, hf, params as params_lib, processor as proc_lib
  from vlm_jax import sharding
  dtype = dtype or config.dtype
  if config.model:
    model_config, params = hf.load_hf(config.model, dtype=dtype, mesh=mesh)
    return model_config, params, proc_lib.Processor.from_dir(config.model)
  model_config = config_lib.get_config(config.model_preset)
  params = params_lib.init_params(model_config, jax.random.key(config.seed), dtype=dtype)
  if mesh is not None:
    params = sharding.shard_params(params, model_config, mesh)
  tokenizer = proc_lib.load_tokenizer(proc_lib.qwen_tokenizer_dir())
  return model_config, params, proc_lib.Processor(tokenizer)
