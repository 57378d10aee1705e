"""Shape buckets, so a stream of requests of varying size compiles a handful of programs.

Four sizes vary per request: batch, prompt length, the number of vision patches and
max_new_tokens. Each is rounded up to the next bucket (powers of two and 1.5x powers of two;
max_new_tokens above 64 to a multiple of 64, `new_tokens_bucket`). Padding is inert:
  * prompt length: extra *left* padding (attention mask 0), so the last column stays the last
    real token of every row;
  * batch: extra rows that are all padding;
  * vision patches: extra patches in attention segments of their own whose merged outputs are
    scattered to an out-of-range slot and dropped; the segment tables (`vision.vision_layout`)
    get bucketed row counts and widths too;
  * max_new_tokens (`sampler.Sampler`): cache and output slots past the count, which the decode
    loop (stopping at the count, a traced value) never writes.
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


def new_tokens_bucket(n: int) -> int:
  """max_new_tokens' bucket: `bucket` up to 64, then the next multiple of 64. Unused slots stay
  under 64 tokens because the KV cache holds rows x (prompt + this) per layer: a 1.5x step
  (1100 -> 1536) would cost a GRPO rollout of 1024 rows at 7B ~20 GB of cache."""
  return bucket(n) if n <= 64 else -(-int(n) // 64) * 64


def left_align(batch: dict, length: int | None = None) -> dict:
  """HF processor arrays with every row's real tokens moved to the right end, padded to `length`
  (which may be shorter than the arrays' width: columns that are padding in every row go).

  Rows keep their order, so pixel_values (consumed in row order) stay valid.
  """
  ids = np.asarray(batch["input_ids"])
  mask = np.asarray(batch.get("attention_mask", np.ones_like(ids)))
  longest = int(mask.sum(1).max()) if ids.shape[0] else 0  # padding columns are dropped
  length = length or ids.shape[1]
  if length < longest:
    raise ValueError(f"bucket length {length} < prompt length {longest}")
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


def pad_vision(inputs: dict, config, min_patches: int = 256, shards: int = 1) -> dict:
  """Pad `prepare_inputs` vision arrays to bucketed shapes (patches, slot-table rows/widths).

  config: the VisionConfig. Real inputs are unchanged; padding patches are zeros in segments of
  their own whose merged outputs go to an out-of-range slot and are dropped in `model.embed`.
  shards > 1 (the batch mesh axes' size; the batch already padded to a multiple of it): the
  vision inputs are split by batch shard, each shard's images (those of its B/shards rows) with
  a layout and scatter slots of their own, padded to common shapes and stacked on a leading
  axis, so each batch shard runs the tower on its own images only (`model.embed`).
  """
  unit = config.merge_unit
  out = dict(inputs)
  grid = out.pop("vision_grid_thw")
  if shards == 1:
    return _pad_vision(out, out["pixel_values"], out["vision_layout"], out["vision_scatter"],
                       config, bucket(out["pixel_values"].shape[0] // unit,
                                      max(min_patches // unit, 1)) * unit, min_patches)
  parts = _split_by_shard(inputs, grid, config, shards)
  # common shapes: the largest shard's bucket, then the largest slot tables
  patches = bucket(max(p.shape[0] for p, _, _ in parts) // unit, max(min_patches // unit, 1))
  padded = [_pad_vision({}, *part, config, patches * unit, min_patches) for part in parts]
  shapes = {k: tuple(np.max([p["vision_layout"][k].shape for p in padded], 0)) for k in
            ("window_slots", "full_slots")}
  padded = [_pad_vision({}, *part, config, patches * unit, min_patches, shapes)
            for part in parts]
  out["pixel_values"] = np.stack([p["pixel_values"] for p in padded])
  out["vision_scatter"] = np.stack([p["vision_scatter"] for p in padded])
  out["vision_layout"] = {k: np.stack([p["vision_layout"][k] for p in padded])
                          for k in padded[0]["vision_layout"]}
  return out


def _split_by_shard(inputs: dict, grid, config, shards: int) -> list[tuple]:
  """Per batch shard: (pixel_values, vision_layout, vision_scatter with slots local to the
  shard's rows) of the images and videos of its rows, in their original order."""
  from vlm_jax import vision  # noqa: PLC0415 (keeps this module numpy-only at import)
  unit = config.merge_unit
  batch, length = inputs["input_ids"].shape
  if batch % shards:
    raise ValueError(f"batch {batch} does not split into {shards} shards (pad it first)")
  per_shard = batch // shards * length  # flat slots of one shard's rows
  sizes = np.asarray(grid).prod(-1)
  first_patch = np.concatenate([[0], np.cumsum(sizes)])
  first_token = first_patch // unit
  scatter = inputs["vision_scatter"]
  owner = scatter[first_token[:-1]] // per_shard  # the shard of each image's row
  parts = []
  for s in range(shards):
    mine = np.flatnonzero(owner == s)
    pixels = np.concatenate([inputs["pixel_values"][first_patch[i]:first_patch[i + 1]]
                             for i in mine] or [inputs["pixel_values"][:0]])
    slots = np.concatenate([scatter[first_token[i]:first_token[i + 1]] for i in mine]
                           or [scatter[:0]]) - s * per_shard
    parts.append((pixels, vision.vision_layout(np.asarray(grid)[mine].reshape(-1, 3), config),
                  slots.astype(np.int32)))
  return parts


def _pad_vision(out: dict, pixels, layout, scatter, config, padded: int, min_patches: int,
                shapes: dict | None = None) -> dict:
  """`out` with pixel_values, vision_layout and vision_scatter padded to `padded` patches and
  bucketed slot tables (at least `shapes`' [rows, width] per table, when given)."""
  from vlm_jax import vision  # noqa: PLC0415 (keeps this module numpy-only at import)
  unit, num = config.merge_unit, pixels.shape[0]
  extra = padded - num
  w_width = layout["window_slots"].shape[1]
  f_width = bucket(layout["full_slots"].shape[1], min_patches)
  w_rows = bucket(layout["window_slots"].shape[0] + -(-extra // w_width), padded // w_width)
  # at least 4 full-attention segments: one to three images (+ padding) share a program
  f_rows = bucket(layout["full_slots"].shape[0] + -(-extra // f_width), 4)
  if shapes:
    w_rows = max(w_rows, shapes["window_slots"][0])
    f_rows, f_width = max(f_rows, shapes["full_slots"][0]), max(f_width, shapes["full_slots"][1])
  out = dict(out)
  out["vision_layout"] = vision.pad_layout(layout, padded, unit, w_rows, f_rows, f_width)
  out["pixel_values"] = np.concatenate([pixels, np.zeros((extra, pixels.shape[1]), pixels.dtype)])
  past_end = np.full(extra // unit, np.iinfo(np.int32).max, np.int32)  # any batch size: dropped
  out["vision_scatter"] = np.concatenate([scatter, past_end])
  return out
