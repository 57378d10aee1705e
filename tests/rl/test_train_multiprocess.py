"""`rl.train` on 2 processes x 2 CPU devices (jax.distributed, gloo): each process reads its own
half of every step's prompts, and the run logs the metrics a 1-process run logs."""

import json
import os
import socket
import subprocess
import sys

import pytest

from rl import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = ["steps=2", "checkpoint_every=1"]
EXACT = ("step", "reward/format", "reward/accuracy", "reward/total", "response_length")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_process_training_matches_one_process(tmp_path):
  port, out = str(_free_port()), str(tmp_path / "multi")
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.rl.multiprocess_train_worker", str(i), port, out,
       str(tmp_path / f"read{i}.json"), *OVERRIDES],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=480)[0].decode()[-3000:])
  finally:
    for p in procs:
      p.kill()
  assert all(p.returncode == 0 for p in procs), "\n".join(logs)
  reads = [json.load(open(tmp_path / f"read{i}.json")) for i in range(2)]
  single = str(tmp_path / "single")
  assert train.main(["--config", os.path.join(ROOT, "configs", "smoke.py"), "--out", single,
                     *OVERRIDES]) == 0
  from rl import data, pipeline
  from rl.config import apply_overrides, load_config
  config = apply_overrides(load_config(os.path.join(ROOT, "configs", "smoke.py")), OVERRIDES)
  whole = pipeline.PromptStream(lambda: data.load_items(config), config)
  for step in range(2):
    halves = [dict(r)[step] for r in reads]
    assert len(halves[0]) == len(halves[1]) == config.prompts_per_step // 2
    assert halves[0] + halves[1] == [e.id for e in whole.batch(step)]
  rows = [[json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))] for d in (out, single)]
  assert len(rows[0]) == len(rows[1]) == 2
  for got, want in zip(*rows):
    for key in EXACT:
      assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-4)
  assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["1", "2"]
