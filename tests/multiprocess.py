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


# Each worker process: 2 fake CPU devices, LLVM at -O0 as the suite's own processes
# (tests/conftest.py); optimised machine code took the 2-process eval test 74 s alone, -O0 60 s.
WORKER_XLA_FLAGS = "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"


def run_processes(module: str, args_of, count: int = 2, timeout: int = 420,
                  xla_flags: str = WORKER_XLA_FLAGS) -> None:
  """Run `python -m module *args_of(process_id, port)` for each process; fail with their logs
  unless every one exits 0. Each worker gets `xla_flags` (2 CPU devices)."""
  port = str(free_port())
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=xla_flags)
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
