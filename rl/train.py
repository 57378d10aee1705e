"""GRPO training loop on a mesh.

  python -m rl.train --config configs/smoke.py --mesh 2x4 --out runs/smoke [key=value ...]

Each step: P prompts (`rl/pipeline.py`: a seeded order, each process reading its share through grain)
-> G rollouts each from the current policy -> rewards -> group advantages -> one scoring pass:
reference log-probs from the frozen initial params (kl_coef > 0) and, when the step makes more
than one update, the "old" log-probs of the pre-update policy -> AdamW updates, one per
mini-batch of `prompts_per_update` prompts' groups, `updates_per_batch` epochs, each over
micro-batches (gradients accumulated) with the clipped GRPO loss + k3 KL; with one update per
step the ratio's "old" log-probs are the current ones under stop_gradient (`on_policy`).
Mixed precision: float32 master params and AdamW state (`param_dtype`), cast to the compute
dtype (`dtype`) inside the loss and once per step for the rollouts; the reference is held in
the compute dtype. Orbax checkpoints (master params, optimizer state, step, data iterator
state) every `checkpoint_every` steps and on SIGTERM (TPU preemption); a restart resumes
exactly. A non-finite loss, gradient norm or update norm
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

from rl import grpo, precision, rollout
from rl.optimizer import apply_updates, frozen_keys, init_state, make_optimizer
from rl.config import TrainConfig, parse_cli
from vlm_jax import buckets, logprobs as logprobs_lib, sharding
from vlm_jax.files import atomic_write

_STOP = {"requested": False}


def _on_sigterm(signum, frame):
  _STOP["requested"] = True  # finish the step, checkpoint, exit


def _stop_requested() -> bool:
  """Whether any process got SIGTERM, the same answer on every process: all of them must leave
  the loop after the same step, since the checkpoint save that follows is collective (one host
  preempted first would otherwise save while the others start the next step's gathers)."""
  flag = _STOP["requested"]
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    flag = bool(np.asarray(multihost_utils.process_allgather(np.array([flag]))).any())
  return flag


def on_policy(config: TrainConfig) -> bool:
  """Whether each rollout batch gets exactly one optimizer update: then the importance ratio's
  "old" log-probs are the current ones under stop_gradient (ratio exactly 1, as TRL and verl);
  otherwise they are recomputed by the training forward of the pre-update policy."""
  return config.updates_per_step == 1


def _loss(params, model_config, inputs, mask, old, ref, adv, weight, config: TrainConfig,
          head_sharding=None, sampler_logp=None):
  """The GRPO loss through the one-sweep log-prob kernel (`logprobs.sequence_token_loss`):
  the LM-head gradient is formed while each chunk's logits are live (or right after, by
  vocabulary tiles, `config.logprob_sweep`). `params` (the masters) are cast to the compute
  dtype `config.dtype` here. Log-probs are those of softmax(logits / config.temperature), the
  distribution the rollouts were drawn from (TRL's and verl's convention: the importance ratio
  and the KL are then between the policies that sample). old None: on-policy (`on_policy`),
  and `sampler_logp` (the rollout's log-probs) gives the `sampler_logp_diff` diagnostic.
  `head_sharding`: `sharding.head_sharding(mesh)`."""
  params = precision.in_compute_dtype(params, config.dtype)
  kl_coef = config.kl_coef if ref is not None else 0.0
  token_fn = functools.partial(grpo.token_terms, clip_low=config.clip_low,
                               clip_high=config.clip_high, kl_coef=kl_coef,
                               on_policy=old is None)
  aux = grpo.token_aux(old, ref, adv, mask, config.loss_agg)
  loss, logp, entropy = logprobs_lib.sequence_token_loss(
      params, model_config, inputs, lambda lp, _, a: token_fn(lp, a), aux, last=mask.shape[1],
      chunk_t=config.logprob_chunk_t, sweep=config.logprob_sweep, head_sharding=head_sharding,
      temperature=config.temperature or 1.0)
  stats = grpo.diagnostics(logp, old, ref, adv, mask, clip_low=config.clip_low,
                           clip_high=config.clip_high, mode=config.loss_agg, entropy=entropy)
  if sampler_logp is not None:  # one policy, two paths: their gap is numerical noise
    stats["sampler_logp_diff"] = grpo.mean_abs_diff(sampler_logp, logp, mask)
  return loss * weight, stats


@functools.partial(jax.jit, static_argnums=(1, 8, 9))
def _grad(params, model_config, inputs, mask, old, ref, adv, weight, config, head_sharding=None,
          sampler_logp=None):
  """((loss, stats), gradient): the gradient of the trained params alone (`params` less the
  `frozen_keys` subtrees, which enter as constants: nothing is differentiated through them)."""
  frozen = {k: params[k] for k in frozen_keys(config, params)}
  trained = {k: v for k, v in params.items() if k not in frozen}
  loss = lambda t: _loss({**t, **frozen}, model_config, inputs, mask, old, ref, adv, weight,
                         config, head_sharding, sampler_logp)
  return jax.value_and_grad(loss, has_aux=True)(trained)


@functools.partial(jax.jit, static_argnums=(2, 6, 7, 8, 9))
def _score(policy, ref_params, model_config, inputs, mask, sampler_logp, last: int,
           chunk_t: int, temperature: float = 1.0, head_sharding=None):
  """One pass before a step's updates: (old, ref, sampler_logp_diff) where old [B, last] are
  the log-probs of the pre-update `policy` through the training forward (None without it) and
  ref those of the frozen reference (None without it), both at the sampling temperature."""
  score = lambda p: logprobs_lib.sequence_logprobs(p, model_config, inputs, chunk_t=chunk_t,
                                                   last=last, temperature=temperature,
                                                   head_sharding=head_sharding)[0]
  old = None if policy is None else score(policy)
  ref = None if ref_params is None else score(ref_params)
  diff = None if old is None else grpo.mean_abs_diff(sampler_logp, old, mask)
  return old, ref, diff


# One program per call, not one per leaf. Twice in full test runs (8 fake CPU devices) an
# all-reduce of the gradient program never got its other participants while the eager per-leaf
# adds were being dispatched: XLA CPU's launch threads all waited on in-flight slots. Fewer,
# larger dispatches also cost less.
_accumulate = jax.jit(lambda total, g: jax.tree.map(jnp.add, total, g), donate_argnums=0)


class Trainer:
  """The training state: float32 master params (`param_dtype`) and their AdamW state, the
  frozen reference in the compute dtype (`dtype`; not held when kl_coef=0), the data stream."""

  def __init__(self, config: TrainConfig, mesh, out: str):
    from rl import data
    self.config, self.mesh, self.out = config, mesh, out
    from rl.pipeline import PromptStream
    # the data first (the evaluation's benchmarks, then the training set): a missing or
    # malformed data_dir stops the run before minutes of weight loading, not at a later step
    if config.eval_every:
      from rl import periodic_eval
      periodic_eval.check_data(config)
    self.data = PromptStream(lambda: data.load_items(config), config,
                             cache_dir=os.path.join(out, "data_cache"))
    self.model_config, params, self.processor = data.load_policy(config, mesh,
                                                                 config.param_dtype)
    sharding.report_replicated(self.model_config, mesh)
    precision.warn_bf16_masters(config, params)
    # the frozen reference: the initial params in the compute dtype, never updated (a copy:
    # the masters are donated to each update)
    self.ref_params = precision.cast(params, config.dtype) if config.kl_coef else None
    self.params = params
    self.opt = make_optimizer(config, params)
    self.opt_state = init_state(self.opt, self.params)
    self.judge = make_judge(config, mesh, out)
    self.preset = rollout.preset_for(config)
    self.augment = data.augment_config(config)
    self.step = 0
    self.pristine = True  # no update of the step in progress applied yet (see `train`)

  def policy(self) -> dict:
    """The policy in the compute dtype, for the sampler and the scoring pass: cast once per
    rollout step and dropped before the updates (a copy kept and refreshed after every update
    would be held through the update too, and cast once per update: more memory, more casts);
    the masters themselves when they are in the compute dtype."""
    if jnp.dtype(self.config.param_dtype) == jnp.dtype(self.config.dtype):
      return self.params
    return precision.cast(self.params, self.config.dtype)

  def sampler(self, policy: dict | None = None):
    from vlm_jax.sampler import Sampler
    return Sampler(self.policy() if policy is None else policy, self.model_config,
                   self.processor, mesh=self.mesh,
                   unstack_layers="auto" if self.config.rollout_unstack_layers else False)

  def train_step(self) -> dict:
    start = time.perf_counter()
    if self.data.step != self.step:
      raise RuntimeError(f"data stream at step {self.data.step}, trainer at {self.step}")
    self.pristine = True
    items = next(self.data)
    policy = self.policy()
    sampler = self.sampler(policy)
    ro = rollout.collect(sampler, self.processor, self.preset, items, self.step, self.config,
                         self.judge, self.augment)
    minibatches, scored = self._minibatches(ro, sampler, policy)
    del policy, sampler  # the updates hold the masters (and the reference) alone
    stats = {**self._update(minibatches), **scored}
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
    return metrics

  def _micro_batches(self, ro: rollout.Rollouts, sampler, rows: range) -> list[dict]:
    """The micro-batches of the rollout rows `rows` (one mini-batch): the arguments of `_grad`,
    each with its `weight`, its share of the mini-batch's loss normaliser (tokens for
    token_mean, sequences otherwise), so the shares of one update sum to 1."""
    size = self.config.micro_batch
    lengths_all = ro.lengths[rows.start:rows.stop]
    total = (max(int(lengths_all.sum()), 1) if self.config.loss_agg == "token_mean"
             else len(lengths_all))
    out = []
    for lo in range(rows.start, rows.stop, size):
      sl = slice(lo, min(lo + size, rows.stop))
      batch = {k: v[sl] for k, v in ro.batch.items() if k in ("input_ids", "attention_mask")}
      batch.update(rollout.images_of_rows(ro.batch, ro.image_ranges[sl]))
      inputs, _ = sampler.prepare(batch)
      lengths = ro.lengths[sl]
      b = inputs["input_ids"].shape[0]
      # only the response positions need the LM head (bucketed: one compile per bucket)
      width = min(buckets.bucket(int(max(lengths.max(initial=1), 1)), 16),
                  inputs["input_ids"].shape[1] - 1)
      adv = np.zeros(b, np.float32)
      adv[:len(lengths)] = ro.advantages[sl]
      share = (lengths.sum() if self.config.loss_agg == "token_mean" else len(lengths)) / total
      out.append({"inputs": inputs, "mask": aligned_mask(lengths, width, b),
                  "sampler_logp": rollout.aligned(ro.logprobs[sl], lengths, width, b),
                  "adv": adv, "weight": np.float32(share), "tokens": int(lengths.sum())})
    return out

  def _minibatches(self, ro: rollout.Rollouts, sampler, policy) -> tuple[list, dict]:
    """The step's mini-batches (contiguous runs of `prompts_per_update` whole groups, each a
    list of micro-batches) with their reference log-probs (kl_coef > 0) and, off-policy
    (`on_policy`), the pre-update policy's log-probs as "old", both from one scoring pass.
    Also returns the scoring pass's metrics."""
    config = self.config
    per = (config.prompts_per_update or config.prompts_per_step) * config.group_size
    minis = [self._micro_batches(ro, sampler, range(lo, min(lo + per, len(ro.lengths))))
             for lo in range(0, len(ro.lengths), per)]
    recompute = not on_policy(config)
    if not recompute and self.ref_params is None:
      return minis, {}
    diff, tokens = 0.0, 0
    for mb in (mb for mini in minis for mb in mini):
      old, ref, gap = _score(policy if recompute else None, self.ref_params, self.model_config,
                             mb["inputs"], mb["mask"], mb["sampler_logp"], mb["mask"].shape[1],
                             config.logprob_chunk_t, config.temperature or 1.0,
                             sharding.head_sharding(self.mesh))
      mb.update(old=old, ref=ref)
      if recompute:
        diff, tokens = diff + float(gap) * mb["tokens"], tokens + mb["tokens"]
    return minis, ({"sampler_logp_diff": diff / max(tokens, 1)} if recompute else {})

  def _update(self, minibatches: list[list[dict]]) -> dict:
    """`updates_per_batch` epochs over the mini-batches, one optimizer update each; the stats
    are the mean over the step's updates."""
    totals, n = {}, 0
    for _ in range(self.config.updates_per_batch):
      for mini in minibatches:
        for k, v in self._update_once(mini).items():
          totals[k] = totals.get(k, 0.0) + v
        n += 1
    for k in ("ratio_max", "ratio_min"):
      totals.pop(k, None)  # share-weighted extremes mean nothing; ratio_mean stays
    return {k: v / max(n, 1) for k, v in totals.items()}

  def _update_once(self, mini: list[dict]) -> dict:
    """One optimizer update from the gradient accumulated over a mini-batch's micro-batches."""
    grads, stats = None, {}
    on = on_policy(self.config)
    for mb in mini:
      (loss, aux), g = _grad(self.params, self.model_config, mb["inputs"], mb["mask"],
                             mb.get("old"), mb.get("ref"), mb["adv"], mb["weight"], self.config,
                             sharding.head_sharding(self.mesh),
                             mb["sampler_logp"] if on else None)
      grads = g if grads is None else _accumulate(grads, g)
      for k, v in {"loss": loss, **aux}.items():
        stats[k] = stats.get(k, 0.0) + float(v) * (1.0 if k == "loss" else float(mb["weight"]))
    if not np.isfinite(stats.get("loss", 0.0)):
      raise FloatingPointError(f"step {self.step + 1}: loss is {stats['loss']}; the update "
                               f"was not applied")
    # a non-finite gradient or update leaves params and optimizer state as they were
    self.params, self.opt_state, gnorm, unorm = apply_updates(self.opt, self.params,
                                                              self.opt_state, grads)
    stats["grad_norm"] = float(gnorm)
    for name, value in (("gradient norm", stats["grad_norm"]), ("update norm", float(unorm))):
      if not np.isfinite(value):
        raise FloatingPointError(f"step {self.step + 1}: {name} is {value}; the update was "
                                 f"not applied")
    self.pristine = False
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
  """The model config the checkpoints are saved with; its dtype is theirs, `param_dtype` (a
  run from before param_dtype existed held its params, and recorded, in `dtype`)."""
  from vlm_jax import config_json
  hf_config = config_json.to_hf(model_config, dtype=config.param_dtype)
  if config.model:  # where `convert train-to-hf` takes tokenizer/preprocessor from
    hf_config["_name_or_path"] = os.path.abspath(config.model)
  return hf_config


def _write_model_config(trainer, out: str) -> None:
  if jax.process_index() == 0:
    with atomic_write(os.path.join(out, "model_config.json")) as f:
      json.dump(_model_config_json(trainer.config, trainer.model_config), f, indent=2)


def _leaves(tree: dict, prefix: str = ""):
  """(dotted key, value) of each non-dict value of a nested dict."""
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _check_resume(config: TrainConfig, out: str) -> None:
  """Before a resume restores anything: OUT's checkpoints must be of this model and param dtype
  (the model config they were saved with, OUT/model_config.json, would otherwise be overwritten
  and the checkpoints no longer export), and a changed TrainConfig is reported field by field
  (the compute `dtype` may change: the checkpoints hold the masters)."""
  path = os.path.join(out, "model_config.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    from rl.data import policy_config
    from vlm_jax import config_json
    model_config = policy_config(config)
    new = _model_config_json(config, model_config)
    # the same model (parsed, so a config file from another version of to_hf still matches) and
    # the same param dtype; the message lists the differing keys
    same = (config_json.from_hf(dict(old)) == model_config
            and old.get("dtype") == new.get("dtype"))
    old_leaves, new_leaves = dict(_leaves(old)), dict(_leaves(new))  # "text_config.dtype"...
    diffs = [f"  {k}: {old_leaves.get(k)!r} before, {new_leaves.get(k)!r} now"
             for k in sorted(set(old_leaves) | set(new_leaves))
             if k != "_name_or_path" and old_leaves.get(k) != new_leaves.get(k)]
    if not same:
      raise ValueError(f"{out} holds checkpoints of another model or dtype ({path}; its dtype "
                       f"is that of the saved params, param_dtype):\n" + "\n".join(diffs)
                       + f"\nPick a new output folder, or resume with the model and preset it "
                       f"was started with and param_dtype={old.get('dtype')}.")
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
  made = [d for d in (out, os.path.join(out, "checkpoints")) if not os.path.isdir(d)]
  manager = checkpoints.Manager(os.path.join(out, "checkpoints"), config.keep_checkpoints,
                                config.keep_every)
  try:
    if manager.manager.latest_step() is not None:
      _check_resume(config, out)  # before the model loads
    trainer = Trainer(config, mesh, out)
    trainer.step = manager.restore(trainer)
  except BaseException:
    manager.close()  # (an open manager left behind prints orbax tracebacks at exit)
    for folder in reversed(made):  # a run that never started leaves no empty OUT behind
      try:
        os.rmdir(folder)
      except OSError:
        pass  # not empty (another process's files, or written since), or already gone
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
    while trainer.step < config.steps and not _stop_requested():
      try:
        metrics = trainer.train_step()
      except FloatingPointError:
        if trainer.pristine:  # the state is the last finished step's: keep it before raising
          trainer.data.set_state(dict(trainer.data.get_state(), step=trainer.step))
          manager.save(trainer)
          print(f"non-finite step {trainer.step + 1}: checkpointed step {trainer.step}",
                file=sys.stderr)
        else:  # an earlier update of this step was applied: no finished step's state to save
          print(f"non-finite step {trainer.step + 1} after some of its optimizer updates "
                f"(mini-batches x updates_per_batch): nothing saved; the latest checkpoint is step "
                f"{manager.manager.latest_step()}", file=sys.stderr)
        raise
      if trainer.step % config.checkpoint_every == 0:
        manager.save(trainer)
      if config.eval_every and trainer.step % config.eval_every == 0:
        # after the step's checkpoint: an evaluation that fails or is killed loses no training
        from rl import periodic_eval
        metrics.update(periodic_eval.run_eval(trainer, trainer.step))
      log.write(metrics)
      if trainer.step % config.log_every == 0:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v
                          for k, v in metrics.items()}), file=sys.stderr)
    manager.save(trainer)  # final, or on SIGTERM (preemption): nothing done is lost
    if trainer.step < config.steps:  # only a stop request leaves the loop early
      print(f"SIGTERM{'' if _STOP['requested'] else ' (to another process)'}: checkpointed "
            f"step {trainer.step}, exiting", file=sys.stderr)
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
