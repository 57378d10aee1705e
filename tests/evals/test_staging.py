"""Staged benchmarks: the cache follows the data folder's files; empty benchmarks stage nothing."""

import os
import shutil
from pathlib import Path

import pytest

from evals import staging

FIXTURES = Path(__file__).parent / "fixtures"
pytest.importorskip("tensorflow_datasets")
pytest.importorskip("grain")


def _copy(tmp_path, name):
  shutil.copytree(FIXTURES / name, tmp_path / "data" / name)
  return tmp_path / "data"


def test_a_changed_file_in_the_data_folder_is_staged_anew(tmp_path):
  data, cache = _copy(tmp_path, "mmbench"), tmp_path / "cache"
  first = staging.stage("mmbench", data, cache_dir=cache)
  assert staging.stage("mmbench", data, cache_dir=cache).dataset_dir == first.dataset_dir
  key = staging.cache_key("mmbench", data, {}, None)
  tsv = data / "mmbench" / "MMBench_DEV_EN.tsv"
  rows = tsv.read_text(encoding="utf-8").splitlines(keepends=True)
  tsv.write_text("".join(rows[:-1]), encoding="utf-8")  # a row fewer: a fixed release, say
  assert staging.cache_key("mmbench", data, {}, None) != key
  second = staging.stage("mmbench", data, cache_dir=cache)
  assert second.dataset_dir != first.dataset_dir
  key = staging.cache_key("mmbench", data, {}, None)
  os.utime(tsv, ns=(1, 1))  # same bytes, another modification time: staged again too
  assert staging.cache_key("mmbench", data, {}, None) != key


def test_a_benchmark_without_usable_items_reports_its_bad_rows(tmp_path):
  data = tmp_path / "data"
  (data / "mmbench").mkdir(parents=True)
  (data / "mmbench" / "MMBench_DEV_EN.tsv").write_text(
      "index\tquestion\tA\tB\tanswer\timage\n1\tq?\tx\ty\tZ\t\n", encoding="utf-8")
  staged = staging.stage("mmbench", data, cache_dir=tmp_path / "cache")
  assert list(staged.shard()) == [] and len(staged.bad) == 1
  assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_limit_stops_reading_the_release(tmp_path, monkeypatch):
  from evals import benchmarks
  read = []
  real = benchmarks.load

  def counting(*args, **kwargs):
    for entry in real(*args, **kwargs):
      read.append(entry)
      yield entry

  monkeypatch.setattr(benchmarks, "load", counting)
  items, bad = staging._load("mmbench", FIXTURES, {}, 2)
  assert [i.id for i in items] == ["1", "2"] and bad == [] and len(read) == 2
  items, bad = staging._load("mmbench", FIXTURES, {}, None)
  assert len(items) == 3 and len(bad) == 2
