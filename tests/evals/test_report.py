"""Report: files written, CSV equal to the metric functions, PNGs real images, degenerate inputs."""

import math

import numpy as np
import pytest
from PIL import Image

from evals import metrics as M, report
from evals.schema import BadItem
from tests.evals.test_metrics import rec, synthetic_records

N_BOOT = 100


def _written(files):
  assert all(f.exists() and f.stat().st_size > 0 for f in files)
  return {f.name: f for f in files}


def _check_png(path):
  with Image.open(path) as img:
    img.load()
    assert img.format == "PNG" and img.width >= 300 and img.height >= 200
    pixels = np.asarray(img.convert("L"), np.float64)
  assert pixels.std() > 5  # something was drawn, not a blank canvas
  assert path.stat().st_size > 5000


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
  records = synthetic_records(n_items=30)
  out = tmp_path_factory.mktemp("report")
  files = report.write_summary(records, out, bad_items=[BadItem("b1", "x", "no image")] * 2,
                               meta={"model": "tiny"}, n_boot=N_BOOT, seed=0)
  return records, _written(files)


def test_all_files_written(full_report):
  _, files = full_report
  assert set(files) == {"summary.csv", "summary.md", *report.PLOTS}
  for name in report.PLOTS:
    _check_png(files[name])


def test_csv_values_equal_metric_functions(full_report):
  records, files = full_report
  rows = report.read_csv(files["summary.csv"])
  _same_with_nan(rows, M.summarize(records, n=N_BOOT, seed=0))
  lookup = M.summary_lookup(rows)
  b2 = [r for r in records if r["benchmark"] == "b2"]
  base = [r for r in b2 if r["variant"] == "base"]
  assert lookup[("b2", "base", "accuracy")]["value"] == M.accuracy(base)
  assert lookup[("b2", "base", "accuracy")]["n"] == len(base)
  assert lookup[("b2", "base", "mean_entropy")]["value"] == pytest.approx(M.mean_entropy(base))
  assert lookup[("b2", "wrong_think", "accuracy_drop")]["value"] == pytest.approx(
      M.accuracy_drop(b2, "wrong_think"))
  assert lookup[("b2", "wrong_caption", "auroc_p_base")]["value"] == pytest.approx(
      M.robustness_auroc(b2, "wrong_caption"))
  row = lookup[("b2", "base", "accuracy")]
  assert (row["ci_low"], row["ci_high"]) == pytest.approx(
      M.bootstrap(lambda rs: M.accuracy([r for r in rs if r["variant"] == "base"]), b2,
                  n=N_BOOT, seed=0))


def _same_with_nan(a, b):
  for x, y in zip(a, b, strict=True):
    for k in report.CSV_COLUMNS:
      same = x[k] == y[k] or (isinstance(y[k], float) and math.isnan(x[k]) and math.isnan(y[k]))
      assert same, (k, x, y)


def test_markdown_tables(full_report):
  records, files = full_report
  text = files["summary.md"].read_text()
  acc = M.accuracy([r for r in records if r["benchmark"] == "b1" and r["variant"] == "base"])
  assert "## b1" in text and "## b2" in text and "- model: tiny" in text
  assert f"| base | 30 | {100 * acc:.1f} [" in text
  assert "Bad items (skipped by the loaders): 2 (b1 2)" in text
  assert all(f"]({name})" in text for name in report.PLOTS)


def test_only_base_variant_without_probabilities(tmp_path):
  recs = [rec(i, correct=i % 3 > 0, consistent=[True, None][i % 2]) for i in range(12)]
  files = _written(report.write_summary(recs, tmp_path, bad_items=4, n_boot=N_BOOT))
  assert set(files) == {"summary.csv", "summary.md", *report.PLOTS}
  for name in report.PLOTS:
    with Image.open(files[name]) as img:
      assert img.width > 100 and img.height > 100
  rows = M.summary_lookup(report.read_csv(files["summary.csv"]))
  assert rows[("b", "base", "accuracy")]["value"] == pytest.approx(8 / 12)
  assert math.isnan(rows[("b", "base", "mean_p_correct")]["value"])
  assert "Bad items (skipped by the loaders): 4" in files["summary.md"].read_text()


def test_empty_records(tmp_path):
  files = _written(report.write_summary([], tmp_path / "new", n_boot=N_BOOT))
  assert set(files) == {"summary.csv", "summary.md"}
  assert "No results" in files["summary.md"].read_text()
  assert files["summary.csv"].read_text().strip() == ",".join(report.CSV_COLUMNS)


def test_format_cell():
  row = {"value": 0.5523, "ci_low": 0.5, "ci_high": 0.6}
  assert report.format_cell(row, 100, 1) == "55.2 [50.0, 60.0]"
  assert report.format_cell({**row, "value": float("nan")}) == "n/a"
  assert report.format_cell(None) == ""


def test_bad_item_counts():
  assert report.bad_item_counts(None) == {}
  assert report.bad_item_counts(3) == {"all benchmarks": 3}
  assert report.bad_item_counts([{"benchmark": "a"}, BadItem("a", "1", "r"),
                                 BadItem("b", "2", "r")]) == {"a": 2, "b": 1}
