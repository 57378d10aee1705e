"""Two processes x 2 CPU devices under jax.distributed (gloo) == one process."""

import numpy as np
import pytest

import vlm_jax
from vlm_jax.sampler import Sampler, SamplingParams
from tests.multiprocess import run_processes
from tests.vlm_jax import hf_models

BATCH = [[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10], [6]]


def test_two_processes_match_one(tmp_path):
  pytest.importorskip("transformers")
  path = str(tmp_path / "ckpt")
  hf_models.save_hf_model("shardable", path, weight_scale=6.0)
  # optimised machine code, as the 1e-5 bar was set for: at -O0 on both sides two logits of
  # ~0.01 came 1.1e-5 apart
  run_processes("tests.vlm_jax.multiprocess_worker",
                lambda i, port: [str(i), port, path, str(tmp_path)], timeout=300,
                xla_flags="--xla_force_host_platform_device_count=2")
  config, params = vlm_jax.load_hf(path)
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  want_logits = np.asarray(vlm_jax.forward(params, config, **batch))
  want = Sampler(params, config, pad_id=0)(batch, SamplingParams(max_new_tokens=8, n=2))
  real = batch["attention_mask"] == 1
  for i in range(2):
    got = np.load(tmp_path / f"process{i}.npz")
    # data=2,tensor=2 sums in another order than one device: up to ~1.2e-5 on |logits| ~0.6
    np.testing.assert_allclose(got["logits"][real], want_logits[real], atol=1e-5, rtol=2e-5)
    np.testing.assert_array_equal(got["tokens"], want.tokens)
    np.testing.assert_allclose(got["logprobs"], want.logprobs, atol=1e-5)
