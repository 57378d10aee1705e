"""Writes the evaluation summary: summary.csv, summary.md and PNG plots.

Plots are drawn on `matplotlib.figure.Figure` objects (saved through the Agg canvas) rather than
pyplot, so this module never switches the process-wide backend or keeps figures alive.
matplotlib (the `plots` extra) is imported only to draw: without it the tables are still written.
"""

from __future__ import annotations

import collections
import csv
import importlib.util
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from evals import metrics as M, stats, summary as S
from vlm_jax.files import atomic_write

CSV_COLUMNS = ("benchmark", "variant", "metric", "value", "ci_low", "ci_high", "n")
# (metric, column header, scale, decimals): rates in %, the rest as they are; scale None = the
# number of items that metric's value is computed over (its row's n)
ACCURACY_COLUMNS = (("accuracy", "n", None, 0), ("accuracy", "Acc %", 100, 1),
                    ("accuracy_drop", "Drop vs base (pts)", 100, 1),
                    ("cons_adj_accuracy", "Cons-adj acc %", 100, 1),
                    ("consistency", "Consistent %", 100, 1),
                    ("consistency_judged", "Consistent if concluded %", 100, 1),
                    ("unparsed_rate", "Unparsed %", 100, 1),
                    ("no_conclusion_rate", "No conclusion %", 100, 1),
                    ("judge_error_rate", "Judge failed %", 100, 1))
CHOICE_COLUMNS = (("follows_target", "n target", None, 0),
                  ("follows_target", "Follows target %", 100, 1),
                  ("abstain_rate", "n abstain", None, 0), ("abstain_rate", "Abstain %", 100, 1))
UNCERTAINTY_COLUMNS = (("ece_max_prob", "n", None, 0), ("mean_entropy", "H (nats)", 1, 3),
                       ("mean_entropy_norm", "H / ln K", 1, 3),
                       ("mean_p_correct", "P(correct)", 1, 3),
                       ("mean_letter_mass", "Letter mass", 1, 3),
                       ("ece_max_prob", "ECE max-prob", 1, 3),
                       ("ece_p_correct", "ECE P(correct)", 1, 3))
_BC = M.BASE_CORRECT
ROBUSTNESS_COLUMNS = (("auroc_p_base", "n", None, 0), ("auroc_p_base", "AUROC P_base", 1, 3),
                      ("auroc_neg_entropy_base", "AUROC -H_base", 1, 3),
                      ("auroc_p_base" + _BC, "n base-correct", None, 0),
                      ("auroc_p_base" + _BC, "AUROC P_base (base-correct)", 1, 3),
                      ("auroc_neg_entropy_base" + _BC, "AUROC -H_base (base-correct)", 1, 3))
QUADRANT_COLUMNS = (("q_correct_consistent", "n", None, 0),
                    ("q_correct_consistent", "correct & consistent %", 100, 1),
                    ("q_correct_inconsistent", "correct & inconsistent %", 100, 1),
                    ("q_incorrect_consistent", "incorrect & consistent %", 100, 1),
                    ("q_incorrect_inconsistent", "incorrect & inconsistent %", 100, 1))
CIRCULAR_COLUMNS = (("circular_accuracy", "n questions", None, 0),
                    ("circular_accuracy", "Circular acc %", 100, 1))
TABLES = (("Accuracy and CoT consistency", ACCURACY_COLUMNS),
          ("Answers that follow the perturbation", CHOICE_COLUMNS),
          ("Uncertainty (records with letter probabilities)", UNCERTAINTY_COLUMNS),
          ("Robustness prediction from the base prompt", ROBUSTNESS_COLUMNS),
          ("Quadrants (% of items with reasoning of the model's own)", QUADRANT_COLUMNS),
          ("CircularEval (the original and its option-rotated copies all correct)",
           CIRCULAR_COLUMNS))
QUADRANT_COLORS = ("#2ca02c", "#98df8a", "#d62728", "#ff9896")
PLOTS = ("accuracy_by_variant.png", "quadrants.png", "reliability_base.png", "p_base_hist.png")

DEFINITIONS = """\
## Definitions
- Accuracy: the letter parsed from `<answer>` equals the key; unparsed answers count as wrong
  (and are reported as their own rate).
- Quadrants: correct/incorrect x consistent/inconsistent, where consistent = the judge's
  conclusion from the CoT equals the answer letter; no conclusion counts as inconsistent.
  Consistency-adjusted accuracy = share correct and consistent. "Consistent if concluded": the
  same share among the items where the judge found a conclusion. The CoT metrics are n/a where
  the prompt prefills a closed think (stop_think): the model writes no reasoning of its own.
- Follows target: share of answers equal to the option the caption / think asserts (the wrong
  option for wrong_*, the key for correct_*). Abstain: share answering the added "I'm not sure".
- Drop vs base: acc_base(S) - acc_variant(S) over the items S present under both (paired), in
  points.
- AUROC: Mann-Whitney AUROC (ties count 1/2) of the base-prompt P(correct letter), resp. -H, for
  predicting whether an item is correct under the variant, over all items present under both;
  "base-correct": over the items correct under base only (does a correct item stay correct).
- ECE: {bins} equal-width bins on [0, 1], ECE = sum_b (n_b/n)|acc_b - conf_b|. "ECE max-prob":
  confidence = max letter probability; "ECE P(correct)": confidence = P(correct letter) read as the
  probability that the item is correct. Outcome: the item is correct (the answer the model gave).
- H, P(correct): means over the items with letter probabilities (restricted softmax at the answer
  position). H / ln K: entropy divided by its maximum, K = the item's number of options (2-6).
  Letter mass: the next-token probability the scored letter spellings ('>X', '>' / '>\\n' /
  '>\\n\\n' / '>(' then 'X', ' X' or '(X') held before renormalising; low means the model
  answers some other way and H, P(correct) describe a remainder.
- {macro}: the mean of the per-benchmark values (over the benchmarks where a value is defined;
  n = their summed n); its interval averages the benchmarks' bootstrap replicates draw by draw.
- Circular acc (MMBench, 3DSRBench with `--circular`): VLMEvalKit's CircularEval score, a
  question counts as correct only when the original and every option-rotated copy are; the
  copies enter no other metric (those are over the original items).
- Intervals: 95% percentile bootstrap over items ({n_boot} resamples, seed {seed}); all variants of
  an item are resampled together.
"""


# ---------------------------------------------------------------- csv


def _csv_value(v) -> str:
  return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def write_csv(rows: Sequence[dict], path: Path, columns: Sequence[str] = CSV_COLUMNS) -> Path:
  """summary.csv: one line per row of `summary.summarize`, floats written in full (repr)."""
  with atomic_write(path) as f:  # a reader never sees half a summary
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      writer.writerow([_csv_value(row[c]) for c in columns])
  return path


def read_csv(path: Path) -> list[dict]:
  """summary.csv back as rows (value, ci_low, ci_high as floats, n as int)."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    row.update({k: float(row[k]) for k in ("value", "ci_low", "ci_high")}, n=int(row["n"]))
  return rows


# ---------------------------------------------------------------- markdown


def format_cell(row: dict | None, scale: float = 1, decimals: int = 3) -> str:
  """'value [low, high]' scaled; '' when the metric does not apply, 'n/a' when undefined."""
  if row is None:
    return ""
  if not math.isfinite(row["value"]):
    return "n/a"
  fmt = lambda x: f"{x * scale:.{decimals}f}" if math.isfinite(x) else "?"  # noqa: E731
  return f"{fmt(row['value'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _cell(row: dict | None, scale, decimals: int) -> str:
  if scale is None:  # the n column of a metric
    return "" if row is None else str(row["n"])
  return format_cell(row, scale, decimals)


def _variant_table(rows: Sequence[dict], benchmark: str, columns) -> list[str]:
  """Variants x columns; variants none of whose metrics apply are left out ([] if all are)."""
  table = S.summary_table(rows, benchmark, [c[0] for c in columns])
  body = [[variant] + [_cell(cell, scale, dec) for cell, (_, _, scale, dec) in zip(cells, columns)]
          for variant, cells in table if any(cells)]
  return markdown_table(["variant", *(c[1] for c in columns)], body) if body else []


def _benchmark_section(rows: Sequence[dict], benchmark: str) -> list[str]:
  out = [f"## {benchmark}", ""]
  if benchmark == S.MACRO:
    out += ["Mean over benchmarks of the values below (see Definitions).", ""]
  for title, columns in TABLES:
    table = _variant_table(rows, benchmark, columns)
    out += [f"{title}:", "", *table, ""] if table else []
  return out


def bad_item_counts(bad_items) -> dict[str, int]:
  """{benchmark: count} from a mapping or BadItem objects / dicts; a bare int is a total."""
  if bad_items is None:
    return {}
  if isinstance(bad_items, (int, np.integer)):
    return {"all benchmarks": int(bad_items)}
  if isinstance(bad_items, Mapping):
    return {str(k): int(v) for k, v in bad_items.items()}
  get = lambda b: b["benchmark"] if isinstance(b, Mapping) else b.benchmark  # noqa: E731
  return dict(collections.Counter(str(get(b)) for b in bad_items))


def _bad_line(bad: dict[str, int]) -> list[str]:
  if not bad:
    return []
  detail = ", ".join(f"{k} {v}" for k, v in sorted(bad.items()) if k != "all benchmarks")
  return [f"Bad items (skipped by the loaders): {sum(bad.values())}"
          + (f" ({detail})" if detail else ""), ""]


def _counts_section(records: Sequence[dict], bad: dict[str, int]) -> list[str]:
  body, copies = [], any(r.get("circular_of") is not None for r in records)
  for bench in sorted({str(r["benchmark"]) for r in records}):
    recs = [r for r in records if str(r["benchmark"]) == bench]
    body.append([bench, str(len({M.item_key(r) for r in recs})), str(len(recs)),
                 str(sum(M.is_unparsed(r) for r in recs)),
                 str(sum(not M.has_conclusion(r) and M.cot_judgeable(r) for r in recs)),
                 str(sum(M.judge_failed(r) for r in recs)),
                 str(sum(math.isnan(M.record_confidence(r)) for r in recs))]
                + ([str(sum(r.get("circular_of") is not None for r in recs))] if copies else []))
  header = ["benchmark", "items", "records", "unparsed", "no CoT conclusion", "judge failed",
            "no letter probs"]
  header += ["circular copies (records)"] if copies else []
  return ["## Counts", ""] + markdown_table(header, body) + [""] + _bad_line(bad)


def _meta_lines(meta: Mapping | None) -> list[str]:
  return [f"- {k}: {v}" for k, v in (meta or {}).items()] + ([""] if meta else [])


def write_markdown(records: Sequence[dict], rows: Sequence[dict], path: Path, *, plots=(),
                   bad_items=None, meta=None, n_boot: int = 1000, seed: int = 0,
                   bins: int = 10) -> Path:
  """summary.md: counts, per benchmark variants x key metrics with intervals, plots, definitions."""
  lines = ["# Robustness evaluation summary", ""] + _meta_lines(meta)
  bad = bad_item_counts(bad_items)
  if not records:
    lines += ["No results: the record list is empty.", ""] + _bad_line(bad)
  else:
    lines += _counts_section(records, bad)
    for bench in S.summary_benchmarks(rows):
      lines += _benchmark_section(rows, bench)
    lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    lines += [DEFINITIONS.format(n_boot=n_boot, seed=seed, bins=bins, macro=S.MACRO)]
  with atomic_write(path) as f:
    f.write("\n".join(lines))
  return Path(path)


# ---------------------------------------------------------------- plots


def _figure(**kwargs):
  from matplotlib.figure import Figure  # noqa: PLC0415 (optional dependency)
  return Figure(layout="constrained", **kwargs)


def _save(fig, path: Path) -> Path:
  with atomic_write(path, "wb") as f:
    fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
  return Path(path)


def _grid(n: int, width: float = 4.5, height: float = 3.5, max_cols: int = 4):
  cols = max(1, min(n, max_cols))
  rows = max(1, math.ceil(n / cols))
  fig = _figure(figsize=(width * cols, height * rows))
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  for ax in axes[n:]:
    ax.set_visible(False)
  return fig, axes


def _whiskers(cells: Sequence[dict]) -> np.ndarray:
  # Asymmetric error bars; an undefined interval draws no whisker.
  err = np.array([[c["value"] - c["ci_low"], c["ci_high"] - c["value"]] for c in cells]).T
  return np.nan_to_num(err.reshape(2, -1), nan=0.0).clip(min=0)


def plot_accuracy(rows: Sequence[dict], path: Path) -> Path:
  """Accuracy (%) by variant, one group of bars per benchmark, 95% CI whiskers."""
  lookup, benchmarks = S.summary_lookup(rows), S.summary_benchmarks(rows)
  variants = S.order_variants(r["variant"] for r in rows)
  fig = _figure(figsize=(min(20, max(6, 1.5 + 0.25 * len(benchmarks) * len(variants))), 4.5))
  ax, width = fig.subplots(), 0.8 / max(1, len(variants))
  for k, variant in enumerate(variants):
    cells = [lookup.get((b, variant, "accuracy")) for b in benchmarks]
    x = [i + (k - (len(variants) - 1) / 2) * width for i, c in enumerate(cells) if c]
    cells = [c for c in cells if c]
    ax.bar(x, [100 * c["value"] for c in cells], width, yerr=100 * _whiskers(cells),
           capsize=2, label=variant, color=f"C{k % 10}")
  ax.set_xticks(range(len(benchmarks)), benchmarks)
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  fig.legend(loc="outside lower center", ncols=min(5, max(1, len(variants))), fontsize="small")
  return _save(fig, path)


def _has_value(cells: Sequence[dict | None]) -> bool:
  return any(c is not None and math.isfinite(c["value"]) for c in cells)


def quadrant_table(rows: Sequence[dict], benchmark: str):
  """(summary_table of the quadrant shares, variants left out): a variant whose shares are all
  undefined (no reasoning of the model's own, stop_think) is left out rather than drawn as 0."""
  full = S.summary_table(rows, benchmark, [f"q_{q}" for q in stats.QUADRANTS])
  return ([(v, cells) for v, cells in full if _has_value(cells)],
          [v for v, cells in full if not _has_value(cells)])


def plot_quadrants(rows: Sequence[dict], path: Path) -> Path:
  """Stacked quadrant shares (correct/incorrect x consistent/inconsistent) per variant, a panel
  per benchmark; variants without reasoning of the model's own (stop_think) are left out."""
  benchmarks = S.summary_benchmarks(rows)
  fig, axes = _grid(len(benchmarks))
  for ax, bench in zip(axes, benchmarks):
    table, left_out = quadrant_table(rows, bench)
    bottom = np.zeros(len(table))
    for q, (name, color) in enumerate(zip(stats.QUADRANTS, QUADRANT_COLORS)):
      share = np.array([100 * c[q]["value"] if c[q] else 0.0 for _, c in table])
      ax.bar(range(len(table)), np.nan_to_num(share), bottom=bottom, color=color, label=name)
      bottom += np.nan_to_num(share)
    ax.set_xticks(range(len(table)), [v for v, _ in table], rotation=45, ha="right")
    if left_out:
      ax.set_xlabel("n/a (no own reasoning): " + ", ".join(left_out), fontsize="small")
    ax.set_title(bench)
    ax.set_ylabel("% of items")
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize="small")
  return _save(fig, path)


def plot_reliability(records: Sequence[dict], path: Path, bins: int = 10) -> Path:
  """Reliability diagram of the base variant (max-prob confidence), one curve per benchmark."""
  fig = _figure(figsize=(5, 5))
  ax = fig.subplots()
  ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
  base, drawn = [r for r in records if r["variant"] == M.BASE], False
  for k, bench in enumerate(sorted({r["benchmark"] for r in base})):
    conf, correct = M.calibration_inputs([r for r in base if r["benchmark"] == bench])
    if len(conf):
      rel, e = stats.reliability_bins(conf, correct, bins), M.ece(conf, correct, bins)
      full = rel["count"] > 0
      ax.plot(rel["confidence"][full], rel["accuracy"][full], "o-", color=f"C{k % 10}",
              label=f"{bench} (ECE {e:.3f}, n={len(conf)})")
      drawn = True
  if not drawn:
    ax.text(0.5, 0.5, "no base records with letter probabilities", ha="center", va="center")
  ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean max-prob confidence", ylabel="accuracy",
         title="reliability (base prompt)")
  ax.legend(fontsize="small", loc="upper left")
  return _save(fig, path)


P_BASE_HIST_TITLE = "P_base(correct letter) by outcome under each variant, all benchmarks pooled"


def p_base_hist_title(records: Sequence[dict], variant: str) -> str:
  """Panel title: AUROCs pooled over benchmarks, over all items and the base-correct ones."""
  scores, labels = M.robustness_scores(records, variant)
  bc = M.robustness_scores(records, variant, among_base_correct=True)
  return (f"{variant}: pooled AUROC {M.auroc(scores, labels):.3f} (n={len(scores)})\n"
          f"base-correct {M.auroc(*bc):.3f} (n={len(bc[0])})")


def plot_p_base_hist(records: Sequence[dict], path: Path, bins: int = 20) -> Path:
  """Histogram of P_base(correct) per perturbation variant, split by the variant's outcome
  (survives = correct under the variant, flips = wrong), all benchmarks pooled: the AUROCs in the
  titles are pooled too (over all items and over the base-correct ones), unlike the tables'."""
  variants = [v for v in S.order_variants(r["variant"] for r in records) if v != M.BASE]
  if not variants or not any(r["variant"] == M.BASE for r in records):
    fig, axes = _grid(1)  # one panel that says so (empty panels collapsed the layout)
    axes[0].text(0.5, 0.5, "needs base and perturbation variants", ha="center", va="center")
    axes[0].set_axis_off()
    return _save(fig, path)
  fig, axes = _grid(len(variants), 4.5, 3.5)
  for ax, variant in zip(axes, variants):
    scores, labels = M.robustness_scores(records, variant)
    edges = np.linspace(0, 1, bins + 1)
    ax.hist(scores[labels], edges, alpha=0.6, color="C2", label="survives (correct)")
    ax.hist(scores[~labels], edges, alpha=0.6, color="C3", label="flips (wrong)")
    ax.set_title(p_base_hist_title(records, variant), fontsize="small")
    ax.set_xlabel("P_base(correct letter)")
    ax.legend(fontsize="small")
  fig.suptitle(P_BASE_HIST_TITLE)
  return _save(fig, path)


def write_plots(records: Sequence[dict], rows: Sequence[dict], out_dir: Path,
                bins: int = 10) -> list[Path]:
  out = Path(out_dir)
  return [plot_accuracy(rows, out / PLOTS[0]), plot_quadrants(rows, out / PLOTS[1]),
          plot_reliability(records, out / PLOTS[2], bins),
          plot_p_base_hist(records, out / PLOTS[3])]


def have_matplotlib() -> bool:
  return importlib.util.find_spec("matplotlib") is not None


# ---------------------------------------------------------------- entry point


def write_summary(records: Iterable[dict], out_dir, *, bad_items=None, meta: Mapping | None = None,
                  n_boot: int = 1000, seed: int = 0, bins: int = 10) -> list[Path]:
  """Write summary.csv, summary.md and (when there are records) the PNG plots into out_dir.

  bad_items: skipped items, as a total, {benchmark: count} or BadItem objects / dicts; meta: lines
  for the top of summary.md (model, judge, ...). Returns the paths written (csv, md, plots...).
  """
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  records = list(records)
  rows = S.summarize(records, n=n_boot, seed=seed, bins=bins)
  # No plots for no records, nor without matplotlib (an optional extra): tables still get written.
  originals = [r for r in records if r.get("circular_of") is None]  # as the tables' metrics
  plots = write_plots(originals, rows, out, bins) if originals and have_matplotlib() else []
  md = write_markdown(records, rows, out / "summary.md", plots=plots, bad_items=bad_items,
                      meta=meta, n_boot=n_boot, seed=seed, bins=bins)
  return [write_csv(rows, out / "summary.csv"), md, *plots]
