"""Orbax checkpoints of model params, with the model config beside them.

Layout of a params checkpoint directory:
  config.json   the HF-format config (`config.to_hf`), so the params can be rebuilt and exported
  params/       an orbax StandardCheckpointer tree of the params pytree; a save over an earlier
                checkpoint writes `params-<tag>/` instead, which config.json names (`PARAMS_KEY`)
Writes are atomic: the new tree is written in full beside any earlier one (orbax's own overwrite
deletes the old tree first), and config.json, written through a temp file, is the commit; the
earlier tree is removed after it. A kill at any point leaves the old checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil

import jax
import jax.numpy as jnp

from vlm_jax import config_json
from vlm_jax import params as params_lib
from vlm_jax import sharding as sharding_lib
from vlm_jax.config import ModelConfig
from vlm_jax.files import atomic_write


def _checkpointer():
  import orbax.checkpoint as ocp  # imported lazily: heavy, and only needed here
  return ocp.StandardCheckpointer()


PARAMS_KEY = "vlm_jax_params_dir"  # config.json: the params tree's folder, when not "params"


def _params_dir(path: str) -> str:
  """The params tree's folder name in checkpoint `path` ("params" unless config.json names
  another); "params" where config.json is missing or unreadable (the loader reports that)."""
  try:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
      name = json.load(f).get(PARAMS_KEY)
  except (OSError, ValueError, AttributeError):
    return "params"
  return name if isinstance(name, str) and name else "params"


def save_params(path: str, params: dict, config: ModelConfig) -> None:
  """Write `params` and `config` to `path`; over an earlier checkpoint there, atomically."""
  path = os.path.abspath(path)
  os.makedirs(path, exist_ok=True)
  earlier = [n for n in os.listdir(path)  # params/, params-<tag>/, and orbax's temp folders
             if n == "params" or n.startswith(("params-", "params."))]
  # a fresh folder gets the plain layout; over an earlier checkpoint, a folder no tree has
  name = f"params-{secrets.token_hex(4)}" if earlier else "params"
  ckpt = _checkpointer()
  ckpt.save(os.path.join(path, name), params)
  ckpt.wait_until_finished()
  dtype = str(jax.tree.leaves(params)[0].dtype)
  hf_config = config_json.to_hf(config, dtype=dtype)
  if name != "params":
    hf_config[PARAMS_KEY] = name
  with atomic_write(os.path.join(path, "config.json")) as f:  # the commit
    json.dump(hf_config, f, indent=2)
  for old in earlier:  # the earlier tree, and any a killed save left
    shutil.rmtree(os.path.join(path, old), ignore_errors=True)


def _on_host(tree):
  """The sharding of every leaf when the caller names none: one CPU device
  (`sharding.host_device`). Not the layout the checkpoint was saved with: orbax refuses that one
  ("Topology mismatch") on another device count, e.g. params saved from an 8-device mesh and
  restored in a 1-device process; nor the default accelerator, which a large model overflows."""
  host = jax.sharding.SingleDeviceSharding(sharding_lib.host_device())
  return jax.tree.map(lambda _: host, tree)


def load_params(path: str, dtype=None, shardings=None) -> tuple[ModelConfig, dict]:
  """(config, params) from `save_params` output; cast to dtype, placed per `shardings` if given,
  else on one CPU device (`_on_host`), whatever mesh they were saved from."""
  path = os.path.abspath(path)
  tree = os.path.join(path, _params_dir(path))
  if not os.path.exists(tree):
    raise FileNotFoundError(f"{path} is not a vlm_jax params checkpoint (no "
                            f"{os.path.basename(tree)}/ inside)")
  config = config_json.from_hf(path)
  stored = _checkpointer().metadata(tree)
  stored = getattr(stored, "item_metadata", stored)
  # the tree of plain dicts inside orbax's metadata object, so `shardings` (a dict of the
  # params' structure) lines up with it
  stored = getattr(stored, "tree", stored)
  leaf_dtype = lambda m: jnp.dtype(dtype) if dtype is not None else m.dtype
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, leaf_dtype(m)), stored)
  shardings = _on_host(target) if shardings is None else shardings
  target = jax.tree.map(lambda t, s: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=s),
                        target, shardings)
  params = _checkpointer().restore(tree, target)
  params_lib.check_params(params, config, source=f"orbax checkpoint {path}")
  return config, params


def _run_config_path(run_dir: str) -> str:
  path = os.path.join(os.path.abspath(run_dir), "model_config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{os.path.abspath(run_dir)} is not an rl.train output folder (no "
                            f"model_config.json)")
  return path


def load_training_params(run_dir: str, step: int | None = None, dtype=None):
  """(config, params) of a `rl.train` run: `run_dir/model_config.json` and the params subtree of
  checkpoint `step` (default: the latest), restored alone (no optimizer state in memory), on one
  CPU device whatever mesh trained them (see `_on_host`)."""
  run_dir = os.path.abspath(run_dir)
  config = config_json.from_hf(_run_config_path(run_dir))
  root = os.path.join(run_dir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
  if not steps:
    raise FileNotFoundError(f"{root}: the run has no checkpoint yet (rl.train saves one every "
                            f"checkpoint_every steps, on SIGTERM and at the end)")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"{root}: no checkpoint for step {step} (have {steps})")
  step = step if step is not None else steps[-1]
  path = os.path.join(root, str(step), "state")
  try:
    state = _restore_training_params(path, dtype)
  except Exception as e:  # orbax's and TensorStore's errors name neither the step nor a way out
    others = [s for s in steps if s != step]
    way_out = (f"the run's other checkpoints are steps {others} (--step N to export one)"
               if others else "the run has no other checkpoint")
    raise ValueError(f"checkpoint {os.path.dirname(path)} (step {step}) could not be read: it "
                     f"is incomplete or corrupt (e.g. copied in part); {way_out}. "
                     f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
  params_lib.check_params(state["params"], config, source=f"training checkpoint {path}")
  return config, state["params"]


def _restore_training_params(path: str, dtype) -> dict:
  """{"params": ...} from a training checkpoint's `state` item at `path`."""
  import orbax.checkpoint as ocp
  from etils import epath
  # The item's handler, not `StandardCheckpointer().metadata`: the checkpointer also looks for
  # step metadata (_CHECKPOINT_METADATA) inside the item dir, and logs "Metadata file does not
  # exist" when it is not there; the CheckpointManager that wrote the run keeps it one level up
  # (checkpoints/N/), and only the item's tree metadata is needed here, so asking the handler
  # skips that harmless miss without muting any other warning.
  meta = ocp.StandardCheckpointHandler().metadata(epath.Path(path))
  cast = lambda m: jnp.dtype(dtype) if dtype is not None else m.dtype
  target = {"params": jax.tree.map(
      lambda m, s: jax.ShapeDtypeStruct(m.shape, cast(m), sharding=s), meta["params"],
      _on_host(meta["params"]))}
  restore_args = jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding, dtype=t.dtype),
                              target)
  return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True))


def training_source(run_dir: str) -> str | None:
  """The HF checkpoint dir an `rl.train` run started from, as its model_config.json records it
  (transformers' `_name_or_path` key; it may not exist on this machine); None where it records
  none (a random preset, or a run from before the key was written)."""
  path = _run_config_path(run_dir)
  with open(path, encoding="utf-8") as f:
    try:
      source = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: invalid JSON ({e})") from e
  source = source.get("_name_or_path") if isinstance(source, dict) else None
  return source if isinstance(source, str) and source else None
