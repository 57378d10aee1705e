"""Metrics record by record: hand-computed values, pairing, the generic bootstrap."""

import math

import numpy as np
import pytest

from evals import metrics as M, stats, summary as S


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
  """Random records with every awkward case: unparsed, no conclusion, judge failures, null
  probs, tied scores,
  items missing under some variants. wrong_* / correct_* records carry a `target` (a wrong
  letter / the key); abstain records have one more letter, the abstain option, often chosen."""
  rng = np.random.default_rng(seed)
  judge_rng = np.random.default_rng(seed + 1)  # its own stream: the other fields stay as they were
  out = []
  for bench in benchmarks:
    for i in range(n_items):
      k = int(rng.integers(2, 5))
      answer = "ABCD"[int(rng.integers(k))]
      for v in variants:
        if v != "base" and rng.random() < 0.15:
          continue  # item not run under this variant
        k_v = k + (v == "abstain")
        weights = rng.integers(1, 4, k_v)  # few distinct distributions: tied scores across items
        probs = None if rng.random() < 0.1 else (weights / weights.sum()).tolist()
        parsed = None if rng.random() < 0.08 else "same"
        if v == "abstain" and parsed and rng.random() < 0.3:
          parsed = "ABCDE"[k]
        consistent = [True, False, None][int(rng.integers(3))]
        target = (answer if v.startswith("correct") else "B" if answer == "A" else "A"
                  ) if v.startswith(("wrong", "correct")) else None
        out.append(rec(i, v, bool(rng.random() < 0.6), consistent, probs, bench, answer, parsed,
                       letters=list("ABCDE"[:k_v]), target=target))
        if probs is not None and rng.random() < 0.8:  # older records have no letter_mass
          out[-1]["letter_mass"] = float(rng.random())
        if consistent is None and judge_rng.random() < 0.3:  # the judge gave no verdict
          out[-1]["judge_error"] = ["unparseable judge reply", "HTTP 400: too long"][
              int(judge_rng.integers(2))]
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


def test_judged_consistency_rate_counts_only_records_with_a_conclusion():
  recs = [rec(1), rec(2), rec(3, consistent=False), rec(4, consistent=None),
          rec(5, consistent=None), rec(6, parsed=None, consistent=None)]
  # judged: 1, 2, 3 (4, 5, 6 have no judge letter) -> 2 consistent of 3; over all records 2 of 6
  assert M.judged_consistency_rate(recs) == pytest.approx(2 / 3)
  assert M.consistency_rate(recs) == pytest.approx(2 / 6)
  # a conclusion with an unparsed answer is a conclusion the answer does not match
  unparsed = {**rec(7, parsed=None, consistent=None), "judge_letter": "B"}
  assert M.judged_consistency_rate(recs + [unparsed]) == pytest.approx(2 / 4)
  assert math.isnan(M.judged_consistency_rate([rec(8, consistent=None)]))


def test_stop_think_has_no_cot_metrics():
  # stop_think prefills a closed think that names no option: the judge never finds a
  # conclusion, so consistency would be 0 by construction; it is undefined instead.
  stop = [rec(i, "stop_think", consistent=None) for i in range(6)]  # no `prefill` field
  assert not any(map(M.writes_own_reasoning, stop))
  for fn in (M.consistency_rate, M.judged_consistency_rate, M.no_conclusion_rate,
             M.consistency_adjusted_accuracy):
    assert math.isnan(fn(stop)), fn
  assert all(map(math.isnan, M.quadrants(stop).values()))
  assert M.accuracy(stop) == 1.0
  # the rule is the prefill closing the think, not the variant's name
  closed = rec(9, "my_variant", prefill="<think>Done.</think>", consistent=False)
  open_think = rec(10, "wrong_think", prefill="<think>So the answer is B.", consistent=False)
  assert not M.writes_own_reasoning(closed) and M.writes_own_reasoning(open_think)
  assert M.writes_own_reasoning(rec(11, "wrong_think")) and M.writes_own_reasoning(rec(12))
  assert M.consistency_rate([closed, open_think, rec(13)]) == pytest.approx(1 / 2)
  rows = S.summary_lookup(S.summarize([rec(i, correct=i % 2 == 0) for i in range(6)] + stop, n=10))
  for metric in ("consistency", "consistency_judged", "no_conclusion_rate", "cons_adj_accuracy",
                 *(f"q_{q}" for q in stats.QUADRANTS)):
    row = rows[("b", "stop_think", metric)]
    assert math.isnan(row["value"]) and math.isnan(row["ci_low"]) and row["n"] == 0, row
    assert rows[("b", "base", metric)]["n"] == 6
  assert rows[("b", "stop_think", "accuracy")]["value"] == 1.0


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


def test_summary_auroc_among_base_correct_items():
  # P_base separates base-correct from base-wrong items but says nothing about which
  # base-correct items flip: high AUROC over all items, chance among the base-correct ones.
  rng, recs = np.random.default_rng(0), []
  for i in range(400):
    base_ok, flip = i % 2 == 0, rng.random() < 0.5
    p = rng.uniform(0.6, 1.0) if base_ok else rng.uniform(0.0, 0.4)
    recs += [rec(i, correct=base_ok, p_correct=p, entropy=1 - p),
             rec(i, "wrong_think", correct=base_ok and not flip)]
  rows = S.summary_lookup(S.summarize(recs, n=50))
  everyone = rows[("b", "wrong_think", "auroc_p_base")]
  among = rows[("b", "wrong_think", "auroc_p_base_base_correct")]
  assert everyone["value"] > 0.7 and abs(among["value"] - 0.5) < 0.1
  assert among["value"] == pytest.approx(
      M.robustness_auroc(recs, "wrong_think", among_base_correct=True))
  assert everyone["n"] == 400 and among["n"] == 200
  neg_h = M.robustness_auroc(recs, "wrong_think", "neg_entropy", among_base_correct=True)
  assert rows[("b", "wrong_think", "auroc_neg_entropy_base_base_correct")]["value"] == (
      pytest.approx(neg_h))


def test_ece_by_hand():
  # bins of width 0.1: bin 9 {0.92, 0.96}: conf 0.94, acc 1, gap 0.06; bin 6 {0.62, 0.68}: conf
  # 0.65, acc 1/2, gap 0.15; bin 3 {0.33}: acc 0, gap 0.33. ECE = (2*.06 + 2*.15 + .33) / 5 = 0.15
  conf, correct = [0.92, 0.96, 0.62, 0.68, 0.33], [1, 1, 0, 1, 0]
  assert M.ece(conf, correct) == pytest.approx(0.15)
  rel = stats.reliability_bins(conf, correct)
  assert rel["count"].tolist() == [0, 0, 0, 1, 0, 0, 2, 0, 0, 2]
  assert rel["centre"][9] == pytest.approx(0.95)
  assert rel["confidence"][[3, 6, 9]] == pytest.approx([0.33, 0.65, 0.94])
  assert rel["accuracy"][[3, 6, 9]] == pytest.approx([0.0, 0.5, 1.0])
  assert np.isnan(rel["accuracy"][0])
  assert stats.reliability_bins([1.0], [1])["count"][9] == 1  # confidence 1 goes in the last bin
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


def test_entropy_normalised_by_log_option_count():
  # uniform over K options has H = ln K, i.e. 1 after normalising, whatever K is
  assert M.record_entropy_norm(rec(0, probs=[0.5, 0.5])) == pytest.approx(1.0)
  assert M.record_entropy_norm(rec(0, probs=[0.25] * 4)) == pytest.approx(1.0)
  assert M.record_entropy_norm(rec(0, probs=[1.0, 0.0, 0.0])) == 0.0
  # stored entropy, K from `letters` (else letter_probs, else options)
  assert M.record_entropy_norm(rec(0, entropy=0.5, letters=list("ABC"))) == pytest.approx(
      0.5 / math.log(3))
  assert M.record_entropy_norm({"entropy": 0.5, "options": ["x", "y"]}) == pytest.approx(
      0.5 / math.log(2))
  assert math.isnan(M.record_entropy_norm(rec(0))) and math.isnan(
      M.record_entropy_norm({"entropy": 0.5}))
  # 2 options: H = ln 2, norm 1; 4 options: H = (.5 + .5 + .75) ln 2 = 1.75 ln 2, norm 0.875.
  # Means: H 1.375 ln 2, H / ln K 0.9375
  recs = [rec(1, probs=[0.5, 0.5]), rec(2, probs=[0.5, 0.25, 0.125, 0.125]), rec(3)]
  assert M.mean_entropy(recs) == pytest.approx(1.375 * math.log(2))
  assert M.mean_entropy_norm(recs) == pytest.approx(0.9375)
  row = S.summary_lookup(S.summarize(recs, n=5))[("b", "base", "mean_entropy_norm")]
  assert row["value"] == pytest.approx(0.9375) and row["n"] == 2


def test_abstain_rate_and_follows_target():
  # abstain appends "I'm not sure" as the last option: letter D of a 3-option item
  abstain = [rec(1, "abstain", correct=False, parsed="D", letters=list("ABCD")),
             rec(2, "abstain", letters=list("ABCD")),
             rec(3, "abstain", parsed=None, letters=list("ABCD")),
             {**rec(4, "abstain", correct=False, parsed="C"), "letters": None,
              "options": ["x", "y", "I'm not sure"]}]  # letter from the option count
  assert [M.abstain_letter(r) for r in abstain] == ["D", "D", "D", "C"]
  assert M.abstain_rate(abstain) == pytest.approx(2 / 4)
  assert M.abstain_letter(rec(5, parsed="C")) is None  # base has no abstain option
  assert math.isnan(M.abstain_rate([rec(5, correct=False, parsed="C")]))
  wrong = [rec(1, "wrong_caption", correct=False, parsed="B", target="B"),
           rec(2, "wrong_caption", correct=False, parsed="C", target="B"),
           rec(3, "wrong_caption", target="B"),
           rec(4, "wrong_caption", parsed=None, target="B")]  # unparsed follows nothing
  assert M.follows_target_rate(wrong) == pytest.approx(1 / 4)
  assert math.isnan(M.follows_target_rate([rec(1)]))
  rows = S.summary_lookup(S.summarize([rec(i) for i in range(1, 5)] + abstain + wrong, n=10))
  assert rows[("b", "abstain", "abstain_rate")]["value"] == pytest.approx(0.5)
  assert rows[("b", "wrong_caption", "follows_target")]["value"] == pytest.approx(0.25)
  assert rows[("b", "wrong_caption", "follows_target")]["n"] == 4
  assert ("b", "base", "abstain_rate") not in rows and ("b", "base", "follows_target") not in rows
  assert ("b", "abstain", "follows_target") not in rows


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
    S.summarize(recs, n=5)


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
