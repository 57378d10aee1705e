"""rl/optimizer.py: the AdamW state's placement on a mesh (construction, decay and warmup are
tested in test_configs.py, the update in test_grpo.py)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rl.config import apply_overrides, load_config
from rl.optimizer import init_state, make_optimizer
from vlm_jax import config as config_lib
from vlm_jax import params as params_lib
from vlm_jax import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.parametrize("freeze_vision", [False, True])
def test_moments_are_sharded_like_their_parameters(freeze_vision):
  model = config_lib.get_config("tiny")
  mesh = sharding.parse_mesh("data=2,fsdp=2,tensor=2")
  params = sharding.shard_params(params_lib.init_params(model, jax.random.key(0)), model, mesh)
  config = apply_overrides(load_config(os.path.join(ROOT, "configs", "smoke.py")),
                           [f"freeze_vision={freeze_vision}", "weight_decay=0.1"])
  opt = make_optimizer(config, params)
  state = init_state(opt, params)
  by_path = {tuple(k.key for k in path): x
             for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  moments = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    keys = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
    param = next((by_path[keys[i:]] for i in range(len(keys)) if keys[i:] in by_path), None)
    if param is None:  # a step count
      assert leaf.shape == () and leaf.sharding.spec == P()
      continue
    moments += 1
    assert leaf.sharding == param.sharding, keys
    np.testing.assert_array_equal(np.asarray(leaf), 0)
  trained = {k for k in by_path if not (freeze_vision and k[0] == "vision")}
  assert moments == 2 * len(trained)  # mu and nu of every trained leaf, none of a frozen one
  q = params["text"]["layers"]["q"]["kernel"]
  assert q.sharding.spec == P(None, "fsdp", "tensor", None)  # so the test sees a sharded leaf
  # what plain jax.jit(opt.init) gives: XLA replicates the moments on every device
  plain = jax.tree.leaves(jax.jit(opt.init)(params))
  assert [x for x in plain if x.size > 1 and x.sharding.is_fully_replicated]


def test_unsharded_params_get_a_state_on_their_device():
  params = {"text": {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}}
  config = load_config(os.path.join(ROOT, "configs", "smoke.py"))
  state = init_state(make_optimizer(config, params), params)
  devices = {d for x in jax.tree.leaves(state) for d in x.devices()}
  assert devices == {jax.devices()[0]}
