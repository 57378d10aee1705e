"""Shape buckets, so a stream of requests of varying size compiles a handful of programs.

Three sizes vary per request: batch, prompt length and the number of vision patches. Each is
rounded up to the next bucket (powers of two and 1.5x powers of two). Padding is inert:
  * prompt length: extra *left* padding (attention mask 0), so the last column stays the last
    real token of every row;
  * batch: extra rows that are all padding;
  * vision patches: extra patches in segments of their own (they attend only to themselves) whose
    merged outputs are scattered to an out-of-range slot and dropped.
"""

from __future__ import annotations

import numpy as np


def bucket(n: int, minimum: int = 1) -> int:
  """Smallest of {2^k, 3*2^(k-1)} that is >= max(n, minimum)."""
  n = max(int(n), minimum)
  size = 1
  while True:
    for candidate in (size, size * 3 // 2):
      if candidate >= n:
        return candidate
    size *= 2


def left_align(batch: dict, length: int | None = None) -> dict:
  """HF processor arrays with every row's real tokens moved to the right end, padded to `length`.

  Rows keep their order, so pixel_values (consumed in row order) stay valid.
  """
  ids = np.asarray(batch["input_ids"])
  mask = np.asarray(batch.get("attention_mask", np.ones_like(ids)))
  length = length or ids.shape[1]
  if length < ids.shape[1]:
    raise ValueError(f"bucket length {length} < prompt length {ids.shape[1]}")
  out = dict(batch)
  per_row = [k for k in ("input_ids", "attention_mask", "mm_token_type_ids") if k in batch]
  for key in per_row:
    src = np.asarray(batch[key]) if key != "attention_mask" else mask
    dst = np.zeros((ids.shape[0], length), src.dtype)
    for b in range(ids.shape[0]):
      real = src[b][mask[b] == 1]
      dst[b, length - len(real):] = real
    out[key] = dst
  if "attention_mask" not in batch:
    out["attention_mask"] = np.zeros((ids.shape[0], length), np.int64)
    out["attention_mask"][:, length - ids.shape[1]:] = 1
  return out


def pad_vision(inputs: dict, num_patches: int, unit: int) -> dict:
  """Pad `prepare_inputs` vision arrays to `num_patches` patches (a multiple of `unit`)."""
  pixels = inputs["pixel_values"]
  extra = num_patches - pixels.shape[0]
  if extra < 0 or extra % unit:
    raise ValueError(f"cannot pad {pixels.shape[0]} patches to {num_patches} (unit {unit})")
  if not extra:
    return inputs
  layout = dict(inputs["vision_layout"])
  merged, extra_merged = pixels.shape[0] // unit, extra // unit
  fresh = np.arange(merged, merged + extra_merged, dtype=np.int32)
  layout["window_index"] = np.concatenate([layout["window_index"], fresh])
  layout["reverse_index"] = np.concatenate([layout["reverse_index"], fresh])
  layout["pos_hw"] = np.concatenate([layout["pos_hw"], np.zeros((extra, 2), np.int32)])
  for key in ("window_segment", "full_segment"):
    own = layout[key].max() + 1 + np.arange(extra, dtype=np.int32)
    layout[key] = np.concatenate([layout[key], own])
  out = dict(inputs, vision_layout=layout)
  out["pixel_values"] = np.concatenate([pixels, np.zeros((extra, pixels.shape[1]), pixels.dtype)])
  past_end = np.full(extra_merged, np.iinfo(np.int32).max, np.int32)  # any batch size: dropped
  out["vision_scatter"] = np.concatenate([inputs["vision_scatter"], past_end])
  return out
