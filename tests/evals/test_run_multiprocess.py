"""`evals.run` on 2 processes x 2 CPU devices (jax.distributed, gloo): each process reads only its
shard of the staged benchmark, and process 0 writes the same results a 1-process run writes."""

import json
import os
from evals import run
from tests.multiprocess import run_processes

ARGS = ["--benchmarks", "synthetic,cv_bench", "--data-dir",
        os.path.join(os.path.dirname(__file__), "fixtures"), "--synthetic-n", "5",
        "--variants", "base,wrong_caption", "--max-new-tokens", "6", "--dtype", "float32",
        "--batch-size", "4"]


def _records(out):
  with open(os.path.join(out, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_two_processes_read_disjoint_shards_and_match_one_process(tmp_path):
  run_processes("tests.evals.multiprocess_run_worker", lambda i, port: [
      str(i), port, str(tmp_path / f"out{i}"), str(tmp_path / f"read{i}.json"), *ARGS,
      "--mesh", "2x2"])
  reads = [json.load(open(tmp_path / f"read{i}.json")) for i in range(2)]
  assert reads[0] and reads[1]
  assert not {tuple(x) for x in reads[0]} & {tuple(x) for x in reads[1]}  # disjoint shards
  assert not os.path.exists(tmp_path / "out1" / "results.jsonl")  # only process 0 writes

  assert run.main(ARGS + ["--out", str(tmp_path / "single")]) == 0
  single = _records(tmp_path / "single")
  multi = _records(tmp_path / "out0")
  key = lambda r: (r["benchmark"], r["item_id"], r["variant"])  # noqa: E731
  assert sorted(map(key, multi)) == sorted(map(key, single))
  assert {(b, i) for b, i in reads[0] + reads[1]} == {(r["benchmark"], r["item_id"])
                                                       for r in single}
  by_key = {key(r): r for r in single}
  for r in multi:
    want = by_key[key(r)]
    assert r["output"] == want["output"] and r["inserted_caption"] == want["inserted_caption"]
    assert abs(r["p_correct"] - want["p_correct"]) < 1e-5
  bad = [json.loads(l) for l in open(tmp_path / "out0" / "bad_items.jsonl")]
  bad_single = [json.loads(l) for l in open(tmp_path / "single" / "bad_items.jsonl")]
  assert bad and sorted(map(json.dumps, bad)) == sorted(map(json.dumps, bad_single))
