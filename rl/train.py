"""GRPO training loop on a mesh.

  python -m rl.train --config configs/smoke.py --mesh 2x4 --out runs/smoke [key=value ...]

Each step: P prompts (`rl/pipeline.py`: a seeded order, each process reading its share through grain)
-> G rollouts each from the current params -> rewards -> group advantages -> reference
log-probs from the frozen initial params -> `updates_per_batch` AdamW updates over micro-batches
(gradients accumulated) with the clipped GRPO loss + k3 KL. Orbax checkpoints (params, optimizer
state, step, data iterator state) every `checkpoint_every` steps and on SIGTERM (TPU
preemption); a restart resumes exactly. A non-finite loss, gradient norm or update norm
raises FloatingPointError without applying the update, after checkpointing the state the step
started from (when no update of the step was applied yet). `judge=` is "rule", an http(s) endpoint or a local model directory (`make_judge`).
Metrics go to OUT/metrics.jsonl (one line per step; lines past the restored step are dropped on
resume) and to TensorBoard event files in OUT/tensorboard (`rl/tensorboard.py`, no TensorFlow
needed: `tensorboard --logdir OUT/tensorboard`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp
import optax

from rl import grpo, rollout
from rl.config import TrainConfig, parse_cli
from vlm_jax import buckets, logprobs as logprobs_lib, sharding
from vlm_jax.files import atomic_write

_STOP = {"requested": False}


def _on_sigterm(signum, frame):
  _STOP["requested"] = True  # finish the step, checkpoint, exit


def make_optimizer(config: TrainConfig, params: dict) -> optax.GradientTransformation:
  """AdamW after global-norm clipping. The learning rate rises linearly from 0 over the first
  `warmup_steps` training steps (each `updates_per_batch` optimizer updates) and is `lr` from
  then on (as transformers' linear warmup: the first update has 0); warmup_steps=0: `lr` from
  the first update."""
  warmup = config.warmup_steps * config.updates_per_batch
  schedule = (optax.linear_schedule(0.0, config.lr, warmup) if warmup
              else optax.constant_schedule(config.lr))
  opt = optax.chain(optax.clip_by_global_norm(config.grad_clip),
                    optax.adamw(schedule, weight_decay=config.weight_decay))
  if not config.freeze_vision or "vision" not in params:
    return opt
  labels = {k: jax.tree.map(lambda _: "frozen" if k == "vision" else "train", v)
            for k, v in params.items()}
  return optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)


def _loss(params, model_config, inputs, mask, old, ref, adv, weight, config: TrainConfig,
          head_sharding=None):
  """The GRPO loss through the one-sweep log-prob kernel (`logprobs.sequence_token_loss`):
  the LM-head gradient is formed while each chunk's logits are live (or right after, by
  vocabulary tiles, `config.logprob_sweep`). `head_sharding`: `sharding.head_sharding(mesh)`."""
  kl_coef = config.kl_coef if ref is not None else 0.0
  token_fn = functools.partial(grpo.token_terms, clip_low=config.clip_low,
                               clip_high=config.clip_high, kl_coef=kl_coef)
  aux = grpo.token_aux(old, ref, adv, mask, config.loss_agg)
  loss, logp, entropy = logprobs_lib.sequence_token_loss(
      params, model_config, inputs, lambda lp, _, a: token_fn(lp, a), aux, last=mask.shape[1],
      chunk_t=config.logprob_chunk_t, sweep=config.logprob_sweep, head_sharding=head_sharding)
  stats = grpo.diagnostics(logp, old, ref, adv, mask, clip_low=config.clip_low,
                           clip_high=config.clip_high, mode=config.loss_agg, entropy=entropy)
  return loss * weight, stats


@functools.partial(jax.jit, static_argnums=(1, 8, 9))
def _grad(params, model_config, inputs, mask, old, ref, adv, weight, config, head_sharding=None):
  return jax.value_and_grad(_loss, has_aux=True)(params, model_config, inputs, mask, old, ref,
                                                 adv, weight, config, head_sharding)


@functools.partial(jax.jit, static_argnums=(1, 3, 4))
def _ref_logprobs(params, model_config, inputs, last: int, chunk_t: int):
  return logprobs_lib.sequence_logprobs(params, model_config, inputs, chunk_t=chunk_t,
                                        last=last)[0]


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def _apply_updates(opt, params, opt_state, grads):
  """(params, opt_state, gradient norm, update norm) after one optimizer update; where either
  norm is not finite, the params and optimizer state passed in (the caller raises)."""
  norm = optax.global_norm(grads)
  new_updates, new_state = opt.update(grads, opt_state, params)
  step_norm = optax.global_norm(new_updates)
  new_params = optax.apply_updates(params, new_updates)
  ok = jnp.isfinite(norm) & jnp.isfinite(step_norm)
  keep = lambda new, old: jnp.where(ok, new, old)
  return (jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state), norm,
          step_norm)


# One program per call, not one per leaf. Twice in full test runs (8 fake CPU devices) an
# all-reduce of the gradient program never got its other participants while the eager per-leaf
# adds were being dispatched: XLA CPU's launch threads all waited on in-flight slots. Fewer,
# larger dispatches also cost less.
_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))
_accumulate = jax.jit(lambda total, g: jax.tree.map(jnp.add, total, g), donate_argnums=0)


class Trainer:
  def __init__(self, config: TrainConfig, mesh, out: str):
    from rl import data
    self.config, self.mesh, self.out = config, mesh, out
    self.model_config, params, self.processor = data.load_policy(config, mesh)
    sharding.report_replicated(self.model_config, mesh)
    self.ref_params = params  # frozen reference: the initial params, never updated
    self.params = _copy(params)
    self.opt = make_optimizer(config, params)
    self.opt_state = jax.jit(self.opt.init)(self.params)
    from rl.pipeline import PromptStream
    self.data = PromptStream(lambda: data.load_items(config), config,
                             cache_dir=os.path.join(out, "data_cache"))
    self.judge = make_judge(config, mesh, out)
    self.preset = rollout.preset_for(config)
    self.augment = data.augment_config(config)
    self.step = 0
    self.pristine = True  # no update of the step in progress applied yet (see `train`)

  def sampler(self):
    from vlm_jax.sampler import Sampler
    return Sampler(self.params, self.model_config, self.processor, mesh=self.mesh,
                   unstack_layers="auto" if self.config.rollout_unstack_layers else False)

  def train_step(self) -> dict:
    start = time.perf_counter()
    if self.data.step != self.step:
      raise RuntimeError(f"data stream at step {self.data.step}, trainer at {self.step}")
    self.pristine = True
    items = next(self.data)
    ro = rollout.collect(self.sampler(), self.processor, self.preset, items, self.step,
                         self.config, self.judge, self.augment)
    stats = self._update(ro)
    elapsed = time.perf_counter() - start
    tokens = int(ro.lengths.sum())
    metrics = {"step": self.step + 1, **{f"reward/{k}": float(v.mean())
                                          for k, v in ro.rewards.items()},
               "accuracy": float(ro.rewards["accuracy"].mean()),
               "consistency": float(ro.rewards["consistent"].mean()),
               "response_length": float(ro.lengths.mean()),
               "rollout_entropy": float(ro.entropies.sum() / max(tokens, 1)),
               "step_time": elapsed, "tokens_per_s": tokens / elapsed, **stats}
    self.step += 1
    if self.config.eval_every and self.step % self.config.eval_every == 0:
      from rl import periodic_eval
      metrics.update(periodic_eval.run_eval(self, self.step))
    return metrics

  def _micro_batches(self, ro: rollout.Rollouts):
    sampler = self.sampler()
    size = self.config.micro_batch
    total = max(int(ro.lengths.sum()), 1) if self.config.loss_agg == "token_mean" else len(
        ro.lengths)
    for lo in range(0, len(ro.lengths), size):
      sl = slice(lo, lo + size)
      batch = {k: v[sl] for k, v in ro.batch.items() if k in ("input_ids", "attention_mask")}
      batch.update(rollout.images_of_rows(ro.batch, ro.image_ranges[sl]))
      inputs, _ = sampler.prepare(batch)
      lengths = ro.lengths[sl]
      b = inputs["input_ids"].shape[0]
      # only the response positions need the LM head (bucketed: one compile per bucket)
      width = min(buckets.bucket(int(max(lengths.max(initial=1), 1)), 16),
                  inputs["input_ids"].shape[1] - 1)
      mask = aligned_mask(lengths, width, b)
      old = rollout.aligned(ro.logprobs[sl], lengths, width, b)
      adv = np.zeros(b, np.float32)
      adv[:len(lengths)] = ro.advantages[sl]
      share = (lengths.sum() if self.config.loss_agg == "token_mean" else len(lengths)) / total
      yield inputs, mask, old, adv, np.float32(share)

  def _update(self, ro: rollout.Rollouts) -> dict:
    batches = list(self._micro_batches(ro))
    refs = [_ref_logprobs(self.ref_params, self.model_config, b[0], b[1].shape[1],
                          self.config.logprob_chunk_t)
            for b in batches]
    stats = {}
    for _ in range(self.config.updates_per_batch):
      grads, stats = None, {}
      for (inputs, mask, old, adv, share), ref in zip(batches, refs):
        (loss, aux), g = _grad(self.params, self.model_config, inputs, mask, old, ref, adv,
                               share, self.config, sharding.head_sharding(self.mesh))
        grads = g if grads is None else _accumulate(grads, g)
        for k, v in {"loss": loss, **aux}.items():
          stats[k] = stats.get(k, 0.0) + float(v) * (1.0 if k == "loss" else float(share))
      if not np.isfinite(stats.get("loss", 0.0)):
        raise FloatingPointError(f"step {self.step + 1}: loss is {stats['loss']}; the update "
                                 f"was not applied")
      # a non-finite gradient or update leaves params and optimizer state as they were
      self.params, self.opt_state, gnorm, unorm = _apply_updates(self.opt, self.params,
                                                                 self.opt_state, grads)
      stats["grad_norm"] = float(gnorm)
      for name, value in (("gradient norm", stats["grad_norm"]), ("update norm", float(unorm))):
        if not np.isfinite(value):
          raise FloatingPointError(f"step {self.step + 1}: {name} is {value}; the update was "
                                   f"not applied")
      self.pristine = False
    for k in ("ratio_max", "ratio_min"):
      stats.pop(k, None)  # share-weighted extremes mean nothing; ratio_mean stays
    return stats


def make_judge(config: TrainConfig, mesh, out: str):
  """The judge of `config.judge` (the faithfulness-aware reward's consistency verdicts): "rule";
  an http(s):// endpoint, asked by process 0 alone (every process holds the same rollouts, and
  their rewards must agree), its replies cached in OUT/judge_cache.jsonl so a resumed run does
  not ask again; or a local model directory (Qwen3 in the study) loaded onto the training mesh
  in `config.dtype` (a collective program: every process runs it)."""
  from evals import judge as judge_lib
  from evals.llm_judge import local_factory
  if not config.judge.startswith(("http://", "https://")):
    return judge_lib.make_judge(config.judge,
                                generate_fn_factory=local_factory(mesh, config.dtype))
  inner = None
  if jax.process_index() == 0:
    inner = judge_lib.make_judge(config.judge, cache_path=os.path.join(out, "judge_cache.jsonl"))
  return inner if jax.process_count() == 1 else _Process0Judge(inner)


class _Process0Judge:
  """Process 0's verdicts on every process (`multihost.broadcast_bytes`)."""

  def __init__(self, inner):
    self.inner = inner

  def judge(self, batch):
    import dataclasses
    from evals.judge import Verdict
    from vlm_jax import multihost
    blob = b""
    if self.inner is not None:
      blob = json.dumps([dataclasses.asdict(v) for v in self.inner.judge(batch)]).encode()
    return [Verdict(**v) for v in json.loads(multihost.broadcast_bytes(blob).decode())]


def aligned_mask(lengths: np.ndarray, width: int, rows: int) -> np.ndarray:
  return rollout.aligned(np.ones((len(lengths), int(max(lengths.max(initial=0), 1)))),
                         lengths, width, rows)


def _model_config_json(config: TrainConfig, model_config) -> dict:
  from vlm_jax import config as config_lib
  hf_config = config_lib.to_hf(model_config, dtype=config.dtype)
  if config.model:  # where `convert train-to-hf` takes tokenizer/preprocessor from
    hf_config["_name_or_path"] = os.path.abspath(config.model)
  return hf_config


def _write_model_config(trainer, out: str) -> None:
  if jax.process_index() == 0:
    with atomic_write(os.path.join(out, "model_config.json")) as f:
      json.dump(_model_config_json(trainer.config, trainer.model_config), f, indent=2)


def _check_resume(config: TrainConfig, out: str) -> None:
  """Before a resume restores anything: OUT's checkpoints must be of this model and dtype (the
  model config they were saved with, OUT/model_config.json, would otherwise be overwritten and
  the checkpoints no longer export), and a changed TrainConfig is reported field by field."""
  path = os.path.join(out, "model_config.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    from rl.data import policy_config
    from vlm_jax import config as config_lib
    model_config = policy_config(config)
    new = _model_config_json(config, model_config)
    # the same model (parsed, so a config file from another version of to_hf still matches) and
    # the same dtype; the message lists the differing keys
    same = (config_lib.from_hf(dict(old)) == model_config
            and old.get("dtype") == new.get("dtype"))
    diffs = [f"  {k}: {old.get(k)!r} before, {new.get(k)!r} now"
             for k in sorted(set(old) | set(new))
             if k != "_name_or_path" and old.get(k) != new.get(k)]
    if not same:
      raise ValueError(f"{out} holds checkpoints of another model or dtype ({path}):\n"
                       + "\n".join(diffs) + "\nPick a new output folder, or resume with the "
                       "model, preset and dtype it was started with.")
  path = os.path.join(out, "train_config.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    new = dataclasses.asdict(config)
    changed = [f"{k} {old[k]!r} -> {new[k]!r}" for k in sorted(new)
               if k in old and old[k] != new[k]]
    if changed:
      print(f"resuming {out} with changed settings: {', '.join(changed)}", file=sys.stderr)


def _write_train_config(config: TrainConfig, out: str) -> None:
  if jax.process_index() == 0:
    with atomic_write(os.path.join(out, "train_config.json")) as f:
      json.dump(dataclasses.asdict(config), f, indent=1, sort_keys=True)


def train(config: TrainConfig, mesh=None, out: str = "runs/train") -> Trainer:
  """Run (or resume) training in `out`; returns the trainer at its final step."""
  from rl import checkpoints
  if config.group_size == 1:
    print("warning: group_size=1: every GRPO advantage is 0 (one sample per prompt, nothing to "
          "compare it with), so only the KL term moves the policy", file=sys.stderr)
  manager = checkpoints.Manager(os.path.join(out, "checkpoints"), config.keep_checkpoints)
  try:
    if manager.manager.latest_step() is not None:
      _check_resume(config, out)  # before the model loads
    trainer = Trainer(config, mesh, out)
    trainer.step = manager.restore(trainer)
  except BaseException:
    manager.close()  # (an open manager left behind prints orbax tracebacks at exit)
    raise
  _write_model_config(trainer, out)  # after the restore: a refused resume leaves OUT as it was
  _write_train_config(config, out)
  if trainer.step >= config.steps:
    print(f"{out} is at step {trainer.step}, steps={config.steps}: nothing to train (raise "
          f"steps to continue)", file=sys.stderr)
  log = checkpoints.MetricsLog(os.path.join(out, "metrics.jsonl"), trainer.step,
                               tensorboard_dir=os.path.join(out, "tensorboard"),
                               write=jax.process_index() == 0)
  previous = signal.signal(signal.SIGTERM, _on_sigterm)
  _STOP["requested"] = False
  try:
    while trainer.step < config.steps and not _STOP["requested"]:
      try:
        metrics = trainer.train_step()
      except FloatingPointError:
        if trainer.pristine:  # the state is the last finished step's: keep it before raising
          trainer.data.set_state(dict(trainer.data.get_state(), step=trainer.step))
          manager.save(trainer)
          print(f"non-finite step {trainer.step + 1}: checkpointed step {trainer.step}",
                file=sys.stderr)
        else:  # an earlier update of this step was applied: no finished step's state to save
          print(f"non-finite step {trainer.step + 1} after some of its updates_per_batch "
                f"updates: nothing saved; the latest checkpoint is step "
                f"{manager.manager.latest_step()}", file=sys.stderr)
        raise
      log.write(metrics)
      if trainer.step % config.log_every == 0:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v
                          for k, v in metrics.items()}), file=sys.stderr)
      if trainer.step % config.checkpoint_every == 0:
        manager.save(trainer)
    manager.save(trainer)  # final, or on SIGTERM (preemption): nothing done is lost
    if _STOP["requested"]:
      print(f"SIGTERM: checkpointed step {trainer.step}, exiting", file=sys.stderr)
  finally:
    signal.signal(signal.SIGTERM, previous)
    manager.close()
    log.close()
  return trainer


def main(argv=None) -> int:
  config, mesh, out = parse_cli("python -m rl.train", __doc__, "runs/train", argv)
  train(config, mesh, out)
  return 0


if __name__ == "__main__":
  from vlm_jax import cli
  raise SystemExit(cli.run(main, "python -m rl.train"))
