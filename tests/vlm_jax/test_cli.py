"""CLI error handling: a user's mistake is one line on stderr and exit status 2; bugs keep their
traceback."""

import os
import subprocess
import sys

import pytest

from vlm_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _raise(e):
  def main():
    raise e
  return main


def test_user_errors_are_one_line_and_status_2(capsys, monkeypatch):
  monkeypatch.delenv("VLM_JAX_TRACEBACK", raising=False)
  assert cli.run(_raise(ValueError("lr='x': expected float")), "prog") == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("prog: error: ValueError: lr='x': expected float (at tests/vlm_jax/"
                        "test_cli.py:") and "\n" not in err
  assert cli.run(_raise(KeyError("unknown preset 'x'")), "prog") == 2
  assert "KeyError: unknown preset 'x' (at" in capsys.readouterr().err  # not the repr's quotes
  assert cli.run(lambda: None, "prog") == 0 and cli.run(lambda: 3, "prog") == 3


def test_bugs_and_the_traceback_switch_raise(monkeypatch):
  with pytest.raises(RuntimeError):
    cli.run(_raise(RuntimeError("a bug")), "prog")
  monkeypatch.setenv("VLM_JAX_TRACEBACK", "1")
  with pytest.raises(ValueError):
    cli.run(_raise(ValueError("x")), "prog")


def test_a_cli_reports_a_bad_override_in_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("VLM_JAX_TRACEBACK", None)
  proc = subprocess.run([sys.executable, "-m", "rl.train", "--config", "configs/smoke.py",
                         "--out", str(tmp_path), "group_size=0"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  (line,) = proc.stderr.strip().splitlines()
  assert line.startswith("python -m rl.train: error: ValueError: group_size=0: must be at least 1 "
                         "(at rl/config.py:")
