"""vlm_jax.files.atomic_write: complete new contents or the old ones, nothing left behind."""

import os

import pytest

from vlm_jax.files import atomic_write


def test_writes_text_and_bytes_and_makes_the_folder(tmp_path):
  path = tmp_path / "a" / "b" / "x.json"
  with atomic_write(str(path)) as f:
    f.write("héllo\n")
  assert path.read_text(encoding="utf-8") == "héllo\n"
  with atomic_write(str(path), "wb") as f:
    f.write(b"\x00\x01")
  assert path.read_bytes() == b"\x00\x01"
  assert os.listdir(path.parent) == ["x.json"]  # no temporary file left


def test_an_error_keeps_the_old_contents_and_removes_the_temporary(tmp_path):
  path = tmp_path / "x.txt"
  path.write_text("old")
  with pytest.raises(RuntimeError, match="disk full"):
    with atomic_write(str(path)) as f:
      f.write("half of the new")
      assert path.read_text() == "old"  # nothing visible before the block ends
      raise RuntimeError("disk full")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["x.txt"]


def test_a_new_file_gets_the_permissions_a_plain_write_would(tmp_path):
  plain, atomic = tmp_path / "plain", tmp_path / "atomic"
  plain.write_text("x")
  with atomic_write(str(atomic)) as f:
    f.write("x")
  assert os.stat(atomic).st_mode == os.stat(plain).st_mode


def test_bad_mode():
  with pytest.raises(ValueError, match="mode"):
    with atomic_write("x", "a"):
      pass
