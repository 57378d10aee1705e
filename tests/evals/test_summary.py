"""`evals.summary`: the per-benchmark panel equals the record-level metrics, intervals equal the
generic bootstrap's, the macro row."""

import functools
import math

import numpy as np
import pytest

from evals import metrics as M, summary as S
from tests.evals.test_metrics import rec, synthetic_records


# ---------------------------------------------------------------- summarize


def _record_level(records, bench, variant, metric):
  """The record-level function that a summary row must equal."""
  recs = [r for r in records if r["benchmark"] == bench]
  own = [r for r in recs if r["variant"] == variant]
  if metric.startswith("q_"):
    return M.quadrants(own)[metric[2:]]
  paired = {"accuracy_drop": lambda: M.accuracy_drop(recs, variant)}
  for score, name in M.AUROC_METRICS.items():
    paired[name] = functools.partial(M.robustness_auroc, recs, variant, score)
    paired[name + "_base_correct"] = functools.partial(M.robustness_auroc, recs, variant, score,
                                                       among_base_correct=True)
  if metric in paired:
    return paired[metric]()
  single = {"accuracy": M.accuracy, "unparsed_rate": M.unparsed_rate,
            "consistency": M.consistency_rate, "consistency_judged": M.judged_consistency_rate,
            "no_conclusion_rate": M.no_conclusion_rate, "judge_error_rate": M.judge_error_rate,
            "cons_adj_accuracy": M.consistency_adjusted_accuracy, "mean_entropy": M.mean_entropy,
            "mean_entropy_norm": M.mean_entropy_norm, "mean_p_correct": M.mean_p_correct,
            "mean_letter_mass": M.mean_letter_mass,
            "abstain_rate": M.abstain_rate, "follows_target": M.follows_target_rate,
            "ece_max_prob": lambda r: M.calibration_error(r, "max_prob"),
            "ece_p_correct": lambda r: M.calibration_error(r, "p_correct")}
  return single[metric](own)


def test_summarize_equals_record_level_functions():
  records = synthetic_records()
  rows = [r for r in S.summarize(records, n=20) if r["benchmark"] != S.MACRO]
  assert {r["benchmark"] for r in rows} == {"b1", "b2"}
  for row in rows:
    expected = _record_level(records, row["benchmark"], row["variant"], row["metric"])
    assert row["value"] == pytest.approx(expected, nan_ok=True), row
  # 17 metrics for every variant; non-base ones add follows_target and 5 paired ones
  assert len(rows) == 2 * (17 + 2 * (17 + 1 + 5))
  n = S.summary_lookup(rows)[("b1", "wrong_think", "accuracy_drop")]["n"]
  assert n == len(M.paired([r for r in records if r["benchmark"] == "b1"], "wrong_think"))


def test_summarize_equals_record_level_functions_for_every_variant():
  # stop_think (CoT metrics undefined), abstain (abstain_rate), correct_* (target = key)
  records = synthetic_records(n_items=25, variants=M.VARIANTS, seed=4)
  rows = [r for r in S.summarize(records, n=5) if r["benchmark"] != S.MACRO]
  assert {r["variant"] for r in rows} == set(M.VARIANTS)
  for row in rows:
    expected = _record_level(records, row["benchmark"], row["variant"], row["metric"])
    assert row["value"] == pytest.approx(expected, nan_ok=True), row
  lookup = S.summary_lookup(rows)
  assert ("b1", "abstain", "abstain_rate") in lookup
  assert not any(m == "abstain_rate" for (_, v, m) in lookup if v != "abstain")
  assert {v for (_, v, m) in lookup if m == "follows_target"} == {
      v for v in M.VARIANTS if v.startswith(("wrong", "correct"))}


@pytest.mark.parametrize("variant, metric", [
    ("base", "accuracy"), ("base", "mean_entropy"), ("base", "ece_max_prob"),
    ("wrong_think", "accuracy_drop"), ("wrong_think", "auroc_p_base"),
    ("wrong_caption", "auroc_neg_entropy_base"), ("wrong_caption", "q_incorrect_consistent")])
def test_summarize_intervals_equal_generic_bootstrap(variant, metric):
  records = synthetic_records(n_items=25)
  b1 = [r for r in records if r["benchmark"] == "b1"]
  row = S.summary_lookup(S.summarize(records, n=60, seed=3))[("b1", variant, metric)]
  expected = M.bootstrap(lambda rs: _record_level(rs, "b1", variant, metric), b1, n=60, seed=3)
  assert (row["ci_low"], row["ci_high"]) == pytest.approx(expected)
  if metric != "ece_max_prob":  # ECE is biased upward under resampling; its interval may not
    assert row["ci_low"] <= row["value"] <= row["ci_high"]  # contain the estimate


def test_summarize_base_only_without_probabilities():
  recs = [rec(i, correct=i % 2 == 0) for i in range(10)]
  rows = S.summary_lookup(S.summarize(recs, n=50))
  assert {m for (_, v, m) in rows} == {m for (_, v, m) in rows if v == "base"}
  assert not any(m.startswith(("accuracy_drop", "auroc")) for (_, _, m) in rows)
  assert {b for (b, _, _) in rows} == {"b"}  # one benchmark: no macro row
  assert rows[("b", "base", "accuracy")]["value"] == 0.5
  entropy = rows[("b", "base", "mean_entropy")]
  assert math.isnan(entropy["value"]) and math.isnan(entropy["ci_low"]) and entropy["n"] == 0
  assert S.summarize([], n=10) == []


def _replicates(fn, records, n, seed):
  """fn on each of `bootstrap`'s resamples of records (same draws as summarize)."""
  groups = M._item_groups(records)
  return np.array([fn(M._resample(groups, idx)) for idx in M.draws(len(groups), n, seed)])


@pytest.mark.parametrize("variant, metric", [("base", "accuracy"),
                                             ("wrong_think", "accuracy_drop"),
                                             ("wrong_caption", "auroc_p_base")])
def test_macro_row_averages_benchmarks_and_their_replicates(variant, metric):
  records = synthetic_records(n_items=20, benchmarks=("b1", "b2", "b3"))
  rows = S.summary_lookup(S.summarize(records, n=40, seed=2))
  parts = [[r for r in records if r["benchmark"] == b] for b in ("b1", "b2", "b3")]
  macro = rows[(S.MACRO, variant, metric)]
  assert macro["value"] == pytest.approx(np.mean([rows[(b, variant, metric)]["value"]
                                                  for b in ("b1", "b2", "b3")]))
  assert macro["n"] == sum(rows[(b, variant, metric)]["n"] for b in ("b1", "b2", "b3"))
  fn = lambda b: lambda rs: _record_level(rs, b, variant, metric)  # noqa: E731
  reps = np.mean([_replicates(fn(p[0]["benchmark"]), p, 40, 2) for p in parts], axis=0)
  assert (macro["ci_low"], macro["ci_high"]) == pytest.approx(M.percentile_interval(reps))
  assert S.summary_benchmarks(rows.values()) == ["b1", "b2", "b3", S.MACRO]


def test_macro_row_skips_benchmarks_without_a_value():
  # b2 never ran wrong_think and has no letter probabilities: the macro is b1's value alone
  records = synthetic_records(n_items=15, benchmarks=("b1",))
  records += [rec(i, bench="b2", correct=i % 3 == 0) for i in range(9)]
  rows = S.summary_lookup(S.summarize(records, n=20))
  for key in (("wrong_think", "accuracy"), ("base", "mean_entropy")):
    assert rows[(S.MACRO, *key)]["value"] == rows[("b1", *key)]["value"]
    assert rows[(S.MACRO, *key)]["n"] == rows[("b1", *key)]["n"]
  assert rows[(S.MACRO, "base", "accuracy")]["value"] == pytest.approx(
      (rows[("b1", "base", "accuracy")]["value"] + 1 / 3) / 2)


def test_summarize_is_deterministic_given_seed():
  records = synthetic_records(n_items=15)
  # repr: rows may hold nan (e.g. a base-correct AUROC with one class empty), and nan != nan
  assert repr(S.summarize(records, n=30, seed=5)) == repr(S.summarize(records, n=30, seed=5))


def test_summary_table_orders_variants_and_fills_gaps():
  records = synthetic_records(n_items=10, variants=("wrong_caption", "base", "stop_think"))
  table = S.summary_table(S.summarize(records, n=5), "b1", ["accuracy", "accuracy_drop"])
  assert [v for v, _ in table] == ["base", "stop_think", "wrong_caption"]
  assert table[0][1][1] is None and table[1][1][1]["metric"] == "accuracy_drop"


def test_circular_accuracy_needs_every_rotation_and_leaves_copies_out_of_the_rest():
  """Question 1 (3 options): original and both copies correct; question 2 (2 options): its one
  copy wrong; question 3: no copy; question 4 (3 options): one of its two copies (cut short by
  --limit): both left out of the circular score. The copies enter no other metric."""
  three, two = {"options": ["x", "y", "z"]}, {"options": ["x", "y"]}
  recs = [rec(1, **three), rec(1000001, circular_of="1"), rec(2000001, circular_of="1"),
          rec(2, **two), rec(1000002, circular_of="2", correct=False), rec(3, **three),
          rec(4, **three), rec(1000004, circular_of="4"),
          rec(1, "wrong_caption", correct=False, **three),
          rec(1000001, "wrong_caption", circular_of="1"),
          rec(2000001, "wrong_caption", circular_of="1"),
          rec(2, "wrong_caption", **two), rec(1000002, "wrong_caption", circular_of="2"),
          rec(3, "wrong_caption", **three), rec(4, "wrong_caption", **three),
          rec(9, bench="other")]
  rows = S.summarize(recs, n=200, seed=0)
  look = S.summary_lookup(rows)
  row = look[("b", "base", "circular_accuracy")]
  assert (row["value"], row["n"]) == (0.5, 2) and row["ci_low"] <= 0.5 <= row["ci_high"]
  row = look[("b", "wrong_caption", "circular_accuracy")]
  assert (row["value"], row["n"]) == (0.5, 2)
  # the other metrics: over the three originals only, as a run without --circular gives
  originals = [r for r in recs if "circular_of" not in r]
  assert look[("b", "base", "accuracy")]["n"] == 4
  assert look[("b", "wrong_caption", "accuracy")]["value"] == pytest.approx(3 / 4)
  assert not any(m == "circular_accuracy" for b, _, m in look if b == "other")
  without = S.summary_lookup(S.summarize(originals, n=200, seed=0))
  same = lambda a, b: a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
  assert set(without) == {k for k in look if k[2] != "circular_accuracy"}
  for key, row in without.items():
    assert all(same(row[c], look[key][c]) for c in row), key


def test_resamples_in_blocks_give_the_same_intervals(monkeypatch):
  """The resamples run as [draws, items] weight blocks; the block size changes nothing."""
  records = synthetic_records(n_items=30)
  whole = S.summarize(records, n=50, seed=1)
  monkeypatch.setattr(S, "_CHUNK", 7 * 30)  # 7 draws a block: the last block is short
  assert [len(w) for w in S.resample_weights(30, 50, 1)] == [7] * 7 + [1]
  blocked = S.summarize(records, n=50, seed=1)
  for a, b in zip(whole, blocked):
    assert a == pytest.approx(b, nan_ok=True, abs=1e-12)
