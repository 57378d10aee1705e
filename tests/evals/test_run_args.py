"""`python -m evals.run` argument checks (no model), and the refusal to resume an OUT whose results
were made with other settings (one tiny run; reruns stop before the model would load)."""

import json
import os

import pytest

from evals import answers, engine, judge as judge_lib, resume, run
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
    (["--repetition-penalty", "0"], "--repetition-penalty: must be a number > 0"),
    (["--repetition-penalty", "inf"], "--repetition-penalty: must be a number > 0"),
    (["--num-processes", "0"], "--num-processes: must be >= 1"),
    (["--process-id", "-1"], "--process-id: must be >= 0"),
    (["--dtype", "bogus"], "--dtype: invalid choice: 'bogus'"),
    (["--preset", "bogus"], "unknown preset 'bogus'"),
    (["--out", "gs://bucket/run"], "--out: 'gs://bucket/run' is a URL: give a local folder"),
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
  base = resume.run_settings(_parse("--max-new-tokens", "4"))
  assert base == {"model": "tiny-random", "preset": "qwen2_5_vl_instruct", "temperature": 0.0,
                  "max_new_tokens": 4, "seed": 0, "judge": "rule", "text_generator": None,
                  "repetition_penalty": 1.0, "judge_max_tokens": None,
                  "dtype": "float32",  # the tiny model is float32 whatever --dtype says
                  "answer_rules": {"parse": answers.PARSE_VERSION,
                                   "judge": judge_lib.RULE_VERSION,
                                   "letters": engine.LETTER_VERSION}}
  same = _parse("--max-new-tokens", "4", "--batch-size", "3", "--mesh", "2x2", "--limit", "5",
                "--benchmarks", "cv_bench", "--variants", "base", "--synthetic-n", "7",
                "--scanned-decode", "--out", "elsewhere", "--data-dir", "d", "--data-cache",
                "none", "--dtype", "float16", "--circular")
  assert resume.run_settings(same) == base
  other = resume.run_settings(_parse("--max-new-tokens", "4", "--model", "~/ckpt", "--judge",
                                     "http://host/v1", "--dtype", "float16"))
  assert other["model"] == os.path.expanduser("~/ckpt") and other["dtype"] == "float16"
  assert other["judge"] == "http://host/v1#m" and other["judge_max_tokens"] == 16
  longer = resume.run_settings(_parse("--judge", "http://host/v1", "--judge-max-tokens", "512"))
  assert longer["judge_max_tokens"] == 512  # replies may differ: a resume must not mix them
  assert other["answer_rules"]["judge"] == judge_lib.JUDGE_PROMPT_VERSION


def test_rerun_with_other_settings_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
  from evals.engine import Engine
  out = str(tmp_path / "out")
  # first a judge outage: a result the judge could not judge (server down after its retries)
  # is left out and the run exits 1; a reply naming no option is a verdict, kept
  real = Engine.run_batch

  def outage(self, jobs):
    records = real(self, jobs)
    records[0] = dict(records[0], judge_letter=None, judge_error="gave up after 4 attempts")
    records[1] = dict(records[1], judge_letter=None, judge_error=judge_lib.UNPARSEABLE)
    return records

  monkeypatch.setattr(Engine, "run_batch", outage)
  assert run.main(SMALL + ["--out", out]) == 1
  assert "1 results not written" in capsys.readouterr().err
  with open(os.path.join(out, "results.jsonl")) as f:
    assert [json.loads(line)["judge_error"] for line in f] == [judge_lib.UNPARSEABLE]
  monkeypatch.setattr(Engine, "run_batch", real)
  assert run.main(SMALL + ["--out", out]) == 0  # the rerun judges it
  with open(os.path.join(out, "results.jsonl")) as f:
    assert len(f.readlines()) == 2
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
  # what only picks items or batching may change: the check passes, and the model loads when
  # something is left to run (a third item), not when nothing is
  assert run.main(SMALL + ["--out", out, "--batch-size", "1", "--limit", "2"]) == 0
  with pytest.raises(Loaded):
    run.main(SMALL + ["--out", out, "--batch-size", "1", "--synthetic-n", "3"])
  # run_settings.json deleted: the records' settings fingerprints still refuse other settings
  os.remove(os.path.join(out, SETTINGS_FILE))
  with pytest.raises(ValueError, match="made with other settings than this run's .*is gone"):
    run.main(SMALL + ["--out", out, "--temperature", "1.0", "--synthetic-n", "3"])
  assert not os.path.exists(os.path.join(out, SETTINGS_FILE))
  # an OUT from before run_settings.json and fingerprints: warned, resumed, settings recorded
  path = os.path.join(out, "results.jsonl")
  with open(path) as f:
    records = [json.loads(line) for line in f]
  assert {r.pop("settings") for r in records} == {
      resume.settings_fingerprint(resume.run_settings(_parse(*SMALL, "--out", out)))}
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  with pytest.raises(Loaded):
    run.main(SMALL + ["--out", out, "--temperature", "1.0", "--synthetic-n", "3"])
  assert "older version" in capsys.readouterr().err
  with open(os.path.join(out, SETTINGS_FILE)) as f:
    assert json.load(f)["temperature"] == 1.0
  # ... unless its records were parsed by other answer rules (records before parse_version:
  # parse-v1), which would mix with this run's
  os.remove(os.path.join(out, SETTINGS_FILE))
  # ... or whose letter distributions were read by other rules (records before letter_version)
  for field, old_version in (("parse_version", "parse-v1"), ("letter_version", "letters-v1")):
    with open(path, "w") as f:
      for r in records:
        r.pop(field)
        f.write(json.dumps(r) + "\n")
    with pytest.raises(ValueError, match=f"answer_rules: .*{old_version}.* before"):
      run.main(SMALL + ["--out", out])


def test_only_the_writer_touches_out(tmp_path):
  """Processes other than 0 neither read nor write OUT's settings (as for results)."""
  out = tmp_path / "out"
  (out / "results.jsonl").parent.mkdir()
  (out / SETTINGS_FILE).write_text("{torn")  # would be an error if this process read it
  args = _parse(*SMALL, "--out", str(out))
  resume.check_run_settings(args, run.ResultsFile(str(out / "results.jsonl")), writer=False)
  assert (out / SETTINGS_FILE).read_text() == "{torn"


@pytest.mark.parametrize("flag,value,message", [
    ("--benchmarks", "synthetic,nope", "unknown benchmark 'nope'"),
    ("--variants", "base,nope", "unknown variant 'nope'")])
def test_unknown_names_fail_before_anything_loads(tmp_path, monkeypatch, flag, value, message):
  monkeypatch.setattr(run, "_load_model", lambda *a: pytest.fail("the model loaded"))
  with pytest.raises(ValueError, match=message):
    run.main(["--out", str(tmp_path / "out"), flag, value])
  assert not os.path.exists(tmp_path / "out")


def test_a_model_path_without_a_checkpoint_fails_before_out_is_made(tmp_path):
  (tmp_path / "quantized").mkdir()
  (tmp_path / "quantized" / "config.json").write_text(
      json.dumps({"model_type": "qwen2_5_vl", "quantization_config": {"quant_method": "awq"}}))
  for flag, path, message in (("--model", tmp_path / "none", "--model: checkpoint path .* does "
                                                             "not exist"),
                              ("--model", tmp_path, "--model: no config.json at"),
                              ("--text-generator", tmp_path / "quantized",
                               "--text-generator: .*quant_method='awq'")):
    with pytest.raises((FileNotFoundError, ValueError), match=message):
      run.main([flag, str(path), "--out", str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out")


def test_bad_items_of_benchmarks_a_rerun_did_not_load_are_kept(tmp_path):
  from evals.schema import BadItem
  out = str(tmp_path)
  run._write_bad(out, [BadItem("cv_bench", "1", "x"), BadItem("mmbench", "2", "y")],
                 ["cv_bench", "mmbench"])
  rows = run._write_bad(out, [BadItem("mmbench", "3", "z")], ["mmbench"])
  assert [(r["benchmark"], r["id"]) for r in rows] == [("cv_bench", "1"), ("mmbench", "3")]
  with open(os.path.join(out, "bad_items.jsonl")) as f:
    assert [json.loads(line) for line in f] == rows


def test_names_given_twice_count_once_and_bad_judges_fail_first(monkeypatch):
  monkeypatch.delenv("JUDGE_MODEL", raising=False)
  args = _parse("--benchmarks", "synthetic,synthetic", "--variants", "base,abstain,base")
  run._check_names(args)
  assert (args.benchmarks, args.variants) == ("synthetic", "base,abstain")
  for judge, message in (("http://:8000/v1#m", "has no host"),
                         ("http://host:abc/v1#m", "port is not a number"),
                         ("/no/such/dir", "unknown judge spec"),
                         ("http://host:8000/v1", "needs a model name")):
    with pytest.raises(ValueError, match=message):
      run._check_names(_parse("--judge", judge))


def test_a_mesh_that_does_not_fit_stops_before_out_is_made(tmp_path):
  from vlm_jax.sharding import MeshError
  with pytest.raises(MeshError, match="needs 16 devices"):
    run.main(SMALL + ["--mesh", "4x4", "--out", str(tmp_path / "out")])
  assert not os.path.exists(tmp_path / "out")
  # nor one that cannot split the model (the tiny model's heads on 8 tensor shards)
  with pytest.raises(MeshError, match="cannot split these parameters"):
    run.main(SMALL + ["--mesh", "1x8", "--out", str(tmp_path / "out")])
  assert not os.path.exists(tmp_path / "out")


def test_a_judge_server_that_gives_no_reply_stops_before_the_model_loads(tmp_path, monkeypatch):
  """A wrong URL, key or model name (or a server not up yet) would otherwise drop every result
  of a run that has already generated them."""
  import socket
  from evals import judge_http
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  monkeypatch.setattr(judge_http.time, "sleep", lambda seconds: None)
  monkeypatch.setattr(run, "_load_model", lambda *a: pytest.fail("the model loaded"))
  with pytest.raises(ValueError, match=r"gave no usable reply: gave up after 4 attempts.*"
                                       r"Connection refused.*nothing was run"):
    run.main(SMALL + ["--out", str(tmp_path / "out"), "--judge",
                      f"http://127.0.0.1:{port}/v1#Qwen3-32B"])
  assert not os.path.exists(tmp_path / "out" / "results.jsonl")


def test_a_record_from_another_run_is_refused_before_the_model_loads(tmp_path, monkeypatch):
  from evals.results import ResultsFile, check_settings
  out = tmp_path / "out"
  args = _parse(*SMALL, "--out", str(out))
  args.max_new_tokens = 2
  check_settings(str(out), resume.run_settings(args), have_results=False)
  results = ResultsFile(str(out / "results.jsonl"))
  results.append({"benchmark": "synthetic", "item_id": "0", "variant": "base",
                  "preset": "qwen2_5_vl_instruct", "seed": 0})
  results.append({"benchmark": "synthetic", "item_id": "1", "variant": "base", "preset": "r1",
                  "seed": 0})  # pasted in from a run of another model's preset
  del results
  monkeypatch.setattr(run, "_load_model", lambda *a: pytest.fail("the model loaded"))
  with pytest.raises(ValueError, match="synthetic/1/base was made with preset 'r1', this "
                                       "run's is 'qwen2_5_vl_instruct'"):
    run.main(SMALL + ["--out", str(out)])
  # without a settings file the records are checked before one is written from this run's
  os.remove(out / SETTINGS_FILE)
  with pytest.raises(ValueError, match="synthetic/0/base was made with preset 'qwen2_5_vl_"):
    run.main(SMALL + ["--out", str(out), "--preset", "r1"])
  assert not os.path.exists(out / SETTINGS_FILE)


def test_judge_max_tokens_reaches_the_http_judge(tmp_path, monkeypatch):
  """--judge-max-tokens: what the judge asks for (a reasoning judge such as GPT-OSS spends its
  reasoning inside max_tokens) and part of the reply cache key."""
  from evals import judge_http
  monkeypatch.setattr(judge_http.HTTPJudge, "check", lambda self: "")
  args = _parse("--judge", "http://host/v1#gpt-oss-120b", "--judge-max-tokens", "600",
                "--out", str(tmp_path))
  judge = run._http_judge(args, writer=True)
  assert judge.max_tokens == 600 and judge.payload([])["max_tokens"] == 600
