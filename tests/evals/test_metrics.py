"""Metrics: hand-computed values, pairing, bootstrap, summarize == the record-level functions."""

import math

import numpy as np
import pytest

from evals import metrics as M


def rec(item, variant="base", correct=True, consistent=True, probs=None, bench="b", answer="A",
        parsed="same", **extra):
  """A result record; parsed defaults to the key when correct, else to another letter."""
  letters = list("ABCDE"[:len(probs)]) if probs is not None else ["A", "B", "C"]
  if parsed == "same":
    parsed = answer if correct else next(x for x in letters if x != answer)
  judge = None if consistent is None else (parsed if consistent else "Z")
  out = {"benchmark": bench, "item_id": str(item), "variant": variant, "answer": answer,
         "parsed": parsed, "correct": correct and parsed == answer, "unparsed": parsed is None,
         "judge_letter": judge, "consistent": consistent, "letters": letters,
         "letter_probs": probs, "p_correct": None, "entropy": None}
  return {**out, **extra}


def synthetic_records(n_items=40, benchmarks=("b1", "b2"), variants=("base", "wrong_think",
                      "wrong_caption"), seed=0):
  """Random records with every awkward case: unparsed, no conclusion, null probs, tied scores,
  items missing under some variants."""
  rng = np.random.default_rng(seed)
  out = []
  for bench in benchmarks:
    for i in range(n_items):
      k = int(rng.integers(2, 5))
      answer = "ABCD"[int(rng.integers(k))]
      for v in variants:
        if v != "base" and rng.random() < 0.15:
          continue  # item not run under this variant
        weights = rng.integers(1, 4, k)  # few distinct distributions: tied scores across items
        probs = None if rng.random() < 0.1 else (weights / weights.sum()).tolist()
        parsed = None if rng.random() < 0.08 else "same"
        consistent = [True, False, None][int(rng.integers(3))]
        out.append(rec(i, v, bool(rng.random() < 0.6), consistent, probs, bench, answer, parsed))
  return out


# ---------------------------------------------------------------- hand-computed values


def test_letter_entropy():
  # H = -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.5 ln 2 = 1.03972 nats
  assert M.letter_entropy([0.5, 0.25, 0.25]) == pytest.approx(1.0397, abs=1e-4)
  assert M.letter_entropy([0.5, 0.25, 0.25]) == pytest.approx(1.5 * math.log(2))
  assert M.letter_entropy([1.0, 0.0]) == 0.0  # 0 log 0 = 0, no nan
  assert M.record_entropy(rec(0, probs=[0.5, 0.25, 0.25])) == pytest.approx(1.5 * math.log(2))
  assert M.record_entropy(rec(0, probs=[0.5, 0.5], entropy=0.1)) == 0.1  # stored value wins
  assert math.isnan(M.record_entropy(rec(0)))


def test_p_correct_and_confidence_from_letter_probs():
  r = rec(0, probs=[0.2, 0.7, 0.1], answer="C", correct=False)
  assert M.record_p_correct(r) == 0.1 and M.record_confidence(r) == 0.7
  assert M.record_p_correct({**r, "p_correct": 0.3}) == 0.3
  assert math.isnan(M.record_p_correct(rec(0))) and math.isnan(M.record_confidence(rec(0)))


def test_accuracy_counts_unparsed_as_wrong():
  recs = [rec(0), rec(1), rec(2, correct=False), rec(3, parsed=None),
          {**rec(4, parsed=None), "correct": True}]  # a stray correct flag on an unparsed answer
  assert M.accuracy(recs) == pytest.approx(2 / 5)
  assert M.unparsed_rate(recs) == pytest.approx(2 / 5)
  assert math.isnan(M.accuracy([]))


def test_quadrants_by_hand():
  recs = [rec(1, correct=True, consistent=True), rec(2, correct=True, consistent=True),
          rec(3, correct=True, consistent=True),     # 3 correct & consistent
          rec(4, correct=True, consistent=False),
          rec(5, correct=True, consistent=None),     # 2 correct & inconsistent (None = no concl.)
          rec(6, correct=False, consistent=True), rec(7, correct=False, consistent=True),
          rec(8, correct=False, consistent=False),   # 2 incorrect & consistent, then 2 inconsistent
          rec(9, parsed=None, consistent=None)]      # unparsed: incorrect, no verdict
  assert M.quadrants(recs) == pytest.approx({"correct_consistent": 3 / 9,
                                             "correct_inconsistent": 2 / 9,
                                             "incorrect_consistent": 2 / 9,
                                             "incorrect_inconsistent": 2 / 9})
  assert M.consistency_adjusted_accuracy(recs) == pytest.approx(3 / 9)
  assert M.consistency_rate(recs) == pytest.approx(5 / 9)
  assert M.no_conclusion_rate(recs) == pytest.approx(2 / 9)
  assert M.accuracy(recs) == pytest.approx(5 / 9)


def test_no_conclusion_uses_judge_letter_not_the_null_verdict_of_unparsed():
  # The eval nulls `consistent` when nothing was parsed even if the judge found a conclusion.
  r = {**rec(0, parsed=None, consistent=None), "judge_letter": "B"}
  assert M.has_conclusion(r) and not M.is_consistent(r)
  assert not M.has_conclusion({"consistent": None})  # records without judge_letter


def test_auroc_with_ties_by_hand():
  # positives 0.9, 0.8, 0.3; negatives 0.8, 0.3. Pairs (pos, neg):
  # (0.9,0.8)=1 (0.9,0.3)=1 (0.8,0.8)=1/2 (0.8,0.3)=1 (0.3,0.8)=0 (0.3,0.3)=1/2 -> 4/6
  scores, labels = [0.9, 0.8, 0.8, 0.3, 0.3], [1, 1, 0, 0, 1]
  assert M.auroc(scores, labels) == pytest.approx(4 / 6)
  assert M.auroc([0.1, 0.2], [0, 1]) == 1.0 and M.auroc([0.1, 0.2], [1, 0]) == 0.0
  assert math.isnan(M.auroc([0.1, 0.2], [1, 1])) and math.isnan(M.auroc([], []))
  # weights are multiplicities: w = 2 on the first positive == listing it twice
  assert M.auroc(scores, labels, [2, 1, 1, 1, 1]) == pytest.approx(
      M.auroc([0.9, *scores], [1, *labels]))


def test_auroc_matches_scipy_mann_whitney():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(1)
  scores, labels = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.4
  u = stats.mannwhitneyu(scores[labels], scores[~labels]).statistic
  assert M.auroc(scores, labels) == pytest.approx(u / (labels.sum() * (~labels).sum()))


def test_robustness_auroc_pairs_base_scores_with_variant_labels():
  base_p = {1: 0.9, 2: 0.8, 3: 0.8, 4: 0.3, 5: 0.3}
  stays = {1: True, 2: True, 3: False, 4: False, 5: True}
  recs = [rec(i, p_correct=p, entropy=1 - p) for i, p in base_p.items()]
  recs += [rec(i, "wrong_think", correct=c) for i, c in stays.items()]
  recs += [rec(6, p_correct=0.99), rec(7, "wrong_think"),  # unpaired: ignored
           rec(8), rec(8, "wrong_think", correct=False)]    # no base score: ignored
  assert M.robustness_auroc(recs, "wrong_think") == pytest.approx(4 / 6)  # as in the hand example
  assert M.robustness_auroc(recs, "wrong_think", "neg_entropy") == pytest.approx(4 / 6)
  scores, labels = M.robustness_scores(recs, "wrong_think")
  assert scores.tolist() == [0.9, 0.8, 0.8, 0.3, 0.3] and labels.tolist() == [1, 1, 0, 0, 1]


def test_ece_by_hand():
  # bins of width 0.1: bin 9 {0.92, 0.96}: conf 0.94, acc 1, gap 0.06; bin 6 {0.62, 0.68}: conf
  # 0.65, acc 1/2, gap 0.15; bin 3 {0.33}: acc 0, gap 0.33. ECE = (2*.06 + 2*.15 + .33) / 5 = 0.15
  conf, correct = [0.92, 0.96, 0.62, 0.68, 0.33], [1, 1, 0, 1, 0]
  assert M.ece(conf, correct) == pytest.approx(0.15)
  rel = M.reliability_bins(conf, correct)
  assert rel["count"].tolist() == [0, 0, 0, 1, 0, 0, 2, 0, 0, 2]
  assert rel["centre"][9] == pytest.approx(0.95)
  assert rel["confidence"][[3, 6, 9]] == pytest.approx([0.33, 0.65, 0.94])
  assert rel["accuracy"][[3, 6, 9]] == pytest.approx([0.0, 0.5, 1.0])
  assert np.isnan(rel["accuracy"][0])
  assert M.reliability_bins([1.0], [1])["count"][9] == 1  # confidence 1 goes in the last bin
  assert M.ece([0.5, 0.5], [1, 0]) == 0.0 and math.isnan(M.ece([], []))


def test_calibration_error_max_prob_and_p_correct():
  recs = [rec(1, probs=[0.92, 0.08]), rec(2, probs=[0.96, 0.04]),
          rec(3, probs=[0.62, 0.38], answer="B", parsed="A", correct=False),
          rec(4, probs=[0.68, 0.32]),
          rec(5, probs=[0.45, 0.29, 0.26], answer="B", parsed="A", correct=False),
          rec(6)]  # no letter probs: left out
  # max-prob: bin 9 gap .06 (x2), bin 6 {.62 wrong, .68 right} gap .15 (x2), bin 4 {.45} gap .45
  assert M.calibration_error(recs, "max_prob") == pytest.approx((0.12 + 0.30 + 0.45) / 5)
  # P(correct): .92 .96 (bin 9, gap .06 x2), .38 wrong (bin 3, .38), .68 right (bin 6, .32),
  # .29 wrong (bin 2, .29)
  assert M.calibration_error(recs, "p_correct") == pytest.approx((0.12 + 0.38 + 0.32 + 0.29) / 5)


def test_means_skip_missing_probabilities():
  recs = [rec(1, probs=[0.5, 0.25, 0.25]), rec(2, probs=[1.0, 0.0]), rec(3)]
  assert M.mean_entropy(recs) == pytest.approx(0.75 * math.log(2))
  assert M.mean_p_correct(recs) == pytest.approx(0.75)
  assert math.isnan(M.mean_entropy([rec(3)]))


def test_accuracy_drop_is_paired_over_common_items():
  base = [rec(1), rec(2), rec(3, correct=False), rec(4)]                  # acc 3/4
  variant = [rec(i, "wrong_caption", correct=c) for i, c in ((3, False), (4, False), (5, True),
                                                             (6, True))]   # acc 2/4
  # common items {3, 4}: base 1/2, variant 0/2 -> drop 0.5 (unpaired would be 0.25)
  assert M.accuracy_drop(base + variant, "wrong_caption") == pytest.approx(0.5)
  # items are (benchmark, item_id): the same id in another benchmark does not pair
  other = [rec(3, "wrong_caption", bench="other"), rec(4, "wrong_caption", bench="other")]
  assert math.isnan(M.accuracy_drop(base + other, "wrong_caption"))


def test_duplicate_records_are_an_error():
  recs = [rec(1), rec(1)]
  with pytest.raises(ValueError, match="two 'base' records"):
    M.accuracy_drop(recs + [rec(1, "stop_think")], "stop_think")
  with pytest.raises(ValueError, match="two 'base' records"):
    M.summarize(recs, n=5)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_contains_estimate_and_is_deterministic():
  recs = [rec(i, correct=i % 5 < 3) for i in range(50)]  # accuracy 0.6
  low, high = M.bootstrap(M.accuracy, recs, n=300, seed=0)
  assert low < 0.6 < high and 0.35 < low and high < 0.85
  assert M.bootstrap(M.accuracy, recs, n=300, seed=0) == (low, high)
  assert M.bootstrap(M.accuracy, recs, n=300, seed=1) != (low, high)
  assert all(map(math.isnan, M.bootstrap(M.accuracy, [], n=10)))


def test_bootstrap_resamples_items_keeping_variants_paired():
  # variant = base on every item, so every resample of a paired metric is exactly 0
  recs = [rec(i, v, correct=i % 2 == 0) for i in range(30) for v in ("base", "stop_think")]
  assert M.bootstrap(lambda r: M.accuracy_drop(r, "stop_think"), recs, n=50) == (0.0, 0.0)


def test_percentile_interval_drops_undefined_resamples():
  assert M.percentile_interval([np.nan, 1.0, 2.0, 3.0], 0.5) == (1.5, 2.5)


# ---------------------------------------------------------------- summarize


def _record_level(records, bench, variant, metric):
  """The record-level function that a summary row must equal."""
  recs = [r for r in records if r["benchmark"] == bench]
  own = [r for r in recs if r["variant"] == variant]
  if metric.startswith("q_"):
    return M.quadrants(own)[metric[2:]]
  paired = {"accuracy_drop": lambda: M.accuracy_drop(recs, variant),
            "auroc_p_base": lambda: M.robustness_auroc(recs, variant, "p_correct"),
            "auroc_neg_entropy_base": lambda: M.robustness_auroc(recs, variant, "neg_entropy")}
  if metric in paired:
    return paired[metric]()
  single = {"accuracy": M.accuracy, "unparsed_rate": M.unparsed_rate,
            "consistency": M.consistency_rate, "no_conclusion_rate": M.no_conclusion_rate,
            "cons_adj_accuracy": M.consistency_adjusted_accuracy, "mean_entropy": M.mean_entropy,
            "mean_p_correct": M.mean_p_correct,
            "ece_max_prob": lambda r: M.calibration_error(r, "max_prob"),
            "ece_p_correct": lambda r: M.calibration_error(r, "p_correct")}
  return single[metric](own)


def test_summarize_equals_record_level_functions():
  records = synthetic_records()
  rows = M.summarize(records, n=20)
  assert {r["benchmark"] for r in rows} == {"b1", "b2"}
  for row in rows:
    expected = _record_level(records, row["benchmark"], row["variant"], row["metric"])
    assert row["value"] == pytest.approx(expected, nan_ok=True), row
  per_variant = 13 + 3  # 13 metrics for every variant, 3 paired ones for non-base variants
  assert len(rows) == 2 * (13 + 2 * per_variant)
  n = M.summary_lookup(rows)[("b1", "wrong_think", "accuracy_drop")]["n"]
  assert n == len(M.paired([r for r in records if r["benchmark"] == "b1"], "wrong_think"))


@pytest.mark.parametrize("variant, metric", [
    ("base", "accuracy"), ("base", "mean_entropy"), ("base", "ece_max_prob"),
    ("wrong_think", "accuracy_drop"), ("wrong_think", "auroc_p_base"),
    ("wrong_caption", "auroc_neg_entropy_base"), ("wrong_caption", "q_incorrect_consistent")])
def test_summarize_intervals_equal_generic_bootstrap(variant, metric):
  records = synthetic_records(n_items=25)
  b1 = [r for r in records if r["benchmark"] == "b1"]
  row = M.summary_lookup(M.summarize(records, n=60, seed=3))[("b1", variant, metric)]
  expected = M.bootstrap(lambda rs: _record_level(rs, "b1", variant, metric), b1, n=60, seed=3)
  assert (row["ci_low"], row["ci_high"]) == pytest.approx(expected)
  if metric != "ece_max_prob":  # ECE is biased upward under resampling; its interval may not
    assert row["ci_low"] <= row["value"] <= row["ci_high"]  # contain the estimate


def test_summarize_base_only_without_probabilities():
  recs = [rec(i, correct=i % 2 == 0) for i in range(10)]
  rows = M.summary_lookup(M.summarize(recs, n=50))
  assert {m for (_, v, m) in rows} == {m for (_, v, m) in rows if v == "base"}
  assert not any(m.startswith(("accuracy_drop", "auroc")) for (_, _, m) in rows)
  assert rows[("b", "base", "accuracy")]["value"] == 0.5
  entropy = rows[("b", "base", "mean_entropy")]
  assert math.isnan(entropy["value"]) and math.isnan(entropy["ci_low"]) and entropy["n"] == 0
  assert M.summarize([], n=10) == []


def test_summarize_is_deterministic_given_seed():
  records = synthetic_records(n_items=15)
  assert M.summarize(records, n=30, seed=5) == M.summarize(records, n=30, seed=5)


def test_summary_table_orders_variants_and_fills_gaps():
  records = synthetic_records(n_items=10, variants=("wrong_caption", "base", "stop_think"))
  table = M.summary_table(M.summarize(records, n=5), "b1", ["accuracy", "accuracy_drop"])
  assert [v for v, _ in table] == ["base", "stop_think", "wrong_caption"]
  assert table[0][1][1] is None and table[1][1][1]["metric"] == "accuracy_drop"
