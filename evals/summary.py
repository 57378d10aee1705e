"""Every metric of `evals.metrics` per benchmark x variant, with percentile-bootstrap intervals.

`summarize` builds, per benchmark, a `Panel`: the records as [item, variant] arrays. Its
intervals resample *items*: all variants of an item travel together, so paired metrics stay
paired. It evaluates a resample as item weights (how often each item was drawn) instead of
copying records, and a block of resamples at once as a [draws, items] weight matrix (1000
resamples of 100 items x 9 variants: 0.4 s, against 3.8 s one resample at a time); for the
same records, seed and metric it gives `metrics.bootstrap`'s interval (both draw from
`metrics.draws`).
With two or more benchmarks `summarize` adds a MACRO "benchmark": the mean of the per-benchmark
values, its interval from the same per-benchmark resamples, averaged draw by draw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np

from evals.metrics import (AUROC_METRICS, BASE, BASE_CORRECT, VARIANTS, abstain_letter,
                           abstained, adds_abstain_option, cot_judgeable, follows_target,
                           has_conclusion, has_target, is_consistent, is_correct, is_unparsed,
                           item_key, judge_failed, record_confidence, record_entropy,
                           record_entropy_norm, record_letter_mass, record_p_correct,
                           writes_own_reasoning)
from evals.stats import (NAN, QUADRANTS, auroc_ranked, dense_rank, draws, ece,
                         percentile_interval, quadrant_shares, weighted_mean)

MACRO = "all (macro)"  # the cross-benchmark row of `summarize`: mean of the per-benchmark values


# ---------------------------------------------------------------- panel


def order_variants(names: Iterable[str]) -> list[str]:
  """Known variants in the study's order, then any others alphabetically."""
  names = set(names)
  return [v for v in VARIANTS if v in names] + sorted(names - set(VARIANTS))


@dataclasses.dataclass(frozen=True, eq=False)
class Panel:
  """Records of a set of items as [item, variant] arrays; rows are items in key order."""
  keys: list[tuple[str, str]]
  variants: list[str]
  fields: dict[str, np.ndarray]     # present, correct, unparsed, judged, consistent, p_correct, ...
  base_rank: dict[str, np.ndarray]  # dense rank of each base score per item, -1 where missing


_RECORD_FIELDS = {"correct": is_correct, "unparsed": is_unparsed, "judged": has_conclusion,
                  "consistent": is_consistent, "own": cot_judgeable,
                  "writes": writes_own_reasoning, "judge_failed": judge_failed,
                  "has_abstain": lambda r: abstain_letter(r) is not None, "abstained": abstained,
                  "has_target": has_target, "follows_target": follows_target,
                  "p_correct": record_p_correct, "entropy": record_entropy,
                  "entropy_norm": record_entropy_norm, "confidence": record_confidence,
                  "letter_mass": record_letter_mass}
_FLOAT_FIELDS = ("p_correct", "entropy", "entropy_norm", "confidence", "letter_mass")


def _base_ranks(fields: dict[str, np.ndarray], j: int) -> dict[str, np.ndarray]:
  out = {}
  for score, values in (("p_correct", fields["p_correct"][:, j]),
                        ("neg_entropy", -fields["entropy"][:, j])):
    rank = np.full(len(values), -1, np.int64)
    ok = np.isfinite(values) & fields["present"][:, j]
    rank[ok] = dense_rank(values[ok])
    out[score] = rank
  return out


def build_panel(records: Sequence[dict]) -> Panel:
  keys = sorted({item_key(r) for r in records})
  variants = order_variants(r["variant"] for r in records)
  row, col = {k: i for i, k in enumerate(keys)}, {v: j for j, v in enumerate(variants)}
  shape = (len(keys), len(variants))
  fields = {name: np.full(shape, np.nan) if name in _FLOAT_FIELDS else np.zeros(shape, bool)
            for name in ("present", *_RECORD_FIELDS)}
  for r in records:
    i, j = row[item_key(r)], col[r["variant"]]
    if fields["present"][i, j]:
      raise ValueError(f"two {r['variant']!r} records for item {keys[i][0]}/{keys[i][1]}")
    fields["present"][i, j] = True
    for name, fn in _RECORD_FIELDS.items():
      fields[name][i, j] = fn(r)
  ranks = _base_ranks(fields, col[BASE]) if BASE in col else {}
  return Panel(keys, variants, fields, ranks)


# Every metric below takes item weights w as [draws, items] (a row of ones = the point
# estimate; a row of draw counts = one bootstrap resample) and returns ([draws] values, n): the
# formulas of `evals.metrics` take such weight blocks, so all resamples of a panel run in a few
# array operations instead of one Python pass per resample.


def _mean(x: np.ndarray, mask: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, int]:
  return weighted_mean(x[mask], w[:, mask]), int(mask.sum())


def _rate_metrics(p: Panel, j: int, w: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
  f, m = p.fields, p.fields["present"][:, j]
  c, k, judged = f["correct"][:, j], f["consistent"][:, j], f["judged"][:, j]
  own = m & f["own"][:, j]  # CoT metrics: only where the model wrote its own reasoning
  out = {"accuracy": _mean(c, m, w), "unparsed_rate": _mean(f["unparsed"][:, j], m, w),
         "consistency": _mean(k, own, w), "consistency_judged": _mean(k, own & judged, w),
         "no_conclusion_rate": _mean(~judged, own, w), "cons_adj_accuracy": _mean(c & k, own, w),
         "judge_error_rate": _mean(f["judge_failed"][:, j], m & f["writes"][:, j], w)}
  shares = quadrant_shares(c[own], k[own], w[:, own])
  out.update({f"q_{q}": (shares[q], int(own.sum())) for q in QUADRANTS})
  return out


def _choice_metrics(p: Panel, j: int, w: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
  # Only for variants that offer an abstain option / assert a target option.
  f, m, out = p.fields, p.fields["present"][:, j], {}
  for name, applies, hit in (("abstain_rate", "has_abstain", "abstained"),
                             ("follows_target", "has_target", "follows_target")):
    mask = m & f[applies][:, j]
    if mask.any():
      out[name] = _mean(f[hit][:, j], mask, w)
  return out


def _prob_metrics(p: Panel, j: int, w: np.ndarray, bins: int) -> dict:
  f, c = p.fields, p.fields["correct"][:, j]
  out = {}
  for name, field in (("mean_entropy", "entropy"), ("mean_entropy_norm", "entropy_norm"),
                      ("mean_p_correct", "p_correct"), ("mean_letter_mass", "letter_mass")):
    out[name] = _mean(f[field][:, j], f["present"][:, j] & np.isfinite(f[field][:, j]), w)
  for name, field in (("ece_max_prob", "confidence"), ("ece_p_correct", "p_correct")):
    m = f["present"][:, j] & np.isfinite(f[field][:, j])
    out[name] = ece(f[field][m, j], c[m], bins, w[:, m]), int(m.sum())
  return out


def _paired_metrics(p: Panel, j: int, w: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
  f, b = p.fields, p.variants.index(BASE)
  both = f["present"][:, b] & f["present"][:, j]
  drop = f["correct"][:, b].astype(np.float64) - f["correct"][:, j]
  out = {"accuracy_drop": _mean(drop, both, w)}
  for score, name in AUROC_METRICS.items():
    scored = both & (p.base_rank[score] >= 0)
    for metric, m in ((name, scored), (name + BASE_CORRECT, scored & f["correct"][:, b])):
      out[metric] = auroc_ranked(p.base_rank[score][m], f["correct"][m, j], w[:, m]), int(m.sum())
  return out


def panel_metrics(p: Panel, w: np.ndarray, bins: int = 10) -> dict:
  """{(variant, metric): (values, n)} under item weights w: [items] (ones = the point estimate;
  values are then floats) or [draws, items] (values [draws])."""
  w = np.asarray(w, np.float64)
  rows = w[None] if w.ndim == 1 else w
  out = {}
  for j, variant in enumerate(p.variants):
    metrics = {**_rate_metrics(p, j, rows), **_choice_metrics(p, j, rows),
               **_prob_metrics(p, j, rows, bins)}
    if variant != BASE and BASE in p.variants:
      metrics.update(_paired_metrics(p, j, rows))
    out.update({(variant, name): (float(v[0]) if w.ndim == 1 else v, n)
                for name, (v, n) in metrics.items()})
  return out


# ---------------------------------------------------------------- summary


@dataclasses.dataclass(frozen=True, eq=False)
class Estimates:
  """One benchmark's (or the macro's) metrics: point values, their n, and bootstrap replicates."""
  keys: list[tuple[str, str]]  # (variant, metric)
  value: np.ndarray            # [key]
  n: np.ndarray                # [key]
  boots: np.ndarray            # [draw, key]


_CHUNK = 1 << 21  # weights per block of resamples ([draws, items] float64: 16 MB)


def resample_weights(n_items: int, n: int, seed: int):
  """`metrics.draws` as item weights (how often each item was drawn), in [draws, items] blocks."""
  block = []
  for idx in draws(n_items, n, seed):
    block.append(np.bincount(idx, minlength=n_items))
    if len(block) * n_items >= _CHUNK:
      yield np.array(block, np.float64)
      block = []
  if block:
    yield np.array(block, np.float64)


def benchmark_estimates(records: Sequence[dict], n: int, seed: int, bins: int) -> Estimates:
  """`panel_metrics` of one benchmark's records at unit weights and at n resampled weights."""
  p = build_panel(records)
  point = panel_metrics(p, np.ones(len(p.keys)), bins)
  keys = list(point)
  blocks = [np.stack([values[k][0] for k in keys], axis=1) for values in (
      panel_metrics(p, w, bins) for w in resample_weights(len(p.keys), n, seed))]
  boots = np.concatenate(blocks) if blocks else np.zeros((0, len(keys)))
  return Estimates(keys, np.array([point[k][0] for k in keys], np.float64),
                   np.array([point[k][1] for k in keys], np.int64), boots)


def macro_estimates(parts: Sequence[Estimates]) -> Estimates:
  """Mean over benchmarks of each (variant, metric), over the benchmarks where it is defined;
  n = their summed n. Replicate d = the mean of the benchmarks' replicates d (each benchmark
  resampled within itself), nan when one of them is nan (the draw is then left out)."""
  keys = list(dict.fromkeys(k for e in parts for k in e.keys))
  order = order_variants(v for v, _ in keys)
  keys.sort(key=lambda k: order.index(k[0]))  # stable: metrics keep their order in a variant
  n_draws = max((len(e.boots) for e in parts), default=0)
  value, count, boots = np.full(len(keys), NAN), np.zeros(len(keys), np.int64), []
  for i, key in enumerate(keys):
    cols = [(e, e.keys.index(key)) for e in parts if key in e.keys]
    cols = [(e, c) for e, c in cols if math.isfinite(e.value[c])]
    if cols:
      value[i] = np.mean([e.value[c] for e, c in cols])
      count[i] = sum(int(e.n[c]) for e, c in cols)
    boots.append(np.mean([e.boots[:, c] for e, c in cols], axis=0) if cols and n_draws
                 else np.full(n_draws, NAN))
  return Estimates(keys, value, count, np.array(boots, np.float64).reshape(len(keys), -1).T)


def estimate_rows(benchmark: str, e: Estimates, level: float) -> list[dict]:
  rows = []
  for i, (variant, metric) in enumerate(e.keys):
    low, high = percentile_interval(e.boots[:, i], level)
    rows.append({"benchmark": benchmark, "variant": variant, "metric": metric,
                 "value": float(e.value[i]), "ci_low": low, "ci_high": high, "n": int(e.n[i])})
  return rows


def summarize(records: Sequence[dict], n: int = 1000, seed: int = 0, bins: int = 10,
              level: float = 0.95) -> list[dict]:
  """One row per benchmark x variant x metric: {benchmark, variant, metric, value, ci_low,
  ci_high, n}; n = items the value is computed over.

  Metrics per variant: accuracy, unparsed_rate, consistency, consistency_judged (among records
  where the judge found a conclusion), no_conclusion_rate, cons_adj_accuracy, q_<quadrant>
  (the CoT metrics are nan, n 0, where the prefill closes the think: stop_think; records the
  judge gave no verdict on are left out of them), judge_error_rate (their share),
  mean_entropy, mean_entropy_norm (H / ln K), mean_p_correct, mean_letter_mass (the next-token
  probability the scored letter spellings held, before renormalising), ece_max_prob,
  ece_p_correct;
  abstain_rate for abstain variants; follows_target for variants with a target; for each
  non-base variant when base is present also accuracy_drop, auroc_p_base,
  auroc_neg_entropy_base and both AUROCs over the base-correct items (suffix `_base_correct`).
  Intervals: `bootstrap` over the benchmark's items (same draws). ECE is biased upward under
  resampling, so its percentile interval can lie above the estimate. With two or more
  benchmarks the rows end with benchmark MACRO (`macro_estimates`).
  CircularEval copies (records with `circular_of`, `evals.run --circular`) feed only the
  metric `circular_accuracy` (`circular_rows`); every other metric is over the original items.
  """
  originals = [r for r in records if r.get("circular_of") is None]
  benchmarks = sorted({str(r["benchmark"]) for r in originals})
  parts = [benchmark_estimates([r for r in originals if str(r["benchmark"]) == bench], n, seed,
                               bins) for bench in benchmarks]
  rows = [row for bench, e in zip(benchmarks, parts) for row in estimate_rows(bench, e, level)]
  rows += circular_rows(records, n, seed, level)
  return rows + (estimate_rows(MACRO, macro_estimates(parts), level) if len(parts) > 1 else [])


def circular_rows(records: Sequence[dict], n: int = 1000, seed: int = 0,
                  level: float = 0.95) -> list[dict]:
  """VLMEvalKit's CircularEval score per benchmark x variant, for benchmarks whose records
  include circular copies (`circular_of` = the original's item id; MMBench, 3DSRBench): a
  question is correct when its original and every copy present are correct (a copy rotates
  the options, so the key sits under another letter). Only questions with all their copies
  are scored: as many as the most any question with as many options has under that variant
  (K - 1 for K options in VLMEvalKit's files); one cut short by --limit or an unfinished run
  would otherwise need fewer rotations right. n = the questions scored. Interval: percentile
  bootstrap over questions (`metrics.draws`)."""
  questions: dict[tuple[str, str, str], dict[str, list]] = {}
  with_copies = {str(r["benchmark"]) for r in records if r.get("circular_of") is not None}
  for r in records:
    bench = str(r["benchmark"])
    if bench not in with_copies:
      continue
    origin = str(r["item_id"] if r.get("circular_of") is None else r["circular_of"])
    kind = "copies" if r.get("circular_of") is not None else "original"
    q = questions.setdefault((bench, r["variant"], origin), {"original": [], "copies": []})
    q[kind].append(is_correct(r))
    if kind == "original":  # the item's own options (the abstain variant appends one)
      q["options"] = len(r.get("options") or ()) - adds_abstain_option(r["variant"])
  rows = []
  for bench in sorted(with_copies):
    variants = order_variants(v for b, v, _ in questions if b == bench)
    for variant in variants:
      here = [q for (b, v, _), q in sorted(questions.items())
              if b == bench and v == variant and q["original"] and q["copies"]]
      full = {}  # options -> the most copies a question with that many has
      for q in here:
        full[q["options"]] = max(full.get(q["options"], 0), len(q["copies"]))
      scored = [all(q["original"] + q["copies"]) for q in here
                if len(q["copies"]) == full[q["options"]]]
      c = np.asarray(scored, np.float64)
      boots = [v for w in resample_weights(len(c), n, seed) for v in w @ c / len(c)]
      low, high = percentile_interval(boots, level)
      rows.append({"benchmark": bench, "variant": variant, "metric": "circular_accuracy",
                   "value": float(c.mean()) if len(c) else NAN, "ci_low": low, "ci_high": high,
                   "n": len(c)})
  return rows


def summary_benchmarks(rows: Iterable[dict]) -> list[str]:
  """The benchmarks of summary rows, sorted, with MACRO last."""
  names = {r["benchmark"] for r in rows}
  return sorted(names - {MACRO}) + ([MACRO] if MACRO in names else [])


def summary_lookup(rows: Iterable[dict]) -> dict[tuple[str, str, str], dict]:
  """{(benchmark, variant, metric): row}."""
  return {(r["benchmark"], r["variant"], r["metric"]): r for r in rows}


def summary_table(rows: Sequence[dict], benchmark: str,
                  metrics: Sequence[str]) -> list[tuple[str, list[dict | None]]]:
  """One benchmark's rows as [(variant, [row or None for each metric])], variants in order."""
  lookup = summary_lookup(rows)
  variants = order_variants(r["variant"] for r in rows if r["benchmark"] == benchmark)
  return [(v, [lookup.get((benchmark, v, m)) for m in metrics]) for v in variants]
