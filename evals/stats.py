"""Weighted statistics on arrays, the formulas under `evals.metrics` and `evals.summary`: means,
correctness x consistency quadrant shares, ranks and AUROC, reliability bins and ECE, and the
bootstrap's draws and percentile intervals. Weights w are [items], or [draws, items] for many
weightings at once (`summary`'s bootstrap resamples): a formula then gives one value per row, as
an array."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

NAN = float("nan")
QUADRANTS = ("correct_consistent", "correct_inconsistent", "incorrect_consistent",
             "incorrect_inconsistent")


def _divide(num, den) -> np.ndarray:
  """num / den where den > 0, else nan (elementwise)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), NAN)


def _per_weighting(value: np.ndarray, w: np.ndarray):
  """A float for 1-D weights, else the array of one value per row of w."""
  return float(value) if w.ndim == 1 else value


def bincount_rows(group: np.ndarray, w: np.ndarray, length: int) -> np.ndarray:
  """np.bincount(group, weights=w, minlength=length) for each row of w ([..., length])."""
  if w.ndim == 1:
    return np.bincount(group, weights=w, minlength=length)
  out = np.zeros((w.shape[0], length))
  if group.size:
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    out[:, sorted_group[starts]] = np.add.reduceat(w[:, order], starts, axis=1)
  return out


def _weights(w, n: int) -> np.ndarray:
  return np.ones(n) if w is None else np.asarray(w, np.float64)


def weighted_mean(x: Iterable[float], w: Iterable[float] | None = None):
  """mean = sum_i w_i x_i / sum_i w_i (w_i = 1 by default); nan when sum_i w_i = 0."""
  x = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, np.float64)
  w = _weights(w, len(x))
  return _per_weighting(_divide(w @ x, w.sum(-1)), w)


def quadrant_shares(correct, consistent, w=None) -> dict:
  """Share of items in each quadrant, e.g. correct_consistent = #(correct & consistent) / #items."""
  c, k = np.asarray(correct, bool), np.asarray(consistent, bool)
  masks = (c & k, c & ~k, ~c & k, ~c & ~k)
  return {name: weighted_mean(m, w) for name, m in zip(QUADRANTS, masks)}


def dense_rank(scores) -> np.ndarray:
  """0-based rank of each score among the distinct scores (equal scores share a rank)."""
  return np.unique(np.asarray(scores, np.float64), return_inverse=True)[1].reshape(-1)


def auroc_ranked(rank, labels, w=None):
  """`auroc` on dense ranks of the scores (ranks computed once, reused across resamples)."""
  rank, labels = np.asarray(rank, np.int64), np.asarray(labels, bool)
  w = _weights(w, len(rank))
  n_ranks = int(rank.max()) + 1 if len(rank) else 0
  pos = bincount_rows(rank, w * labels, n_ranks)
  neg = bincount_rows(rank, w * ~labels, n_ranks)
  neg_below = np.cumsum(neg, axis=-1) - neg  # negatives with a strictly lower score
  # nan when either class is empty
  return _per_weighting(_divide((pos * (neg_below + 0.5 * neg)).sum(-1),
                                pos.sum(-1) * neg.sum(-1)), w)


def auroc(scores, labels, w=None) -> float:
  """Mann-Whitney AUROC = (#{s_pos > s_neg} + 1/2 #{s_pos = s_neg}) / (n_pos * n_neg).

  Counted over all (positive, negative) pairs; with weights (bootstrap multiplicities) the pair
  (i, j) counts w_i * w_j. nan when either class is empty.
  """
  return auroc_ranked(dense_rank(scores), labels, w)


def reliability_bins(confidence, correct, bins: int = 10, w=None) -> dict[str, np.ndarray]:
  """Equal-width bins on [0, 1]: bin b holds b/B <= c < (b+1)/B (c = 1 goes in the last bin).

  Per bin: centre (b + 1/2)/B, mean confidence, accuracy (share correct) and count (sum of
  weights); mean confidence and accuracy are nan in empty bins.
  """
  c, y = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
  w = _weights(w, len(c))
  b = np.clip(np.floor(c * bins).astype(np.int64), 0, bins - 1)
  count = bincount_rows(b, w, bins)
  return {"centre": (np.arange(bins) + 0.5) / bins,
          "confidence": _divide(bincount_rows(b, w * c, bins), count),
          "accuracy": _divide(bincount_rows(b, w * y, bins), count), "count": count}


def ece(confidence, correct, bins: int = 10, w=None):
  """ECE = sum_b (n_b / n) * |acc_b - conf_b| over the equal-width bins of `reliability_bins`."""
  w = _weights(w, len(np.asarray(confidence)))
  r = reliability_bins(confidence, correct, bins, w)
  gap = np.where(r["count"] > 0, r["count"] * np.abs(r["accuracy"] - r["confidence"]), 0.0)
  return _per_weighting(_divide(gap.sum(-1), r["count"].sum(-1)), w)


# ---------------------------------------------------------------- bootstrap


def draws(n_items: int, n: int, seed: int) -> Iterator[np.ndarray]:
  """n resamples of item indices 0..n_items-1 with replacement; the one source of draws."""
  rng = np.random.default_rng(seed)
  for _ in range(n if n_items else 0):
    yield rng.integers(0, n_items, size=n_items)


def percentile_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
  """Percentile interval (linear interpolation) of the finite values; (nan, nan) if none.

  Resamples where a metric is undefined (e.g. AUROC with one class empty) are left out.
  """
  v = np.asarray(list(values), np.float64)
  v = v[np.isfinite(v)]
  if not len(v):
    return NAN, NAN
  low, high = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
  return float(low), float(high)
