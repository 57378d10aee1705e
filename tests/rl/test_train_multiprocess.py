"""`rl.train` on 2 processes x 2 CPU devices (jax.distributed, gloo): each process reads its own
half of every step's prompts, the run logs the metrics a 1-process run logs, and a SIGTERM one
process alone gets stops both after the same step, checkpointed."""

import json
import os
import pytest

from rl import train
from tests.multiprocess import ROOT, run_processes

OVERRIDES = ["steps=2", "checkpoint_every=1"]
EXACT = ("step", "reward/format", "reward/accuracy", "reward/total", "response_length")


def test_two_process_training_matches_one_process(tmp_path):
  out = str(tmp_path / "multi")
  # steps=3, but process 1 is told to stop after step 2: both must stop there (the checkpoint
  # save is collective), where the 1-process run of steps=2 ends
  os.environ["STOP_AFTER"] = "2"
  try:
    run_processes("tests.rl.multiprocess_train_worker", lambda i, port: [
        str(i), port, out, str(tmp_path / f"read{i}.json"), *OVERRIDES, "steps=3"], timeout=480)
  finally:
    del os.environ["STOP_AFTER"]
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
