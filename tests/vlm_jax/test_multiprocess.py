"""Two processes x 2 CPU devices under jax.distributed (gloo) == one process."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import vlm_jax
from vlm_jax.sampler import Sampler, SamplingParams
from tests.vlm_jax import hf_models

BATCH = [[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10], [6]]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  pytest.importorskip("transformers")
  path = str(tmp_path / "ckpt")
  hf_models.save_hf_model("shardable", path, weight_scale=6.0)
  port = str(_free_port())
  env = dict(os.environ, PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, "-m", "tests.vlm_jax.multiprocess_worker", str(i),
                             port, path, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=300)[0].decode()[-3000:])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("multi-process run timed out")
  assert all(p.returncode == 0 for p in procs), "\n".join(logs)
  config, params = vlm_jax.load_hf(path)
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  want_logits = np.asarray(vlm_jax.forward(params, config, **batch))
  want = Sampler(params, config, pad_id=0)(batch, SamplingParams(max_new_tokens=8, n=2))
  real = batch["attention_mask"] == 1
  for i in range(2):
    got = np.load(tmp_path / f"process{i}.npz")
    np.testing.assert_allclose(got["logits"][real], want_logits[real], atol=1e-5)
    np.testing.assert_array_equal(got["tokens"], want.tokens)
    np.testing.assert_allclose(got["logprobs"], want.logprobs, atol=1e-5)
