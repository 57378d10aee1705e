"""Training data and the policy to start from.

The prompt order and the process-sharded, checkpointed reading are in `rl/pipeline.py`. Data
sources: the training sets of `rl/datasets` (`TRAINING_SOURCES`: sat2, pixmo_count,
geometry3k), the synthetic task (default) and any `evals.benchmarks` loader by name.
"""

from __future__ import annotations


from evals.schema import BadItem
from rl.config import TRAINING_SOURCES
from rl.examples import Example
from rl import augment as augment_lib


def load_items(config) -> list[Example]:
  """Training examples of every source in `config.data` (bad rows skipped and counted)."""
  from evals import benchmarks
  items, bad = [], 0
  for name in config.data.split(","):
    if name in TRAINING_SOURCES:
      from rl import datasets
      for x in datasets.load(name, config.data_dir):
        if isinstance(x, Example):
          items.append(x)
        else:
          bad += 1
      continue
    kw = {"n": config.synthetic_n, "seed": config.seed} if name == "synthetic" else {}
    for x in benchmarks.load(name, config.data_dir, **kw):
      if isinstance(x, BadItem):
        bad += 1
      else:
        items.append(Example.from_item(x))
  if bad:
    print(f"skipped {bad} unusable training rows", flush=True)
  if len(items) < config.prompts_per_step:
    raise ValueError(f"{len(items)} training items < prompts_per_step={config.prompts_per_step}")
  return items


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
  from vlm_jax import config as config_lib
  return (config_lib.from_hf(config.model) if config.model
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
