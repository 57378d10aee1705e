"""The mapping-limit guard: it reads this process's mappings, and near the limit it drops the
compiled programs (the sampler then recompiles instead of XLA crashing in a compile)."""

import mmap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vlm_jax
from vlm_jax import memory_maps, sampler
from vlm_jax.sampler import Sampler, SamplingParams
from tests.vlm_jax import hf_models


def _limit(monkeypatch, tmp_path, value: int):
  path = tmp_path / "max_map_count"
  path.write_text(f"{value}\n")
  monkeypatch.setattr(memory_maps, "_MAX_MAP_COUNT", str(path))


def test_usage_counts_this_processs_mappings(tmp_path):
  if memory_maps.usage() is None:
    pytest.skip("no /proc")
  before, limit = memory_maps.usage()
  path = tmp_path / "data"
  path.write_bytes(b"x" * 4096)
  with open(path, "rb") as f:
    views = [mmap.mmap(f.fileno(), 4096, access=mmap.ACCESS_READ) for _ in range(5)]
  after, _ = memory_maps.usage()
  for v in views:
    v.close()
  assert 0 < before < limit and after >= before + 5


def _compile_something():
  jax.jit(lambda x: x + np.random.rand())(jnp.ones(2))  # a new program


def test_relieve_drops_compiled_programs_only_near_the_limit(monkeypatch, tmp_path):
  if memory_maps.usage() is None:
    pytest.skip("no /proc")
  f = jax.jit(lambda x: x * 2)
  f(jnp.ones(3))
  assert f._cache_size() == 1
  assert not memory_maps.relieve()  # far from the real limit: nothing dropped
  assert f._cache_size() == 1
  _limit(monkeypatch, tmp_path, 10)
  assert not memory_maps.relieve()  # nothing compiled since the last look: not looked at
  _compile_something()
  with pytest.warns(UserWarning, match="max_map_count"):
    assert memory_maps.relieve()
  assert f._cache_size() == 0
  monkeypatch.setattr(memory_maps, "_MAX_MAP_COUNT", str(tmp_path / "missing"))
  _compile_something()
  assert memory_maps.usage() is None and not memory_maps.relieve()


def test_sampler_recompiles_instead_of_crashing(monkeypatch, tmp_path):
  path = str(tmp_path / "model")
  hf_models.save_hf_model("base", path)
  config, params = vlm_jax.load_hf(path)
  batch = hf_models.build_batch([[5, 7, 9], [3, 4]], config.vision.patch_dim)
  s = Sampler(params, config, pad_id=0)
  sp = SamplingParams(max_new_tokens=4, logprobs=False)
  first = s(batch, sp)
  traces = dict(sampler.TRACE_COUNTS)
  s(batch, sp)
  assert sampler.TRACE_COUNTS == traces  # one bucket: compiled once
  _limit(monkeypatch, tmp_path, 10)
  _compile_something()  # the mappings grew since the last call
  with pytest.warns(UserWarning, match="max_map_count"):
    again = s(batch, sp)
  assert sampler.TRACE_COUNTS["prefill"] == traces["prefill"] + 1
  assert sampler.TRACE_COUNTS["decode"] == traces["decode"] + 1
  np.testing.assert_array_equal(again.tokens, first.tokens)
