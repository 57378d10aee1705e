"""Results JSONL: appended per item, torn last line repaired, reruns resume."""

import json
import os
import subprocess
import sys

import pytest

from evals.results import SETTINGS_FILE, ResultsFile, check_settings


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


def test_a_middle_line_that_is_not_utf8_is_named(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_bytes(json.dumps(_rec(1)).encode() + b"\n\xff\xfe{\n" + json.dumps(_rec(2)).encode()
                   + b"\n")
  with pytest.raises(ValueError, match="line 2 is corrupt"):
    ResultsFile(str(path))
  path.write_bytes(json.dumps(_rec(1)).encode() + b"\n\xff\xfe")  # torn mid-character
  assert [r["item_id"] for r in ResultsFile(str(path)).records] == ["1"]


def test_a_second_writer_process_is_refused_and_repairs_nothing(tmp_path):
  """Two runs into one OUT: the second would cut the line the first is writing (and lose every
  result the first appends after that) or run the same items twice."""
  path = tmp_path / "results.jsonl"
  first = ResultsFile(str(path))
  first.append(_rec(1))
  with open(path, "a") as f:
    f.write('{"benchmark": "b", "item_')  # the first run is mid-append
  code = ("import sys; from evals.results import ResultsFile\n"
          "try:\n  ResultsFile(sys.argv[1])\nexcept ValueError as e:\n  print(e)\n")
  out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                       check=True).stdout
  assert f"held by pid {os.getpid()}" in out and "another run is writing" in out
  assert path.read_text().endswith('"item_')  # untouched
  # a reader (a process other than 0) neither locks nor repairs
  reader = ResultsFile(str(path), writer=False)
  assert reader.done == {("b", "1", "base")} and path.read_text().endswith('"item_')
  with pytest.raises(ValueError, match="read-only"):
    reader.append(_rec(2))


# ---------------------------------------------------------------- run settings
SETTINGS = {"model": "tiny-random", "preset": "r1", "temperature": 0.0, "seed": 0}


def _settings_file(tmp_path):
  return json.loads((tmp_path / SETTINGS_FILE).read_text())


def test_first_run_records_settings_and_the_same_settings_resume(tmp_path):
  assert check_settings(str(tmp_path), SETTINGS, have_results=False) == ""
  assert _settings_file(tmp_path) == SETTINGS
  assert check_settings(str(tmp_path), dict(SETTINGS), have_results=True) == ""
  assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind


def test_other_settings_over_existing_results_are_refused(tmp_path):
  check_settings(str(tmp_path), SETTINGS, have_results=False)
  error = check_settings(str(tmp_path), {**SETTINGS, "preset": "qwen2_5_vl_instruct",
                                         "temperature": 1.0}, have_results=True)
  assert "preset: 'r1' before, 'qwen2_5_vl_instruct' now" in error
  assert "temperature: 0.0 before, 1.0 now" in error
  assert "seed" not in error and "new --out" in error
  assert _settings_file(tmp_path) == SETTINGS  # left as it was


def test_other_settings_without_results_replace_the_file(tmp_path):
  """A first run that died before its first result left nothing to mix with."""
  check_settings(str(tmp_path), SETTINGS, have_results=False)
  assert check_settings(str(tmp_path), {**SETTINGS, "seed": 3}, have_results=False) == ""
  assert _settings_file(tmp_path)["seed"] == 3


def test_results_without_a_settings_file_warn_and_record(tmp_path, capsys):
  """An OUT written before run_settings.json existed keeps resuming."""
  assert check_settings(str(tmp_path), SETTINGS, have_results=True) == ""
  assert "older version" in capsys.readouterr().err
  assert _settings_file(tmp_path) == SETTINGS


def test_a_setting_the_file_lacks_is_added_not_refused(tmp_path):
  check_settings(str(tmp_path), SETTINGS, have_results=False)
  assert check_settings(str(tmp_path), {**SETTINGS, "judge": "rule"}, have_results=True) == ""
  assert _settings_file(tmp_path) == {**SETTINGS, "judge": "rule"}


def test_unreadable_settings_file_is_an_error_message(tmp_path):
  (tmp_path / SETTINGS_FILE).write_text("{torn")
  assert "cannot read" in check_settings(str(tmp_path), SETTINGS, have_results=True)


@pytest.mark.parametrize("line, message", [
    ("null", "line 2 is not a result record"),
    ('{"benchmark": "b", "item_id": "9"}', "line 2 is not a result record"),
    ('{"benchmark": "b", "item_id": 1, "variant": "base"}', "line 2 repeats result"),
])
def test_bad_records_are_named_by_line_when_the_file_is_opened(tmp_path, line, message):
  path = tmp_path / "results.jsonl"
  path.write_text('{"benchmark": "b", "item_id": "1", "variant": "base"}\n' + line + "\n")
  with pytest.raises(ValueError, match=message):
    ResultsFile(str(path))
