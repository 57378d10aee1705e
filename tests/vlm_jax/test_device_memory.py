"""device_memory.py: per-device parameter bytes on a mesh, and the up-front refusal of a mesh
on which the parameters alone would not fit (8 fake CPU devices, see tests/conftest.py; CPU
reports no free memory, so the tests give the devices a size)."""

import math

import jax
import numpy as np
import pytest

import vlm_jax
from vlm_jax import config as config_lib
from vlm_jax import device_memory
from vlm_jax import params as params_lib
from vlm_jax import sharding

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


@pytest.mark.parametrize("spec", ["2x4", "fsdp=8", "data=2,fsdp=2,tensor=2", "8x1"])
def test_param_bytes_per_device_equal_the_placed_shards(spec):
  config = config_lib.get_config("tiny")
  mesh = sharding.parse_mesh(spec)
  params = sharding.shard_params(params_lib.init_params(config, jax.random.key(0)), config, mesh)
  device = mesh.devices.flat[0]
  placed = sum(s.data.nbytes for x in jax.tree.leaves(params) for s in x.addressable_shards
               if s.device == device)
  assert device_memory.param_bytes_per_device(config, dict(mesh.shape), 4) == placed


def test_a_mesh_the_parameters_do_not_fit_is_refused_before_reading(tmp_path, monkeypatch):
  config = config_lib.get_config("tiny")
  vlm_jax.save_hf(params_lib.init_params(config, jax.random.key(0)), config, str(tmp_path))
  mesh = sharding.parse_mesh("8x1")  # every device holds a whole copy
  whole = device_memory.param_bytes_per_device(config, {"data": 8}, 4)
  split = device_memory.param_bytes_per_device(config, {"fsdp": 8, "tensor": 1}, 4)
  assert split < whole / 4
  monkeypatch.setattr(device_memory, "free_bytes", lambda device: whole - 1)
  read = []
  monkeypatch.setattr(vlm_jax.hf, "_ReadOnce", lambda fn: read.append(fn))
  with pytest.raises(sharding.MeshError, match=r"need .* GiB per device on mesh \{'data': 8, "
                     r"'model': 1\} \(32-bit\), more than .* free .*nothing was read; the mesh "
                     r"'fsdp=8' would hold"):
    vlm_jax.load_hf(str(tmp_path), mesh=mesh)
  assert not read
  # bfloat16 halves the need: it fits
  monkeypatch.undo()
  monkeypatch.setattr(device_memory, "free_bytes", lambda device: math.ceil(whole / 2))
  _, params = vlm_jax.load_hf(str(tmp_path), dtype="bfloat16", mesh=mesh)
  assert params["text"]["embed"]["embedding"].dtype == np.dtype("bfloat16")
  # where the backend reports nothing (CPU), nothing is checked
  monkeypatch.setattr(device_memory, "free_bytes", lambda device: None)
  vlm_jax.load_hf(str(tmp_path), mesh=mesh)
