"""The multi-host flags shared by the CLIs, and the byte packing of gathered records."""

import argparse
import os

import pytest

from vlm_jax import multihost


def _args(*argv):
  parser = argparse.ArgumentParser()
  multihost.add_distributed_args(parser)
  return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv, message", [
    (("--coordinator", "h:1"), "--coordinator given without --distributed"),
    (("--num-processes", "2", "--process-id", "0"),
     "--num-processes, --process-id given without --distributed"),
    (("--distributed", "--coordinator", "h:1"), "without the rest of"),
    (("--distributed", "--process-id", "1"), "without the rest of"),
    (("--distributed", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"),
     "--process-id 2 must be below --num-processes 2"),
])
def test_flags_that_would_be_ignored_or_refused_late_are_errors(argv, message):
  with pytest.raises(ValueError, match=message):
    multihost.initialize_from_args(_args(*argv))


def test_consistent_flags_pass_the_check():
  for argv in ((), ("--distributed",),
               ("--distributed", "--coordinator", "h:1", "--num-processes", "2",
                "--process-id", "1")):
    multihost.check_distributed_args(_args(*argv))


def test_evals_run_refuses_a_coordinator_without_distributed_before_writing(tmp_path):
  from evals import run
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="without --distributed"):
    run.main(["--out", str(out), "--coordinator", "localhost:1234"])
  assert not os.path.exists(out)


def test_pack_unpack_round_trip_and_truncation():
  records = [b"", b"abc", bytes(range(256))]
  assert multihost.unpack(multihost.pack(records)) == records
  with pytest.raises(ValueError, match="runs past the end"):
    multihost.unpack(multihost.pack(records)[:-1])
