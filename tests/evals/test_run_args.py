"""`python -m evals.run` argument checks (no model), and the refusal to resume an OUT whose results
were made with other settings (one tiny run; reruns stop before the model would load)."""

import json
import os

import pytest

from evals import judge as judge_lib, run
from evals.results import SETTINGS_FILE

SMALL = ["--synthetic-n", "2", "--max-new-tokens", "2", "--benchmarks", "synthetic",
         "--variants", "base", "--dtype", "float32"]


def _parse(*argv):
  return run.build_parser().parse_args(list(argv))


@pytest.mark.parametrize("argv, message", [
    (["--limit", "0"], "--limit: must be >= 1, got 0"),
    (["--synthetic-n", "0"], "--synthetic-n: must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["--batch-size", "-3"], "--batch-size: must be >= 1, got -3"),
    (["--batch-size", "2.5"], "--batch-size: expected an integer, got '2.5'"),
    (["--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
    (["--temperature", "-0.5"], "--temperature: must be a finite number >= 0"),
    (["--temperature", "nan"], "--temperature: must be a finite number >= 0"),
    (["--seed", "-1"], "--seed: must be >= 0"),
    (["--num-processes", "0"], "--num-processes: must be >= 1"),
    (["--process-id", "-1"], "--process-id: must be >= 0"),
    (["--dtype", "bogus"], "--dtype: invalid choice: 'bogus'"),
    (["--preset", "bogus"], "unknown preset 'bogus'"),
])
def test_bad_values_stop_at_parsing(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    _parse(*argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_good_values_parse():
  args = _parse("--limit", "1", "--synthetic-n", "1", "--batch-size", "1", "--max-new-tokens",
                "1", "--temperature", "0", "--seed", "0", "--dtype", "float16", "--preset", "R1")
  assert (args.limit, args.batch_size, args.temperature, args.preset) == (1, 1, 0.0, "r1")
  assert args.dtype == "float16" and _parse().dtype == "bfloat16"


def test_help_puts_plots_at_outs_top_level(capsys):
  with pytest.raises(SystemExit):
    _parse("--help")
  text = capsys.readouterr().out
  assert "plots/" not in text and "accuracy_by_variant.png" in text and "top level" in text


def test_settings_hold_what_changes_records_only(monkeypatch):
  monkeypatch.setenv("JUDGE_MODEL", "m")
  base = run.run_settings(_parse("--max-new-tokens", "4"))
  assert base == {"model": "tiny-random", "preset": "qwen2_5_vl_instruct", "temperature": 0.0,
                  "max_new_tokens": 4, "seed": 0, "judge": "rule", "text_generator": None,
                  "dtype": "float32",  # the tiny model is float32 whatever --dtype says
                  "answer_rules": {"parse": judge_lib.PARSE_VERSION,
                                   "judge": judge_lib.RULE_VERSION}}
  same = _parse("--max-new-tokens", "4", "--batch-size", "3", "--mesh", "2x2", "--limit", "5",
                "--benchmarks", "cv_bench", "--variants", "base", "--synthetic-n", "7",
                "--scanned-decode", "--out", "elsewhere", "--data-dir", "d", "--data-cache",
                "none", "--dtype", "float16")
  assert run.run_settings(same) == base
  other = run.run_settings(_parse("--max-new-tokens", "4", "--model", "~/ckpt", "--judge",
                                  "http://host/v1", "--dtype", "float16"))
  assert other["model"] == os.path.expanduser("~/ckpt") and other["dtype"] == "float16"
  assert other["judge"] == "http://host/v1#m"
  assert other["answer_rules"]["judge"] == judge_lib.JUDGE_PROMPT_VERSION


def test_rerun_with_other_settings_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
  out = str(tmp_path / "out")
  assert run.main(SMALL + ["--out", out]) == 0
  with open(os.path.join(out, SETTINGS_FILE)) as f:
    assert json.load(f)["max_new_tokens"] == 2

  class Loaded(Exception):
    pass

  def no_load(args, mesh):
    raise Loaded

  monkeypatch.setattr(run, "_load_model", no_load)
  with pytest.raises(ValueError) as e:
    run.main(SMALL + ["--out", out, "--preset", "r1", "--temperature", "1.0"])
  message = str(e.value)
  assert "preset: 'qwen2_5_vl_instruct' before, 'r1' now" in message
  assert "temperature: 0.0 before, 1.0 now" in message and "new --out" in message
  assert "seed" not in message
  # what only picks items or batching may change: the check passes and the model would load
  with pytest.raises(Loaded):
    run.main(SMALL + ["--out", out, "--batch-size", "1", "--limit", "1", "--synthetic-n", "3"])
  # an OUT from before run_settings.json: warned, resumed, and the settings recorded
  os.remove(os.path.join(out, SETTINGS_FILE))
  with pytest.raises(Loaded):
    run.main(SMALL + ["--out", out, "--temperature", "1.0"])
  assert "older version" in capsys.readouterr().err
  with open(os.path.join(out, SETTINGS_FILE)) as f:
    assert json.load(f)["temperature"] == 1.0


def test_only_the_writer_touches_out(tmp_path):
  """Processes other than 0 neither read nor write OUT's settings (as for results)."""
  out = tmp_path / "out"
  (out / "results.jsonl").parent.mkdir()
  (out / SETTINGS_FILE).write_text("{torn")  # would be an error if this process read it
  args = _parse(*SMALL, "--out", str(out))
  run._check_settings(args, run.ResultsFile(str(out / "results.jsonl")), writer=False)
  assert (out / SETTINGS_FILE).read_text() == "{torn"


@pytest.mark.parametrize("flag,value,message", [
    ("--benchmarks", "synthetic,nope", "unknown benchmark 'nope'"),
    ("--variants", "base,nope", "unknown variant 'nope'")])
def test_unknown_names_fail_before_anything_loads(tmp_path, monkeypatch, flag, value, message):
  monkeypatch.setattr(run, "_load_model", lambda *a: pytest.fail("the model loaded"))
  with pytest.raises(ValueError, match=message):
    run.main(["--out", str(tmp_path / "out"), flag, value])
  assert not os.path.exists(tmp_path / "out")
