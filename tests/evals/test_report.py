"""Report: files written, CSV equal to the metric functions, PNGs real images, degenerate inputs."""

import math

import numpy as np
import pytest
from PIL import Image

from evals import metrics as M, report, summary as S
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
  _same_with_nan(rows, S.summarize(records, n=N_BOOT, seed=0))
  lookup = S.summary_lookup(rows)
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
  rows = S.summary_lookup(report.read_csv(files["summary.csv"]))
  assert rows[("b", "base", "accuracy")]["value"] == pytest.approx(8 / 12)
  assert math.isnan(rows[("b", "base", "mean_p_correct")]["value"])
  assert "Bad items (skipped by the loaders): 4" in files["summary.md"].read_text()


def test_variants_without_base_draw_without_layout_warnings(tmp_path):
  import warnings
  recs = [rec(i, v, probs=[0.6, 0.4], target="B") for i in range(3)
          for v in ("wrong_think_but", "correct_think")]
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a collapsed p_base_hist layout warned here
    files = _written(report.write_summary(recs, tmp_path, n_boot=N_BOOT))
  with Image.open(files["p_base_hist.png"]) as img:
    assert img.width > 100 and img.height > 100


def test_circular_copies_get_their_own_table_and_count(tmp_path):
  recs = [rec(i) for i in range(4)] + [rec(1000000 + i, circular_of=str(i), correct=i % 2 == 0)
                                       for i in range(4)]
  files = _written(report.write_summary(recs, tmp_path, n_boot=N_BOOT))
  text = files["summary.md"].read_text()
  assert "CircularEval" in text and "circular copies (records)" in text
  rows = S.summary_lookup(report.read_csv(files["summary.csv"]))
  assert rows[("b", "base", "circular_accuracy")]["value"] == pytest.approx(0.5)
  assert rows[("b", "base", "accuracy")]["n"] == 4  # the originals
  plain = _written(report.write_summary(recs[:4], tmp_path / "plain", n_boot=N_BOOT))
  assert "CircularEval (the original" not in plain["summary.md"].read_text()


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


# ---------------------------------------------------------------- audit: columns and labels


def _md_row(text, section, title, variant):
  """Cells of `variant`'s row in the table titled `title` of section `## section`."""
  body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
  table = body.split(f"{title}:\n", 1)[1].strip().split("\n\n", 1)[0]
  header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
  for line in table.splitlines()[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    if cells[0] == variant:
      return dict(zip(header, cells))
  raise KeyError(variant)


@pytest.fixture(scope="module")
def audit_report(tmp_path_factory):
  """Every variant, two benchmarks; a third of b1's base records without letter probs."""
  records = synthetic_records(n_items=24, variants=M.VARIANTS, seed=3)
  for i, r in enumerate(records):
    if r["benchmark"] == "b1" and r["variant"] == "base" and i % 3 == 0:
      r["letter_probs"] = None
  out = tmp_path_factory.mktemp("audit")
  files = _written(report.write_summary(records, out, n_boot=N_BOOT))
  return records, S.summary_lookup(report.read_csv(files["summary.csv"])), files


def test_uncertainty_n_counts_records_with_letter_probs(audit_report):
  records, _, files = audit_report
  base = [r for r in records if r["benchmark"] == "b1" and r["variant"] == "base"]
  with_probs = sum(r["letter_probs"] is not None for r in base)
  assert with_probs < len(base)
  text = files["summary.md"].read_text()
  assert _md_row(text, "b1", "Accuracy and CoT consistency", "base")["n"] == str(len(base))
  row = _md_row(text, "b1", "Uncertainty (records with letter probabilities)", "base")
  assert row["n"] == str(with_probs)
  assert row["H / ln K"].startswith(f"{M.mean_entropy_norm(base):.3f} [")


def test_stop_think_cot_columns_are_na(audit_report):
  _, rows, files = audit_report
  text = files["summary.md"].read_text()
  row = _md_row(text, "b1", "Accuracy and CoT consistency", "stop_think")
  for col in ("Cons-adj acc %", "Consistent %", "Consistent if concluded %", "No conclusion %"):
    assert row[col] == "n/a", (col, row)
  assert row["Acc %"] != "n/a"
  wrong = _md_row(text, "b1", "Accuracy and CoT consistency", "wrong_think")
  assert wrong["Consistent if concluded %"].startswith(
      f"{100 * rows[('b1', 'wrong_think', 'consistency_judged')]['value']:.1f} [")
  table, left_out = report.quadrant_table(list(rows.values()), "b1")
  assert left_out == ["stop_think"] and "stop_think" not in [v for v, _ in table]
  assert "base" in [v for v, _ in table]


def test_macro_section_and_base_correct_auroc(audit_report):
  _, rows, files = audit_report
  text = files["summary.md"].read_text()
  assert text.index("## b2") < text.index(f"## {S.MACRO}") < text.index("## Plots")
  macro = _md_row(text, S.MACRO, "Accuracy and CoT consistency", "base")
  mean = np.mean([rows[(b, "base", "accuracy")]["value"] for b in ("b1", "b2")])
  assert macro["Acc %"].startswith(f"{100 * mean:.1f} [")
  assert macro["n"] == str(sum(rows[(b, "base", "accuracy")]["n"] for b in ("b1", "b2")))
  title = "Robustness prediction from the base prompt"
  row = _md_row(text, "b1", title, "wrong_think")
  bc = rows[("b1", "wrong_think", "auroc_p_base_base_correct")]
  assert row["n base-correct"] == str(bc["n"]) and bc["n"] < int(row["n"])
  assert row["AUROC P_base (base-correct)"].startswith(f"{bc['value']:.3f} [")
  with pytest.raises(KeyError):  # base has no AUROC against itself: no row
    _md_row(text, "b1", title, "base")


def test_follows_target_and_abstain_columns(audit_report):
  records, rows, files = audit_report
  text = files["summary.md"].read_text()
  title = "Answers that follow the perturbation"
  wrong = [r for r in records if r["benchmark"] == "b2" and r["variant"] == "wrong_caption"]
  row = _md_row(text, "b2", title, "wrong_caption")
  assert row["Follows target %"].startswith(f"{100 * M.follows_target_rate(wrong):.1f} [")
  assert row["Abstain %"] == "" and row["n target"] == str(len(wrong))
  abstain = [r for r in records if r["benchmark"] == "b2" and r["variant"] == "abstain"]
  assert M.abstain_rate(abstain) > 0
  row = _md_row(text, "b2", title, "abstain")
  assert row["Abstain %"].startswith(f"{100 * M.abstain_rate(abstain):.1f} [")
  assert rows[("b2", "abstain", "abstain_rate")]["n"] == len(abstain)


def test_p_base_hist_says_pooled(audit_report):
  records, _, files = audit_report
  title = report.p_base_hist_title(records, "wrong_think")
  assert "pooled AUROC" in title and "base-correct" in title
  scores, labels = M.robustness_scores(records, "wrong_think")
  assert f"{M.auroc(scores, labels):.3f} (n={len(scores)})" in title
  assert "pooled" in report.P_BASE_HIST_TITLE
  _check_png(files["p_base_hist.png"])
