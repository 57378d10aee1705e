"""One process of the 2-process `evals.run` test (test_run_multiprocess.py).

Usage: python -m tests.evals.multiprocess_run_worker PROCESS_ID PORT OUT_DIR READ_LOG [ARGS...]
Runs `evals.run --distributed` with 2 fake CPU devices per process (gloo collectives) and writes
to READ_LOG the ids of the items this process read from its shard.
"""

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")  # run_processes sets it

import jax  # noqa: E402


def main():
  process_id, port, out, read_log, *rest = sys.argv[1:]
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from evals import run, staging
  real_shard, read = staging.Staged.shard, []

  def logged_shard(self, process_index=0, process_count=1):
    for item in real_shard(self, process_index, process_count):
      read.append([item.benchmark, item.id])
      yield item

  staging.Staged.shard = logged_shard
  code = run.main(["--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2",
                   "--process-id", process_id, "--out", out, *rest])
  with open(read_log, "w") as f:
    json.dump(read, f)
  jax.distributed.shutdown()
  sys.exit(code)


if __name__ == "__main__":
  main()
