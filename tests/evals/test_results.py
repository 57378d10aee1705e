"""Results JSONL: appended per item, torn last line repaired, reruns resume."""

import json

import pytest

from evals.results import ResultsFile


def _rec(i, variant="base"):
  return {"benchmark": "b", "item_id": str(i), "variant": variant, "correct": True}


def test_append_and_resume(tmp_path):
  path = str(tmp_path / "results.jsonl")
  f = ResultsFile(path)
  f.append(_rec(1))
  f.append(_rec(1, "abstain"))
  again = ResultsFile(path)
  assert again.done == {("b", "1", "base"), ("b", "1", "abstain")}
  with pytest.raises(ValueError, match="already"):
    again.append(_rec(1))


def test_torn_last_line_is_dropped(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text(json.dumps(_rec(1)) + "\n" + json.dumps(_rec(2))[:10])
  f = ResultsFile(str(path))
  assert [r["item_id"] for r in f.records] == ["1"]
  assert path.read_text() == json.dumps(_rec(1)) + "\n"
  f.append(_rec(2))
  assert len(ResultsFile(str(path)).records) == 2


def test_corrupt_middle_line_is_an_error(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text(json.dumps(_rec(1)) + "\n{bad\n" + json.dumps(_rec(2)) + "\n")
  with pytest.raises(ValueError, match="line 2"):
    ResultsFile(str(path))


def test_complete_json_without_newline_is_torn(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text(json.dumps(_rec(1)) + "\n" + json.dumps(_rec(2)))  # killed before the \n
  f = ResultsFile(str(path))
  assert [r["item_id"] for r in f.records] == ["1"]
  f.append(_rec(2))
  f.append(_rec(3))
  assert len(ResultsFile(str(path)).records) == 3
