"""Metrics of the robustness evaluation (PAPER.md section 5), record by record.

Input: the per-item result records the eval writes, one dict per item x prompt variant (keys
benchmark, item_id, variant, answer, parsed, correct, unparsed, judge_letter, consistent, letters,
letter_probs, p_correct, entropy; where present prefill, options, target). Record-level functions
(`accuracy(records)`, ...) count every record they are given as one unit; the caller picks the
benchmark / variant. Paired functions
(`accuracy_drop`, `robustness_auroc`) pair a variant's records with the base records of the same
item, an item being (benchmark, item_id). `bootstrap(fn, records)` gives a percentile interval for
any such `fn` by resampling items (copies of their records); `evals.summary` computes every metric
per benchmark x variant with the same draws (`draws`), as item weights. The formulas on arrays
(weighted means, AUROC, ECE, draws, intervals) are in `evals.stats`.

CoT metrics (consistency, quadrants, ...) are left undefined (nan), not 0, for records whose
prompt prefilled a closed think (stop_think): the judge would read our text, not the model's.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from evals import judge as judge_lib, variants as variants_lib
from evals.schema import LETTERS, Item
from evals.stats import (NAN, auroc, draws, ece, percentile_interval, quadrant_shares,
                         weighted_mean)

BASE = "base"
VARIANTS = ("base", "stop_think", "wrong_think", "wrong_think_but", "wrong_caption",
            "wrong_caption_disclaimer", "correct_caption", "correct_think", "abstain")
# base-prompt score used to predict correctness under a variant -> summary metric name
AUROC_METRICS = {"p_correct": "auroc_p_base", "neg_entropy": "auroc_neg_entropy_base"}
# suffix of the same AUROC over the items correct under base only ("does a correct item stay so")
BASE_CORRECT = "_base_correct"
THINK_CLOSE = "</think>"


# ---------------------------------------------------------------- one record


def is_unparsed(r: dict) -> bool:
  # A null parsed letter is unparsed whatever the flag says (the flag may be missing).
  return bool(r.get("unparsed")) or r.get("parsed") is None


def is_correct(r: dict) -> bool:
  # Unparsed answers are wrong, never guessed (PAPER.md 5), even if `correct` says otherwise.
  return bool(r.get("correct")) and not is_unparsed(r)


def has_conclusion(r: dict) -> bool:
  # The eval also nulls `consistent` for unparsed answers, so the judge's own letter is the
  # better witness; `consistent` is the fallback for records without `judge_letter`.
  return r["judge_letter"] is not None if "judge_letter" in r else r.get("consistent") is not None


def is_consistent(r: dict) -> bool:
  # A null verdict (no conclusion, or nothing parsed to compare with) counts as inconsistent.
  return bool(r.get("consistent"))


@functools.cache
def _variant_specs() -> dict[str, variants_lib.PromptSpec]:
  """Each known variant built on a two-option probe item, to read its properties (prefill,
  added options) for records that do not store them."""
  probe = Item(id="probe", benchmark="probe", question="?", options=("x", "y"), answer="A")
  return {v: variants_lib.make_variant(probe, v) for v in variants_lib.VARIANTS}


def record_prefill(r: dict) -> str | None:
  """The assistant prefill: the record's `prefill`, else the one its variant builds."""
  if "prefill" in r:
    return r["prefill"]
  spec = _variant_specs().get(r.get("variant"))
  return spec.assistant_prefill if spec else None


def writes_own_reasoning(r: dict) -> bool:
  """False when the prefill already closes the think (stop_think): the CoT the judge reads is
  then ours and names no option, so CoT consistency is undefined for the record, not 0."""
  prefill = record_prefill(r)
  return not (prefill and THINK_CLOSE in prefill)


def cot_judgeable(r: dict) -> bool:
  """Whether the record counts in the CoT metrics: the model wrote its own reasoning
  (`writes_own_reasoning`) and the judge gave a verdict on it (`judge.judge_failed`: an
  unparseable or unusable reply, or a request refused for good, e.g. a think over the judge's
  context length, is no verdict either way, and is counted by `judge_error_rate` instead)."""
  return writes_own_reasoning(r) and not judge_failed(r)


def judge_failed(r: dict) -> bool:
  """Whether the judge was asked about this record's think and gave no verdict."""
  return judge_lib.judge_failed(r.get("judge_error"))


def adds_abstain_option(variant: str) -> bool:
  """Whether `variant` appends the abstain option ("I'm not sure") as the last option."""
  spec = _variant_specs().get(variant)
  return spec is not None and spec.options[2:] == (variants_lib.ABSTAIN_OPTION,)


def abstain_letter(r: dict) -> str | None:
  """Letter of the abstain option (the last one) for records of an abstain variant, else None."""
  if not adds_abstain_option(r.get("variant")):
    return None
  letters = r.get("letters") or LETTERS[:len(r.get("options") or ())]
  return letters[-1] if letters else None


def abstained(r: dict) -> bool:
  letter = abstain_letter(r)
  return letter is not None and not is_unparsed(r) and r["parsed"] == letter


def has_target(r: dict) -> bool:
  # The letter a caption / think asserts (wrong_* and correct_* variants), stored with the record.
  return r.get("target") is not None


def follows_target(r: dict) -> bool:
  return has_target(r) and not is_unparsed(r) and r["parsed"] == r["target"]


def letter_entropy(probs: Sequence[float]) -> float:
  """H = -sum_k p_k log p_k in nats, with 0 log 0 = 0."""
  p = np.asarray(probs, np.float64)
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def _letter_probs(r: dict) -> np.ndarray | None:
  probs = r.get("letter_probs")
  if probs is None or len(probs) == 0 or any(p is None for p in probs):
    return None
  probs = np.asarray(probs, np.float64)
  return probs if np.all(np.isfinite(probs)) else None


def record_p_correct(r: dict) -> float:
  """P(correct letter): the stored `p_correct`, else letter_probs at the key's letter, else nan."""
  if r.get("p_correct") is not None:
    return float(r["p_correct"])
  probs, letters = _letter_probs(r), list(r.get("letters") or ())
  if probs is None or r.get("answer") not in letters or len(letters) != len(probs):
    return NAN
  return float(probs[letters.index(r["answer"])])


def record_entropy(r: dict) -> float:
  """Letter entropy (nats): the stored `entropy`, else H(letter_probs), else nan."""
  if r.get("entropy") is not None:
    return float(r["entropy"])
  probs = _letter_probs(r)
  return NAN if probs is None else letter_entropy(probs)


def n_options(r: dict) -> int:
  """K, the record's number of options: len(letters), else len(letter_probs) or len(options)."""
  for key in ("letters", "letter_probs", "options"):
    if r.get(key):
      return len(r[key])
  return 0


def record_entropy_norm(r: dict) -> float:
  """Letter entropy / ln K (K = the record's options), in [0, 1]: comparable across items with
  2 to 6 options, unlike nats; nan without an entropy or with K < 2."""
  k = n_options(r)
  return record_entropy(r) / math.log(k) if k >= 2 else NAN


def record_confidence(r: dict) -> float:
  """Max-prob confidence max_k p_k of the letter distribution, nan without letter_probs."""
  probs = _letter_probs(r)
  return NAN if probs is None else float(probs.max())



# ---------------------------------------------------------------- record-level metrics


def accuracy(records: Sequence[dict]) -> float:
  """acc = #{parsed letter == key} / #records; unparsed records count as wrong."""
  return weighted_mean([is_correct(r) for r in records])


def unparsed_rate(records: Sequence[dict]) -> float:
  """#{no letter parsed} / #records."""
  return weighted_mean([is_unparsed(r) for r in records])


def _own(records: Sequence[dict]) -> list[dict]:
  # CoT metrics count only the records whose reasoning the model wrote itself and the judge
  # did not refuse (`cot_judgeable`).
  return [r for r in records if cot_judgeable(r)]


def judge_error_rate(records: Sequence[dict]) -> float:
  """#{judge gave no verdict (`judge_failed`)} / #records with reasoning of the model's own;
  those records are left out of every other CoT metric. nan if none."""
  return weighted_mean([judge_failed(r) for r in records if writes_own_reasoning(r)])


def no_conclusion_rate(records: Sequence[dict]) -> float:
  """#{judge found no conclusion in the CoT (judge_letter is null)} / #records, over the records
  with reasoning of the model's own (`writes_own_reasoning`); nan if none."""
  return weighted_mean([not has_conclusion(r) for r in _own(records)])


def consistency_rate(records: Sequence[dict]) -> float:
  """#{CoT conclusion == answer letter} / #records with the model's own reasoning; no conclusion
  counts as inconsistent; nan if no record has reasoning of its own (stop_think)."""
  return weighted_mean([is_consistent(r) for r in _own(records)])


def judged_consistency_rate(records: Sequence[dict]) -> float:
  """#{CoT conclusion == answer letter} / #{judge found a conclusion}, over the records with the
  model's own reasoning: tells "concludes otherwise" apart from "concludes nothing". An unparsed
  answer matches no conclusion, so it counts as inconsistent."""
  return weighted_mean([is_consistent(r) for r in _own(records) if has_conclusion(r)])


def quadrants(records: Sequence[dict]) -> dict[str, float]:
  """Shares of correct/incorrect x consistent/inconsistent (no conclusion = inconsistent) among
  the records with the model's own reasoning; sum 1, all nan if there are none."""
  own = _own(records)
  return quadrant_shares([is_correct(r) for r in own], [is_consistent(r) for r in own])


def consistency_adjusted_accuracy(records: Sequence[dict]) -> float:
  """Consistency-adjusted accuracy = #{correct and consistent} / #records (own reasoning)."""
  return quadrants(records)["correct_consistent"]


def abstain_rate(records: Sequence[dict]) -> float:
  """#{parsed answer == the abstain option} / #records of an abstain variant; nan if none."""
  return weighted_mean([abstained(r) for r in records if abstain_letter(r) is not None])


def follows_target_rate(records: Sequence[dict]) -> float:
  """#{parsed answer == the option the caption / think asserts} / #records with a `target`; for
  wrong_* variants the share of answers the perturbation moved onto its wrong option."""
  return weighted_mean([follows_target(r) for r in records if has_target(r)])


def _finite_mean(values: Iterable[float]) -> float:
  values = np.array(list(values), np.float64)
  return weighted_mean(values[np.isfinite(values)])


def mean_entropy(records: Sequence[dict]) -> float:
  """Mean letter entropy (nats) over the records that have one; nan if none."""
  return _finite_mean(record_entropy(r) for r in records)


def mean_entropy_norm(records: Sequence[dict]) -> float:
  """Mean of H / ln K (K = each record's option count) over the records that have one."""
  return _finite_mean(record_entropy_norm(r) for r in records)


def record_letter_mass(r: dict) -> float:
  """The model's next-token probability on the scored letter spellings at the answer position,
  before the letter distribution was renormalised (nan in records from before it was stored)."""
  mass = r.get("letter_mass")
  return NAN if mass is None else float(mass)


def mean_letter_mass(records: Sequence[dict]) -> float:
  """Mean letter mass: near 1 when the model answers with a letter, low when the letter
  distribution is what is left after other answers (a word, "**B**")."""
  return _finite_mean(record_letter_mass(r) for r in records)


def mean_p_correct(records: Sequence[dict]) -> float:
  """Mean P(correct letter) over the records that have one; nan if none."""
  return _finite_mean(record_p_correct(r) for r in records)


def calibration_inputs(records: Sequence[dict], kind: str = "max_prob"):
  """(confidence, correct) arrays over the records with letter probabilities.

  kind "max_prob": confidence = max_k p_k, the usual ECE of the letter distribution; kind
  "p_correct": confidence = P(correct letter), read as the probability that the item is correct.
  The outcome is always the record's correctness (the answer the model gave, unparsed = wrong).
  """
  conf_of = {"max_prob": record_confidence, "p_correct": record_p_correct}[kind]
  conf = np.array([conf_of(r) for r in records], np.float64)
  correct = np.array([is_correct(r) for r in records], bool)
  keep = np.isfinite(conf)
  return conf[keep], correct[keep]


def calibration_error(records: Sequence[dict], kind: str = "max_prob", bins: int = 10) -> float:
  """`ece` of `calibration_inputs(records, kind)`."""
  return ece(*calibration_inputs(records, kind), bins)


# ---------------------------------------------------------------- paired metrics


def item_key(r: dict) -> tuple[str, str]:
  return str(r["benchmark"]), str(r["item_id"])


def index_by_item(records: Iterable[dict], variant: str) -> dict[tuple[str, str], dict]:
  """{item key: record} of one variant; two records of one item and variant are an error."""
  out = {}
  for r in records:
    if r["variant"] != variant:
      continue
    key = item_key(r)
    if key in out:  # mixed runs or a resumed run that re-wrote items: pairing would be ambiguous
      raise ValueError(f"two {variant!r} records for item {key[0]}/{key[1]}")
    out[key] = r
  return out


def paired(records: Sequence[dict], variant: str, base: str = BASE) -> list[tuple[dict, dict]]:
  """(base record, variant record) for each item present under both, in item-key order."""
  b, v = index_by_item(records, base), index_by_item(records, variant)
  return [(b[k], v[k]) for k in sorted(b.keys() & v.keys())]


def accuracy_drop(records: Sequence[dict], variant: str, base: str = BASE) -> float:
  """drop = acc_base(S) - acc_variant(S), S = the items with a record under both; > 0 = worse."""
  return weighted_mean([is_correct(b) - is_correct(v) for b, v in paired(records, variant, base)])


def base_score(r: dict, score: str) -> float:
  """Base-prompt predictor of robustness: P(correct letter) or -H (higher = more confident)."""
  return record_p_correct(r) if score == "p_correct" else -record_entropy(r)


def robustness_scores(records: Sequence[dict], variant: str, score: str = "p_correct",
                      base: str = BASE, among_base_correct: bool = False):
  """(scores, labels) for `robustness_auroc`: score from the base record, label from the variant.

  Items: present under both, with a finite base score (and correct under base if
  `among_base_correct`). Label: the item is correct under `variant`.
  """
  pairs = [(b, v) for b, v in paired(records, variant, base)
           if not among_base_correct or is_correct(b)]
  scores = np.array([base_score(b, score) for b, _ in pairs], np.float64)
  labels = np.array([is_correct(v) for _, v in pairs], bool)
  keep = np.isfinite(scores)
  return scores[keep], labels[keep]


def robustness_auroc(records: Sequence[dict], variant: str, score: str = "p_correct",
                     base: str = BASE, among_base_correct: bool = False) -> float:
  """AUROC of the base-prompt score for predicting correctness under `variant`.

  The study's definition (PAPER.md 5): over all items present under base and `variant`
  (not only those correct under base, unless `among_base_correct`), label = correct under
  `variant`, score = P_base(correct letter) or -H_base; `auroc` (ties count 1/2, nan when
  one class is empty).
  """
  return auroc(*robustness_scores(records, variant, score, base, among_base_correct))


# ---------------------------------------------------------------- bootstrap


def _item_groups(records: Sequence[dict]) -> list[list[dict]]:
  groups: dict[tuple[str, str], list[dict]] = {}
  for r in records:
    groups.setdefault(item_key(r), []).append(r)
  return [groups[k] for k in sorted(groups)]


def _resample(groups: list[list[dict]], idx: np.ndarray) -> list[dict]:
  # Each drawn copy is its own item ('#k' suffix), so paired metrics pair inside a copy.
  return [dict(r, item_id=f"{r['item_id']}#{k}") for k, i in enumerate(idx) for r in groups[i]]


def bootstrap(fn: Callable[[list[dict]], float], records: Sequence[dict], n: int = 1000,
              seed: int = 0, level: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of fn(records), resampling items (all their records together).

  Items are (benchmark, item_id) in sorted order, drawn with replacement n times with
  numpy's default_rng(seed); deterministic given the seed.
  """
  groups = _item_groups(records)
  return percentile_interval((fn(_resample(groups, idx)) for idx in draws(len(groups), n, seed)),
                             level)
