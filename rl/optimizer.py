"""The AdamW optimizer of GRPO and SFT: its construction from a TrainConfig (warmup, clipping,
decay of matrices only, frozen subtrees) and the jitted, donating update that refuses a
non-finite step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from rl.config import TrainConfig


def frozen_keys(config: TrainConfig, params: dict) -> tuple[str, ...]:
  """The top-level params subtrees that are not trained (`freeze_vision`): no gradient is
  taken for them (so neither is the vision tower's backward) and AdamW leaves them be."""
  return ("vision",) if config.freeze_vision and "vision" in params else ()


def make_optimizer(config: TrainConfig, params: dict) -> optax.GradientTransformation:
  """AdamW after global-norm clipping, its moments in the params' dtype (the float32 masters of
  `param_dtype`). The learning rate rises linearly from 0 over the first `warmup_steps`
  training steps (each `config.updates_per_step` optimizer updates: mini-batches x epochs) and
  is `lr` from then on (as transformers' linear warmup: the first update has 0);
  warmup_steps=0: `lr` from the first update. Weight decay applies to matrices (`kernel`,
  `embedding`) alone, never to biases or norm scales (as transformers' Trainer)."""
  warmup = config.warmup_steps * config.updates_per_step
  schedule = (optax.linear_schedule(0.0, config.lr, warmup) if warmup
              else optax.constant_schedule(config.lr))
  opt = optax.chain(optax.clip_by_global_norm(config.grad_clip),
                    optax.adamw(schedule, weight_decay=config.weight_decay,
                                mask=_decayed))
  frozen = frozen_keys(config, params)
  if not frozen:
    return opt
  labels = {k: jax.tree.map(lambda _: "frozen" if k in frozen else "train", v)
            for k, v in params.items()}
  return optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)


def init_state(opt: optax.GradientTransformation, params: dict):
  """`opt.init(params)`, jitted, with every moment placed as its parameter is (the same
  sharding on the params' mesh) and the step counts replicated. A plain `jax.jit(opt.init)`
  leaves that to XLA, which replicates the moments (zeros have no input to follow): on
  `fsdp=16` a 72B run's float32 moments would take 547 GiB per device instead of 34."""
  by_path = {_keys(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  named = [p.sharding for p in by_path.values() if isinstance(p.sharding, NamedSharding)]
  whole = (NamedSharding(named[0].mesh, PartitionSpec()) if named
           else next(iter(by_path.values())).sharding)

  def place(path, leaf):
    keys = _keys(path)
    for i in range(len(keys)):  # the state's path ends with its parameter's (longest first)
      param = by_path.get(keys[i:])
      if param is not None and param.shape == leaf.shape:
        return param.sharding
    return whole

  out = jax.tree_util.tree_map_with_path(place, jax.eval_shape(opt.init, params))
  return jax.jit(opt.init, out_shardings=out)(params)


def _keys(path) -> tuple:
  """The dict keys of a pytree path (the params' own; optax's tuple and field steps dropped)."""
  return tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))


def _decayed(params: dict) -> dict:
  """True for the leaves weight decay applies to: kernels and embeddings."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) in ("kernel", "embedding"), params)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def apply_updates(opt, params, opt_state, grads):
  """(params, opt_state, gradient norm, update norm) after one optimizer update; where either
  norm is not finite, the params and optimizer state passed in (the caller raises). `grads`
  may leave out frozen subtrees (`rl.train._grad`): the norm is that of the trained params."""
  norm = optax.global_norm(grads)
  grads = {k: grads[k] if k in grads else jax.tree.map(jnp.zeros_like, v)
           for k, v in params.items()}
  new_updates, new_state = opt.update(grads, opt_state, params)
  step_norm = optax.global_norm(new_updates)
  new_params = optax.apply_updates(params, new_updates)
  ok = jnp.isfinite(norm) & jnp.isfinite(step_norm)
  keep = lambda new, old: jnp.where(ok, new, old)
  return (jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state), norm,
          step_norm)
