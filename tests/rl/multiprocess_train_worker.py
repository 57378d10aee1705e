"""One process of the 2-process `rl.train` test (test_train_multiprocess.py).

Usage: python -m tests.rl.multiprocess_train_worker PROCESS_ID PORT OUT_DIR READ_LOG [overrides]
With STOP_AFTER=N in the environment, process 1 alone acts as if SIGTERM came after step N.
"""

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")  # run_processes sets it

import jax  # noqa: E402


def main():
  process_id, port, out, read_log, *overrides = sys.argv[1:]
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(process_id))
  from rl import pipeline, train
  real, read = pipeline.PromptStream.local_examples, []

  def logged(self, step):
    out = real(self, step)
    read.append([step, [e.id for e in out]])
    return out

  pipeline.PromptStream.local_examples = logged
  stop_after = int(os.environ.get("STOP_AFTER", 0))
  if stop_after and process_id == "1":  # a preemption notice this host alone received
    step = train.Trainer.train_step

    def then_stop(self):
      metrics = step(self)
      if self.step == stop_after:
        train._STOP["requested"] = True
      return metrics

    train.Trainer.train_step = then_stop
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  code = train.main(["--config", os.path.join(root, "configs", "smoke.py"), "--mesh", "2x2",
                     "--out", out, *overrides])
  with open(read_log, "w") as f:
    json.dump(read, f)
  jax.distributed.shutdown()
  sys.exit(code)


if __name__ == "__main__":
  main()
