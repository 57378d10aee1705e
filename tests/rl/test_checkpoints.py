"""Training checkpoints (rl/checkpoints.py): what a resume restores, retention, and what an
interrupted or damaged checkpoint directory does."""

import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from evals.benchmarks.synthetic import synthetic_items
from rl import checkpoints, pipeline
from rl.config import TrainConfig
from rl.examples import Example

CONFIG = TrainConfig(synthetic_n=10, prompts_per_step=4, seed=3)


def _trainer(config=CONFIG):
  params = {"w": jnp.arange(6, dtype=jnp.float32), "b": jnp.ones((2,), jnp.float32)}
  opt = optax.adamw(1e-2)
  examples = lambda: [Example.from_item(i) for i in synthetic_items(10, seed=3)]  # noqa: E731
  return types.SimpleNamespace(params=params, opt=opt, opt_state=opt.init(params), step=0,
                               data=pipeline.PromptStream(examples, config))


def _advance(t):
  next(t.data)
  grads = jax.tree.map(lambda x: jnp.full_like(x, t.step + 1.0), t.params)
  updates, t.opt_state = t.opt.update(grads, t.opt_state, t.params)
  t.params, t.step = optax.apply_updates(t.params, updates), t.step + 1


@pytest.fixture
def saved(tmp_path):
  """A checkpoint directory holding steps 3 and 4 (keep=2 of 1..4), and the trainer at 4."""
  directory = str(tmp_path / "checkpoints")
  manager, trainer = checkpoints.Manager(directory, keep=2), _trainer()
  for _ in range(4):
    _advance(trainer)
    manager.save(trainer)
  manager.close()
  return directory, trainer


def _restore(directory, trainer):
  manager = checkpoints.Manager(directory, keep=2)
  try:
    return manager.restore(trainer)
  finally:
    manager.close()


def test_resume_restores_params_optimizer_and_data_position_and_keeps_the_last(saved):
  directory, trained = saved
  assert sorted(os.listdir(directory)) == ["3", "4"]
  fresh = _trainer()
  assert _restore(directory, fresh) == 4 and fresh.data.step == 4
  jax.tree.map(np.testing.assert_array_equal, fresh.params, trained.params)
  jax.tree.map(np.testing.assert_array_equal, fresh.opt_state, trained.opt_state)
  fresh.step = 4
  assert next(fresh.data) == next(trained.data)  # the same prompts as the uninterrupted run


def test_a_save_killed_midway_leaves_the_previous_checkpoint(saved):
  directory, _ = saved
  # orbax writes into <step>.orbax-checkpoint-tmp and renames it when complete
  partial = os.path.join(directory, "5.orbax-checkpoint-tmp")
  shutil.copytree(os.path.join(directory, "4"), partial)
  shutil.rmtree(os.path.join(partial, "data"))
  trainer = _trainer()
  assert _restore(directory, trainer) == 4
  trainer.step = 4
  _advance(trainer)
  manager = checkpoints.Manager(directory, keep=2)
  manager.save(trainer)  # the next save of that step goes through
  manager.close()
  assert _restore(directory, _trainer()) == 5


@pytest.mark.parametrize("damage", ["no data item", "empty step dir"])
def test_a_damaged_latest_checkpoint_is_named_and_left_alone(saved, damage):
  directory, _ = saved
  if damage == "no data item":
    shutil.rmtree(os.path.join(directory, "4", "data"))
    bad, earlier = "4", "3"
  else:  # e.g. a copy of the run interrupted after creating the folder
    os.mkdir(os.path.join(directory, "9"))
    bad, earlier = "9", "4"
  path = os.path.join(directory, bad)
  with pytest.raises(ValueError, match=f"checkpoint {path} .*could not be restored.*resume from "
                                       f"step {earlier}, move {path} out"):
    _restore(directory, _trainer())
  assert os.path.isdir(path)  # nothing is deleted


def test_a_checkpoint_of_other_data_is_refused(saved):
  directory, _ = saved
  with pytest.raises(ValueError, match="seed=3 but this run has 4"):
    _restore(directory, _trainer(TrainConfig(synthetic_n=10, prompts_per_step=4, seed=4)))


def test_keep_every_keeps_the_periodic_checkpoints_a_study_evaluates(tmp_path):
  """keep=2, keep_every=2 over steps 1..7: the last two plus every even step survive the
  rotation (the study evaluates each checkpoint_every-th checkpoint after the run)."""
  directory = str(tmp_path / "checkpoints")
  manager, trainer = checkpoints.Manager(directory, keep=2, keep_every=2), _trainer()
  for _ in range(7):
    _advance(trainer)
    manager.save(trainer)
  manager.close()
  assert sorted(os.listdir(directory), key=int) == ["2", "4", "6", "7"]
  with pytest.raises(ValueError, match="keep_every"):
    TrainConfig(keep_every=-1)
