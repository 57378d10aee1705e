"""Preemption-safe training state: orbax checkpoints and the metrics log.

A checkpoint holds params, optimizer state and the step (item "state"; rollout seeds derive from
(seed, step), so the step is also the RNG state) and the data iterator state (item "data", JSON,
`rl.pipeline.PromptStream.get_state`). Orbax writes to a temporary
directory and renames it when complete, so a kill mid-save leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from vlm_jax.files import atomic_write


class Manager:
  def __init__(self, directory: str, keep: int = 3, keep_every: int = 0):
    """keep: the newest checkpoints kept; keep_every: steps at multiples of it are also kept
    (never rotated out by later saves, preemption saves included); 0: off."""
    import orbax.checkpoint as ocp  # lazily: heavy
    self._ocp = ocp
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, keep_period=keep_every or None,
                                             create=True))

  def save(self, trainer) -> None:
    if self.manager.latest_step() == trainer.step:
      return  # already saved at this step
    state = {"params": trainer.params, "opt_state": trainer.opt_state,
             "step": np.int64(trainer.step)}
    args = self._ocp.args.Composite(state=self._ocp.args.StandardSave(state),
                                    data=self._ocp.args.JsonSave(trainer.data.get_state()))
    self.manager.save(trainer.step, args=args, force=True)
    self.manager.wait_until_finished()

  def restore(self, trainer) -> int:
    """Restore the latest checkpoint into `trainer` (keeping its shardings); return its step."""
    step = self.manager.latest_step()
    if step is None:
      return 0
    target = {"params": trainer.params, "opt_state": trainer.opt_state, "step": np.int64(0)}
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        target)
    try:
      restored = self.manager.restore(step, args=self._ocp.args.Composite(
          state=self._ocp.args.StandardRestore(abstract), data=self._ocp.args.JsonRestore()))
    except Exception as e:  # orbax's errors name neither the directory nor a way out
      raise ValueError(self._restore_error(step, e)) from e
    state = restored["state"]
    trainer.params, trainer.opt_state = state["params"], state["opt_state"]
    trainer.data.set_state(restored["data"])
    if trainer.data.step != int(state["step"]):
      raise ValueError(f"checkpoint {step}: data state at step {trainer.data.step}, model state "
                       f"at step {int(state['step'])}")
    return int(state["step"])

  def _restore_error(self, step: int, error: Exception) -> str:
    path = os.path.join(str(self.manager.directory), str(step))
    earlier = [s for s in self.manager.all_steps() if s < step]
    way_out = (f"to resume from step {max(earlier)}, move {path} out of "
               f"{self.manager.directory}" if earlier else "no earlier checkpoint is left")
    return (f"checkpoint {path} (step {step}) could not be restored: it is incomplete or "
            f"corrupt (e.g. copied in part), or holds another model or optimizer. Nothing was "
            f"changed; {way_out}. ({type(error).__name__}: {str(error)[:500]})")

  def close(self) -> None:
    self.manager.close()


class MetricsLog:
  """metrics.jsonl, one line per step (on resume, lines past the restored step are dropped), and
  the same scalars as TensorBoard events in `tensorboard_dir` (a new event file per run, which
  starts with a SessionLog START at the run's first step: on a resume TensorBoard then discards
  the orphaned steps a killed run logged past its last checkpoint). Only the process
  given `write=True` (process 0 in a multi-host run) touches the files."""

  def __init__(self, path: str, restored_step: int, tensorboard_dir: str | None = None,
               write: bool = True):
    self.path, self.enabled, self.tensorboard = path, write, None
    self._tensorboard_dir, self._first_step = tensorboard_dir, restored_step + 1
    if not write:
      return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kept = []
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          try:
            record = json.loads(line)
          except json.JSONDecodeError:
            break
          if record.get("step", 0) <= restored_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    with atomic_write(path) as f:
      f.writelines(kept)

  def _open_tensorboard(self) -> None:
    # at the first step written: a run with nothing to train leaves no empty event file
    from rl.tensorboard import SummaryWriter
    self.tensorboard = SummaryWriter(self._tensorboard_dir)
    # every run starts with one (TensorBoard treats a run's first START as its start and each
    # later one as a restart, which drops the earlier events at or past its step)
    self.tensorboard.session_start(self._first_step)

  def write(self, metrics: dict) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(metrics, sort_keys=True) + "\n")
      f.flush()
    if self.tensorboard is None and self._tensorboard_dir:
      self._open_tensorboard()
    if self.tensorboard is not None:
      self.tensorboard.scalars(int(metrics.get("step", 0)),
                               {k: v for k, v in metrics.items() if k != "step"})
      self.tensorboard.flush()

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()
