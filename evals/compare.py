"""`python -m evals.compare`: the summaries of finished runs, remade from their records alone (no
data, no model), and several runs side by side: a base model against its RL-tuned checkpoints,
or the `step_<N>.jsonl` evaluations `rl.train` writes during training.

  python -m evals.compare runs/base                       # rewrite runs/base/summary.*
  python -m evals.compare runs/base runs/step250 runs/step500 --out runs/compare
  python -m evals.compare train/eval/step_*.jsonl --out train/compare

A run is a folder holding results.jsonl (as `evals.run` writes it; its run_settings.json and
bad_items.jsonl are read when present) or one .jsonl file of records. With one run and no --out
its summary is rewritten in place. Otherwise --out gets compare.csv (label, benchmark, variant,
metric, value, ci_low, ci_high, n: every metric of `summary.summarize` for every run),
compare.md (the key metrics, one table per metric: benchmark x variant rows, one column per
run, value and 95% interval) and, with matplotlib, compare_<metric>.png (each variant's value
across the runs, over the benchmarks' macro mean where there are several). Every run is
summarised with the same bootstrap draws (seed), so intervals of runs of the same items are
comparable; runs whose answer rules differ are named in compare.md, since their numbers do not
pool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from evals import report, summary as S
from evals.results import BAD_ITEMS_FILE, SETTINGS_FILE, ResultsFile, read_bad_items
from vlm_jax.files import atomic_write

KEY_METRICS = (("accuracy", "Accuracy %", 100), ("consistency", "Consistent %", 100),
               ("cons_adj_accuracy", "Consistency-adjusted accuracy %", 100),
               ("mean_entropy", "Letter entropy (nats)", 1),
               ("mean_p_correct", "P(correct letter)", 1),
               ("accuracy_drop", "Accuracy drop vs base (pts)", 100),
               ("judge_error_rate", "Judge failed %", 100))


class Run:
  """One run's records, label and settings (run_settings.json; {} for a bare .jsonl)."""

  def __init__(self, path: str, label: str | None = None):
    self.path = path
    folder = os.path.isdir(path)
    results = os.path.join(path, "results.jsonl") if folder else path
    if not os.path.isfile(results):
      raise FileNotFoundError(f"{path}: no {'results.jsonl in it' if folder else 'such file'} "
                              "(a run is an evals.run output folder or a .jsonl of records)")
    self.records = ResultsFile(results, writer=False).records  # read only: no lock, no repair
    self.label = label or (Path(path).name if folder else Path(path).stem)
    self.settings = _read_json(os.path.join(path, SETTINGS_FILE)) if folder else {}
    self.bad_items = read_bad_items(os.path.join(path, BAD_ITEMS_FILE)) if folder else None

  def answer_rules(self) -> str:
    """The versions of the rules that read its answers, letters and verdicts, as its records
    name them (parse, letters, judge prompt or rules)."""
    found = {"/".join(str(r.get(k)) for k in ("parse_version", "letter_version",
                                              "judge_prompt_version")) for r in self.records}
    return ", ".join(sorted(found))


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def resummarize(run: Run, n_boot: int = 1000, seed: int = 0) -> list[Path]:
  """Rewrite the run folder's summary.csv / summary.md / plots from its records."""
  return report.write_summary(run.records, run.path, bad_items=run.bad_items,
                              meta=run.settings or None, n_boot=n_boot, seed=seed)


def compare_rows(runs: Sequence[Run], n_boot: int = 1000, seed: int = 0) -> list[dict]:
  """Every summary row of every run, with its run's label first."""
  return [{"label": run.label, **row} for run in runs
          for row in S.summarize(run.records, n=n_boot, seed=seed)]


def write_compare(runs: Sequence[Run], out: str, n_boot: int = 1000, seed: int = 0) -> list[Path]:
  labels = [run.label for run in runs]
  if len(set(labels)) != len(labels):
    raise ValueError(f"runs need distinct labels, got {labels} (pass --labels)")
  rows = compare_rows(runs, n_boot, seed)
  folder = Path(out)
  folder.mkdir(parents=True, exist_ok=True)
  paths = [report.write_csv(rows, folder / "compare.csv", ("label", *report.CSV_COLUMNS))]
  plots = _plots(rows, labels, folder) if report.have_matplotlib() and rows else []
  paths.append(_write_markdown(runs, rows, plots, folder / "compare.md", n_boot, seed))
  return paths + plots


def _lookup(rows: list[dict]) -> dict[tuple, dict]:
  return {(r["label"], r["benchmark"], r["variant"], r["metric"]): r for r in rows}


def _write_markdown(runs, rows, plots, path: Path, n_boot: int, seed: int) -> Path:
  look, labels = _lookup(rows), [run.label for run in runs]
  lines = ["# Runs compared", ""]
  for run in runs:
    what = ", ".join(f"{k} {run.settings[k]}" for k in ("model", "preset", "judge")
                     if run.settings.get(k) is not None)
    what = f"; {what}" if what else ""
    lines.append(f"- {run.label}: {run.path} ({len(run.records)} records{what})")
  rules = {run.label: run.answer_rules() for run in runs}
  if len(set(rules.values())) > 1:
    lines += ["", "**Warning: these runs read answers by different rules, so their numbers do "
              "not compare:** " + "; ".join(f"{k}: {v}" for k, v in rules.items())]
  order = S.order_variants({r["variant"] for r in rows})
  keys = sorted({(r["benchmark"], r["variant"]) for r in rows},
                key=lambda k: (k[0] == S.MACRO, k[0], order.index(k[1])))
  for metric, title, scale in KEY_METRICS:
    body = []
    for bench, variant in keys:
      cells = [look.get((label, bench, variant, metric)) for label in labels]
      if any(c is not None for c in cells):
        body.append([bench, variant] + [report.format_cell(c, scale, 1 if scale == 100 else 3)
                                        for c in cells])
    if body:
      lines += ["", f"## {title}", ""] + report.markdown_table(["benchmark", "variant", *labels],
                                                               body)
  lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
  lines += ["", f"Intervals: 95% percentile bootstrap over each run's items ({n_boot} "
            f"resamples, seed {seed}); metrics as defined in each run's summary.md."]
  with atomic_write(str(path)) as f:
    f.write("\n".join(lines) + "\n")
  return path


def _plots(rows: list[dict], labels: list[str], folder: Path) -> list[Path]:
  look = _lookup(rows)
  benches = {r["benchmark"] for r in rows}
  bench = S.MACRO if S.MACRO in benches else sorted(benches)[0]
  variants = S.order_variants({r["variant"] for r in rows if r["benchmark"] == bench})
  paths = []
  for metric, title, scale in KEY_METRICS:
    series = {v: [look.get((label, bench, v, metric)) for label in labels] for v in variants}
    series = {v: cells for v, cells in series.items() if report._has_value(cells)}
    if not series:
      continue
    fig = report._figure(figsize=(max(4.5, 0.9 * len(labels) + 2), 3.5))
    ax = fig.add_subplot()
    x = range(len(labels))
    for variant, cells in series.items():
      y = [scale * c["value"] if c else float("nan") for c in cells]
      ax.plot(x, y, marker="o", label=variant)
    ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_title(f"{title} ({bench})")
    ax.legend(fontsize=7)
    paths.append(report._save(fig, folder / f"compare_{metric}.png"))
  return paths


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m evals.compare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("runs", nargs="+", help="evals.run output folders or .jsonl record files")
  p.add_argument("--out", help="folder for compare.* (required with several runs)")
  p.add_argument("--labels", help="comma-separated run labels (default: folder or file names)")
  p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
  p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  labels = args.labels.split(",") if args.labels else [None] * len(args.runs)
  if len(labels) != len(args.runs):
    raise SystemExit(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
  try:
    runs = [Run(path, label) for path, label in zip(args.runs, labels)]
    if len(runs) == 1 and not args.out:
      if not os.path.isdir(runs[0].path):
        raise ValueError(f"{runs[0].path}: a record file is summarised into --out, not in place")
      paths = resummarize(runs[0], args.n_boot, args.seed)
    elif not args.out:
      raise ValueError("several runs: pass --out for the comparison")
    else:
      paths = write_compare(runs, args.out, args.n_boot, args.seed)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("wrote " + ", ".join(str(p) for p in paths))
  return 0


if __name__ == "__main__":
  sys.exit(main())
