"""Launch a 2-process jax.distributed test: one subprocess per process on a free local port."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_processes(module: str, args_of, count: int = 2, timeout: int = 420) -> None:
  """Run `python -m module *args_of(process_id, port)` for each process; fail with their logs
  unless every one exits 0. XLA_FLAGS is left to the worker (it sets its own device count)."""
  port = str(free_port())
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, "-m", module, *args_of(i, port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(count)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=timeout)[0].decode()[-3000:])
  except subprocess.TimeoutExpired:
    raise AssertionError(f"multi-process run of {module} timed out") from None
  finally:
    for p in procs:
      p.kill()
  assert all(p.returncode == 0 for p in procs), "\n".join(logs)
