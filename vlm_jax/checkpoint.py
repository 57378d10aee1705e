"""Orbax checkpoints of model params, with the model config beside them.

Layout of a params checkpoint directory:
  config.json   the HF-format config (`config.to_hf`), so the params can be rebuilt and exported
  params/       an orbax StandardCheckpointer tree of the params pytree
Writes are atomic: orbax finalises `params/` by rename, and config.json goes through a temp file.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from vlm_jax import config as config_lib
from vlm_jax import params as params_lib
from vlm_jax import sharding as sharding_lib
from vlm_jax.config import ModelConfig
from vlm_jax.files import atomic_write


def _checkpointer():
  import orbax.checkpoint as ocp  # imported lazily: heavy, and only needed here
  return ocp.StandardCheckpointer()


def save_params(path: str, params: dict, config: ModelConfig) -> None:
  path = os.path.abspath(path)
  os.makedirs(path, exist_ok=True)
  ckpt = _checkpointer()
  ckpt.save(os.path.join(path, "params"), params, force=True)
  ckpt.wait_until_finished()
  dtype = str(jax.tree.leaves(params)[0].dtype)
  with atomic_write(os.path.join(path, "config.json")) as f:
    json.dump(config_lib.to_hf(config, dtype=dtype), f, indent=2)


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
  if not os.path.exists(os.path.join(path, "params")):
    raise FileNotFoundError(f"{path} is not a vlm_jax params checkpoint (no params/ inside)")
  config = config_lib.from_hf(path)
  stored = _checkpointer().metadata(os.path.join(path, "params"))
  stored = getattr(stored, "item_metadata", stored)
  leaf_dtype = lambda m: jnp.dtype(dtype) if dtype is not None else m.dtype
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, leaf_dtype(m)), stored)
  shardings = _on_host(target) if shardings is None else shardings
  target = jax.tree.map(lambda t, s: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=s),
                        target, shardings)
  params = _checkpointer().restore(os.path.join(path, "params"), target)
  params_lib.check_params(params, config, source=f"orbax checkpoint {path}")
  return config, params


def load_training_params(run_dir: str, step: int | None = None, dtype=None):
  """(config, params) of a `rl.train` run: `run_dir/model_config.json` and the params subtree of
  checkpoint `step` (default: the latest), restored alone (no optimizer state in memory), on one
  CPU device whatever mesh trained them (see `_on_host`)."""
  import orbax.checkpoint as ocp
  from etils import epath
  run_dir = os.path.abspath(run_dir)
  config_path = os.path.join(run_dir, "model_config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{run_dir} is not an rl.train output folder (no model_config.json)")
  config = config_lib.from_hf(config_path)
  root = os.path.join(run_dir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
  if not steps:
    raise FileNotFoundError(f"{root}: the run has no checkpoint yet (rl.train saves one every "
                            f"checkpoint_every steps, on SIGTERM and at the end)")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"{root}: no checkpoint for step {step} (have {steps})")
  path = os.path.join(root, str(step if step is not None else steps[-1]), "state")
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
  state = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True))
  params_lib.check_params(state["params"], config, source=f"training checkpoint {path}")
  return config, state["params"]


def training_source(run_dir: str) -> str | None:
  """The HF checkpoint dir an `rl.train` run started from, as its model_config.json records it
  (transformers' `_name_or_path` key; it may not exist on this machine); None where it records
  none (a random preset, or a run from before the key was written)."""
  with open(os.path.join(run_dir, "model_config.json"), encoding="utf-8") as f:
    source = json.load(f).get("_name_or_path")
  return source if isinstance(source, str) and source else None
