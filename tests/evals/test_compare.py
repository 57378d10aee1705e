"""evals/compare.py: a run's summary remade from its records alone, and runs side by side."""

import csv
import json
import os

import pytest

from evals import compare, summary as S
from tests.evals.test_metrics import synthetic_records


def _write(folder, records, settings=None):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "results.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  if settings is not None:
    with open(os.path.join(folder, "run_settings.json"), "w") as f:
      json.dump(settings, f)
  return str(folder)


RULES = {"parse": "parse-v4", "judge": "rule-v2", "letters": "letters-v3"}


def test_one_run_is_resummarised_in_place(tmp_path):
  run = _write(tmp_path / "base", synthetic_records(n_items=12, seed=1),
               {"model": "m", "preset": "p", "answer_rules": RULES})
  (tmp_path / "base" / "bad_items.jsonl").write_text('{"benchmark": "b1"}\n{"benchmark": "b2"}\n')
  assert compare.main([run, "--n-boot", "20"]) == 0
  md = (tmp_path / "base" / "summary.md").read_text()
  assert "- model: m" in md and "Bad items (skipped by the loaders): 2 (b1 1, b2 1)" in md
  with open(tmp_path / "base" / "summary.csv") as f:
    rows = list(csv.DictReader(f))
  want = S.summarize(synthetic_records(n_items=12, seed=1), n=20)
  assert len(rows) == len(want)
  assert float(rows[0]["value"]) == pytest.approx(want[0]["value"])


def test_runs_side_by_side(tmp_path):
  a = _write(tmp_path / "a", synthetic_records(n_items=12, seed=1), {"answer_rules": RULES})
  b = _write(tmp_path / "b", synthetic_records(n_items=12, seed=2), {"answer_rules": RULES})
  step = tmp_path / "step_250.jsonl"  # an rl.train evaluation: a bare record file
  step.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records(n_items=12, seed=3)))
  out = tmp_path / "cmp"
  assert compare.main([a, b, str(step), "--out", str(out), "--n-boot", "20"]) == 0
  with open(out / "compare.csv") as f:
    rows = list(csv.DictReader(f))
  assert {r["label"] for r in rows} == {"a", "b", "step_250"}
  got = {(r["label"], r["benchmark"], r["variant"], r["metric"]): float(r["value"]) for r in rows}
  for label, seed in (("a", 1), ("b", 2), ("step_250", 3)):
    for row in S.summarize(synthetic_records(n_items=12, seed=seed), n=20):
      key = (label, row["benchmark"], row["variant"], row["metric"])
      assert got[key] == pytest.approx(row["value"], nan_ok=True), key
  md = (out / "compare.md").read_text()
  assert "## Accuracy %" in md and "| benchmark | variant | a | b | step_250 |" in md
  assert "different rules" not in md
  if compare.report.have_matplotlib():
    assert (out / "compare_accuracy.png").stat().st_size > 0
  # runs whose answers were read by other rules are named: their numbers do not pool
  _write(tmp_path / "b", [dict(r, parse_version="parse-v3")
                          for r in synthetic_records(n_items=12, seed=2)])
  assert compare.main([a, b, "--out", str(out), "--n-boot", "20"]) == 0
  assert "different rules" in (out / "compare.md").read_text()


def test_bad_arguments_say_what_is_wrong(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  assert compare.main([str(tmp_path / "empty")]) == 2
  assert "no results.jsonl in it" in capsys.readouterr().err
  assert compare.main([str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o")]) == 2
  assert "no such file" in capsys.readouterr().err
  a = _write(tmp_path / "a", synthetic_records(n_items=4))
  assert compare.main([a, a, "--out", str(tmp_path / "o")]) == 2
  assert "distinct labels" in capsys.readouterr().err
  assert compare.main([a, a]) == 2
  assert "pass --out" in capsys.readouterr().err
  assert compare.main([a, a, "--labels", "x,y", "--out", str(tmp_path / "o")]) == 0
