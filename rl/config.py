"""Training configuration: one frozen dataclass, built by `configs/<name>.py:get_config()` and
overridden by `key=value` arguments on the command line (PAPER.md section 7 defaults)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import re


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  model: str | None = None          # HF checkpoint dir; None = a random `model_preset`
  model_preset: str = "tiny"        # random-init preset when model is None (tiny, small, ...)
  dtype: str = "bfloat16"           # compute dtype: rollouts, forward/backward, the KL reference
  param_dtype: str = "float32"      # trained (master) params and AdamW state; bfloat16 loses
                                    # updates below its resolution (a warning says how many)
  data: str = "synthetic"           # comma-separated: synthetic (more loaders: see README)
  data_dir: str | None = None
  data_limits: str = ""             # "sat2:32000,pixmo_count:15000": a fixed random subset of a
                                    # source's good rows (the study's mix); "" = all of each
  synthetic_n: int = 512
  prompts_per_step: int = 16        # rollout batch (study: 128)
  group_size: int = 8               # G
  prompts_per_update: int | None = None  # mini-batch of whole groups per optimizer update
                                    # (study: 64 of 128); None: all prompts_per_step
  micro_batch: int = 16             # rollouts per gradient micro-batch
  updates_per_batch: int = 1        # epochs over the rollout batch's mini-batches
  max_new_tokens: int = 1024
  temperature: float = 1.0
  rollout_unstack_layers: bool = True  # per-layer weight copies for decode where they fit
                                       # (faster; +1 copy; Sampler "auto"); false: never
  lr: float = 1e-6
  warmup_steps: int = 10
  weight_decay: float = 0.0
  grad_clip: float = 1.0
  clip_low: float = 0.2
  clip_high: float = 0.2
  kl_coef: float = 1e-2
  loss_agg: str = "token_mean"
  logprob_chunk_t: int = 256        # sequence rows per LM-head chunk of the log-prob kernel
  logprob_sweep: str = "auto"       # its gradient sweep: auto | sequence | vocab (logprobs.py)
  scale_adv_by_std: bool = True
  format_weight: float = 0.1
  accuracy_weight: float = 1.0
  faithful: bool = False
  judge: str = "rule"
  augment: bool = False
  augment_prob: float = 0.1
  freeze_vision: bool = False
  steps: int = 1000
  checkpoint_every: int = 250
  keep_checkpoints: int = 3
  # checkpoints at multiples of this step are kept for good, besides the last keep_checkpoints
  # (0: none); the study evaluates every checkpoint_every-th one (configs/grpo_study.py)
  keep_every: int = 0
  log_every: int = 1
  seed: int = 0
  preset: str = "qwen2_5_vl_instruct"
  eval_every: int = 0               # 0: no evaluation during training
  eval_benchmarks: str = "synthetic"
  eval_variants: str = "base,wrong_think,wrong_caption"
  eval_items: int = 32              # per benchmark
  eval_max_new_tokens: int = 1024
  sft_answers: str = "correct"      # rl.sft targets: "correct" | "random" (format only)

  def __post_init__(self):
    """Every field a run would only reject after staging data and compiling is checked here,
    when the config is built (and again after each override)."""
    from evals import benchmarks, presets, variants
    from rl.grpo import AGGREGATIONS
    choices = {"loss_agg": AGGREGATIONS,
               "logprob_sweep": ("auto", "sequence", "vocab"),
               "sft_answers": ("correct", "random"),
               "dtype": ("float32", "bfloat16", "float16"),
               "param_dtype": ("float32", "bfloat16")}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name}={getattr(self, name)!r}: want one of {allowed}")
    try:  # one spelling per preset ('R1' -> 'r1'), as evals.run records it
      object.__setattr__(self, "preset", presets.get_preset(self.preset).name)
    except KeyError as e:
      raise ValueError(f"preset={self.preset!r}: {e.args[0]}") from None
    lists = {"data": TRAINING_SOURCES + tuple(benchmarks.BENCHMARKS),
             "eval_benchmarks": tuple(benchmarks.BENCHMARKS),
             "eval_variants": tuple(variants.VARIANTS)}
    for name, allowed in lists.items():
      if name == "eval_variants" and self.eval_variants == "all":
        continue
      unknown = [x for x in getattr(self, name).split(",") if x not in allowed]
      if unknown:
        raise ValueError(f"{name}={getattr(self, name)!r}: unknown {unknown}; known: "
                         f"{', '.join(allowed)}")
    self.limits()  # a malformed data_limits is refused here
    for name in _POSITIVE:
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
    for name in ("steps", "eval_every", "warmup_steps", "lr", "temperature", "weight_decay",
                 "kl_coef", "grad_clip", "clip_low", "clip_high", "seed", "keep_every"):
      if not getattr(self, name) >= 0:  # (NaN too)
        raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
    self._check_batches()
    if not self.clip_low < 1:  # the ratio is clipped below at 1 - clip_low
      raise ValueError(f"clip_low={self.clip_low}: must be < 1")
    if not 0 <= self.augment_prob <= 0.25:  # four kinds of augmentation at this rate each
      raise ValueError(f"augment_prob={self.augment_prob}: must be in [0, 0.25]")
    from evals.judge import check_spec  # the spec check evals.run makes too
    try:
      check_spec(self.judge)
    except ValueError as e:
      raise ValueError(f"judge={self.judge!r}: {e}") from None

  def _check_batches(self) -> None:
    """Mini-batches of whole groups that tile the rollout batch, and rollouts that differ."""
    ppu = self.prompts_per_update
    if ppu is not None and not (1 <= ppu <= self.prompts_per_step
                                and self.prompts_per_step % ppu == 0):
      raise ValueError(f"prompts_per_update={ppu}: must divide prompts_per_step="
                       f"{self.prompts_per_step} (each optimizer update takes a mini-batch of "
                       f"whole groups; None: all of them)")
    if self.temperature == 0 and self.group_size > 1:
      raise ValueError(f"temperature=0: greedy rollouts make the group_size={self.group_size} "
                       f"samples of a prompt identical, so every group's rewards are equal, "
                       f"every advantage is 0 and nothing is learned; use temperature > 0 "
                       f"(the study: 1.0)")

  @property
  def minibatches(self) -> int:
    """Optimizer updates per pass over a rollout batch (`prompts_per_update`)."""
    return self.prompts_per_step // (self.prompts_per_update or self.prompts_per_step)

  def limits(self) -> dict[str, int]:
    """`data_limits` as {source: rows}; each source must be one of `data`."""
    out = {}
    for part in filter(None, self.data_limits.split(",")):
      name, _, count = part.partition(":")
      if name not in self.data.split(","):
        raise ValueError(f"data_limits={self.data_limits!r}: {name!r} is not one of "
                         f"data={self.data!r}")
      if not re.fullmatch(r"[0-9]+", count) or int(count) < 1:  # (isdigit takes "²")
        raise ValueError(f"data_limits={self.data_limits!r}: want source:rows with rows >= 1, "
                         f"got {part!r}")
      out[name] = int(count)
    return out

  @property
  def updates_per_step(self) -> int:
    """Optimizer updates per training step: mini-batches x `updates_per_batch` epochs."""
    return self.minibatches * self.updates_per_batch


TRAINING_SOURCES = ("sat2", "pixmo_count", "geometry3k")  # rl/datasets (the rest: evals loaders)
_POSITIVE = ("synthetic_n", "prompts_per_step", "group_size", "micro_batch", "updates_per_batch",
             "max_new_tokens", "logprob_chunk_t", "checkpoint_every", "keep_checkpoints",
             "log_every", "eval_items", "eval_max_new_tokens")


def _coerce(field: dataclasses.Field, value: str):
  kind = field.type if isinstance(field.type, str) else field.type.__name__
  if "bool" in kind:
    if value.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"{field.name}={value!r}: expected true/false")
    return value.lower() in ("true", "1")
  if value.lower() == "none" and "None" in kind:
    return None
  try:
    if kind.startswith("int"):
      return int(value)
    if kind.startswith("float"):
      return float(value)
  except ValueError:
    raise ValueError(f"{field.name}={value!r}: expected {kind.split()[0]}") from None
  return value


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
  fields = {f.name: f for f in dataclasses.fields(config)}
  changes = {}
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep or key not in fields:
      import difflib
      close = difflib.get_close_matches(key, fields, n=1) if sep else []
      why = (f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
             if sep else "not key=value")
      raise ValueError(f"bad override {item!r}: {why}; keys: {', '.join(sorted(fields))}")
    changes[key] = _coerce(fields[key], value)
  return dataclasses.replace(config, **changes)


# The fields a config's `smoke` mode takes from configs/smoke.py: model size, data, batch and
# length, run length. The rest (loss, rewards, augmentation, schedule shape) stays the run's.
SMOKE_FIELDS = ("model", "model_preset", "dtype", "data", "data_dir", "data_limits",
                "synthetic_n", "prompts_per_step", "group_size", "micro_batch", "max_new_tokens",
                "steps", "warmup_steps", "checkpoint_every", "keep_every", "eval_every",
                "eval_items", "eval_max_new_tokens")


def smoke(config: TrainConfig) -> TrainConfig:
  """`config` at the CPU smoke run's scale (`SMOKE_FIELDS` from configs/smoke.py): a random
  tiny model on synthetic data for a few steps, with the run's own loss and reward settings.
  `prompts_per_update` keeps the run's number of mini-batches per step where the smoke
  batch divides into them (else one update per step)."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  small = load_config(os.path.join(here, "configs", "smoke.py"))
  changes = {k: getattr(small, k) for k in SMOKE_FIELDS}
  parts = config.minibatches
  fits = parts > 1 and small.prompts_per_step % parts == 0
  changes["prompts_per_update"] = small.prompts_per_step // parts if fits else None
  return dataclasses.replace(config, **changes)


def load_config(path: str, overrides: list[str] = ()) -> TrainConfig:
  """`get_config()` of the file at `path`, then the `key=value` overrides. `path:mode` passes
  `mode` to `get_config(mode)` (big_vision style), e.g. `configs/grpo_study.py:smoke`. A
  relative path missing from the working directory is looked up in the repository root."""
  path, _, mode = path.partition(":") if not os.path.exists(path) else (path, "", "")
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
  if not os.path.exists(path) and not os.path.isabs(path) and os.path.exists(here):
    path = here  # configs/x.py from outside the checkout: the repository's own configs/
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location("train_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} defines no get_config()")
  if not mode:
    return apply_overrides(module.get_config(), list(overrides))
  if not inspect.signature(module.get_config).parameters:
    raise ValueError(f"{path}: get_config() takes no mode, got {mode!r}")
  return apply_overrides(module.get_config(mode), list(overrides))


def parse_cli(prog: str, description: str, default_out: str, argv=None):
  """The shared CLI of rl.train and rl.sft: (config, mesh or None, out dir)."""
  import argparse
  parser = argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True,
                      help="configs/<name>.py with get_config(); <name>.py:smoke for its CPU "
                           "smoke mode where the file has one")
  parser.add_argument("--mesh", default=None, help="'2x4' or 'data=2,fsdp=4,tensor=2'")
  from vlm_jax.cli import local_dir
  parser.add_argument("--out", default=default_out, type=local_dir)
  parser.add_argument("overrides", nargs="*", help="key=value (any TrainConfig field)")
  from vlm_jax import multihost, sharding
  multihost.add_distributed_args(parser)
  args = parser.parse_args(argv)
  config = load_config(args.config, args.overrides)  # a bad config stops before the collectives
  multihost.initialize_from_args(args)
  mesh = sharding.parse_mesh(args.mesh) if args.mesh else None
  return config, mesh, args.out
