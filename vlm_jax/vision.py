"""The Qwen2.5-VL vision tower: patch embed, window/full attention blocks, patch merger.

Host side (numpy, `vision_layout`): from `grid_thw` it derives the window permutation, the
attention segments (112 px windows; whole frames for the `fullatt_block_indexes` blocks) as
slot tables, and rotary coordinates. Device side (`vision_forward`): a `lax.scan` over the
blocks, each attending within its segments, computed as a batch of segments (no [P, P] mask).

Token order (P patches, U = merge_unit patches per merged token, M = P/U merged tokens):
the processor emits patches image by image, frame by frame, each 2x2 merge group contiguous.
Blocks run in *window order* (merged tokens grouped by 112 px window, `window_index`); the merger
output is put back into processor order with the inverse permutation.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from vlm_jax import layers, rope
from vlm_jax.config import VisionConfig


def window_index(grid_thw: np.ndarray, config: VisionConfig) -> tuple[np.ndarray, np.ndarray]:
  """Merged-token permutation into window order, and the window id of each permuted token.

  Each frame's merged grid (h/2, w/2) is padded up to whole windows of `window_merged` tokens a
  side; windows are taken row-major and the padding dropped, so edge windows are smaller.
  """
  ws = config.window_merged
  merge = config.spatial_merge_size
  perm, window_ids, offset, next_window = [], [], 0, 0
  for t, h, w in np.asarray(grid_thw).tolist():
    gh, gw = h // merge, w // merge
    nh, nw = -(-gh // ws), -(-gw // ws)
    index = np.full((t, nh * ws, nw * ws), -1, np.int64)
    index[:, :gh, :gw] = np.arange(t * gh * gw).reshape(t, gh, gw)
    wid = np.broadcast_to(np.arange(t * nh * nw).reshape(t, nh, 1, nw, 1), (t, nh, ws, nw, ws))
    index = index.reshape(t, nh, ws, nw, ws).transpose(0, 1, 3, 2, 4).reshape(-1)
    wid = wid.transpose(0, 1, 3, 2, 4).reshape(-1)
    keep = index >= 0
    perm.append(index[keep] + offset)
    window_ids.append(wid[keep] + next_window)
    offset += t * gh * gw
    next_window += t * nh * nw
  if not perm:
    return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
  return np.concatenate(perm), np.concatenate(window_ids)


def _runs_to_slots(segment: np.ndarray, width: int | None = None):
  """Contiguous runs of equal ids -> (slots [runs, width] with sentinel len(segment), inverse [P]).

  inverse[p] is the flat position (row * width + column) of patch p in `slots`.
  """
  num = len(segment)
  if num and np.any(np.diff(segment) < 0):
    raise AssertionError("vision segments must be contiguous in window order")
  starts = np.flatnonzero(np.r_[True, np.diff(segment) != 0]) if num else np.zeros(0, np.int64)
  lengths = np.diff(np.r_[starts, num])
  width = int(lengths.max(initial=1)) if width is None else width
  column = np.arange(num) - np.repeat(starts, lengths)
  row = np.repeat(np.arange(len(starts)), lengths)
  slots = np.full((max(len(starts), 1), width), num, np.int64)
  slots[row, column] = np.arange(num)
  return slots, row * width + column


def vision_layout(grid_thw: np.ndarray, config: VisionConfig) -> dict:
  """Index arrays (int32 numpy) and rotary tables for one vision call over `grid_thw`.

  window_index / reverse_index [M]: merged tokens into window order and back.
  rope_cos / rope_sin [P, head_dim] float32: the rotary cos/sin of each patch's (h, w), window
  order (`rope.vision_cos_sin`, computed here on the host).
  window_slots [Sw, Lw] / full_slots [Sf, Lf]: patches (window order) of each attention segment
  (a 112 px window / a whole frame), padded with the sentinel P; *_inverse [P]: where each patch
  sits in the flattened slots. Attention runs per row: cost Sw*Lw^2 instead of P^2.
  """
  grid_thw = np.asarray(grid_thw, np.int64).reshape(-1, 3)
  unit = config.merge_unit
  perm, merged_window = window_index(grid_thw, config)
  patch_perm = (perm[:, None] * unit + np.arange(unit)).reshape(-1)
  frames = np.repeat(np.arange(int(grid_thw[:, 0].sum())),
                     np.repeat(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0]))
  window_slots, window_inverse = _runs_to_slots(np.repeat(merged_window, unit),
                                                config.window_merged ** 2 * unit)
  full_slots, full_inverse = _runs_to_slots(frames[patch_perm])
  pos_hw = rope.vision_position_ids(grid_thw, config.spatial_merge_size)[patch_perm]
  out = dict(window_index=perm, reverse_index=np.argsort(perm),
             window_slots=window_slots, window_inverse=window_inverse,
             full_slots=full_slots, full_inverse=full_inverse)
  out = {k: v.astype(np.int32) for k, v in out.items()}
  out["rope_cos"], out["rope_sin"] = rope.vision_cos_sin(pos_hw, config.head_dim,
                                                         config.rope_theta)
  return out


def _pad_slots(slots, inverse, num_old, num_new, rows, width):
  """Grow a slot table to [rows, width] for num_new patches (the new ones in rows of their own)."""
  slots = np.where(slots == num_old, num_new, slots)
  extra = np.arange(num_old, num_new)
  per_row = width
  new_rows = -(-len(extra) // per_row)
  used = slots.shape[0]
  if used + new_rows > rows or slots.shape[1] > width:
    raise ValueError(f"slot table {slots.shape} + {new_rows} rows does not fit ({rows}, {width})")
  out = np.full((rows, width), num_new, np.int32)
  out[:used, :slots.shape[1]] = slots
  row, col = np.divmod(np.arange(len(extra)), per_row)
  out[used + row, col] = extra
  old_row, old_col = np.divmod(inverse, slots.shape[1])
  return out, np.concatenate([old_row * width + old_col, (used + row) * width + col]).astype(np.int32)


def pad_layout(layout: dict, num_patches: int, unit: int, window_rows: int, full_rows: int,
               full_width: int) -> dict:
  """Pad a layout to `num_patches` patches and fixed slot-table shapes (for shape buckets).

  Padding patches sit after the real ones, in segments of their own, so they never mix with
  real patches; their merged outputs are dropped by the caller.
  """
  num = layout["rope_cos"].shape[0]
  merged, new_merged = num // unit, num_patches // unit
  fresh = np.arange(merged, new_merged, dtype=np.int32)
  out = dict(layout)
  out["window_index"] = np.concatenate([layout["window_index"], fresh])
  out["reverse_index"] = np.concatenate([layout["reverse_index"], fresh])
  for key, angle_zero in (("rope_cos", 1.0), ("rope_sin", 0.0)):  # padding patches sit at (0, 0)
    pad = np.full((num_patches - num, layout[key].shape[1]), angle_zero, np.float32)
    out[key] = np.concatenate([layout[key], pad])
  out["window_slots"], out["window_inverse"] = _pad_slots(
      layout["window_slots"], layout["window_inverse"], num, num_patches, window_rows,
      layout["window_slots"].shape[1])
  out["full_slots"], out["full_inverse"] = _pad_slots(
      layout["full_slots"], layout["full_inverse"], num, num_patches, full_rows, full_width)
  return out


def check_grid(grid_thw: np.ndarray, config: VisionConfig, name: str) -> np.ndarray:
  grid = np.asarray(grid_thw, np.int64)
  if grid.ndim != 2 or grid.shape[1] != 3:
    raise ValueError(f"{name} must have shape [num, 3] (t, h, w), got {grid.shape}")
  m = config.spatial_merge_size
  bad = [i for i, (t, h, w) in enumerate(grid.tolist()) if t < 1 or h % m or w % m or h < m or w < m]
  if bad:
    raise ValueError(f"{name} rows {bad} are not positive multiples of spatial_merge_size={m}: "
                     f"{grid[bad].tolist()}")
  return grid


def segment_attention(q, k, v, slots, inverse, q_chunk: int = 1024):
  """Attention within segments of packed patches: q, k, v [P, N, H] -> [P, N, H].

  slots [S, L] lists each segment's patches (sentinel P = empty); inverse [P] is each patch's
  flat slot. Segments become a batch of S rows of length L, so no [P, P] array is ever built;
  segments longer than `q_chunk` run their queries `q_chunk` at a time (`lax.map`), bounding the
  logits to [N, S, q_chunk, L]. Heads-major layout ([N, S, L, H]): one transpose per operand,
  then plain batched matmuls (1.5-1.9x faster on CPU than [S, L, N, H], whose einsums transpose
  on every call).
  """
  def rows(a):  # [P, N, H] -> [N, S, L, H], the sentinel slot reading zeros
    a = jnp.concatenate([a, jnp.zeros((1,) + a.shape[1:], a.dtype)])
    return a.transpose(1, 0, 2)[:, slots]
  n, (s, length) = q.shape[1], slots.shape
  valid = slots < q.shape[0]
  keys, values = rows(k), rows(v)

  def attend(qs, mask):  # qs [N, S, C, H], mask [S, C, L] -> [N, S, C, H]
    logits = jnp.einsum("NSCH,NSLH->NSCL", qs, keys, preferred_element_type=jnp.float32)
    logits = jnp.where(mask[None], logits * (q.shape[-1] ** -0.5), layers.MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    return jnp.einsum("NSCL,NSLH->NSCH", probs, values)

  queries, mask = rows(q), valid[:, None, :] & valid[:, :, None]
  if length <= q_chunk:
    out = attend(queries, mask)
  else:
    chunks = -(-length // q_chunk)
    extra = chunks * q_chunk - length  # padded queries: computed, then dropped
    queries = jnp.pad(queries, ((0, 0), (0, 0), (0, extra), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, extra), (0, 0)))
    qc = queries.reshape(n, s, chunks, q_chunk, -1).transpose(2, 0, 1, 3, 4)
    mc = mask.reshape(s, chunks, q_chunk, length).transpose(1, 0, 2, 3)
    out = jax.lax.map(lambda a: attend(*a), (qc, mc))  # [chunks, N, S, C, H]
    out = out.transpose(1, 2, 0, 3, 4).reshape(n, s, chunks * q_chunk, -1)[:, :, :length]
  return out.reshape(n, -1, out.shape[-1])[:, inverse].transpose(1, 0, 2)


def _runs(depth: int, full_indexes) -> list[tuple[int, int, bool]]:
  """[start, stop) runs of consecutive blocks with the same attention kind (full or window)."""
  out = []
  for i in range(depth):
    full = i in full_indexes
    if out and out[-1][2] == full:
      out[-1] = (out[-1][0], i + 1, full)
    else:
      out.append((i, i + 1, full))
  return out


def unstack_blocks(stacked: dict) -> list[dict]:
  """The stacked block params as a list of per-block trees with q/k/v and gate/up fused
  (`layers.fuse_projections`), which `vision_forward` runs with a Python loop: no per-block
  slice of the weights and fewer, wider matmuls (on the 2-core CPU VM the bench tower took 80
  ms instead of 91). Costs one copy of the block weights (`Sampler` keeps one on CPU)."""
  return layers.unstack_fused(stacked)


def _block(x, p, cos, sin, is_full: bool, layout, config: VisionConfig):
  """One pre-norm ViT block on x [P, D] (no batch axis: images are packed along P)."""
  h = layers.rms_norm(x, p["norm1"]["scale"], config.norm_eps)
  heads = lambda a: a.reshape(h.shape[0], config.num_heads, config.head_dim)
  if "qkv" in p:  # fused by `unstack_blocks`
    q, k, v = map(heads, jnp.split(layers.dense(h, p["qkv"]), 3, axis=-1))
  else:
    q, k, v = (heads(layers.dense(h, p[n])) for n in ("q", "k", "v"))
  q, k = rope.apply_rope(q, cos, sin), rope.apply_rope(k, cos, sin)
  kind = "full" if is_full else "window"
  attn = segment_attention(q, k, v, layout[f"{kind}_slots"], layout[f"{kind}_inverse"])
  x = x + layers.dense(attn.reshape(x.shape), p["proj"])
  h = layers.rms_norm(x, p["norm2"]["scale"], config.norm_eps)
  return x + layers.gated_mlp(h, p["mlp"], config.hidden_act)


def vision_forward(params: dict, config: VisionConfig, pixel_values: jax.Array,
                   layout: dict) -> jax.Array:
  """pixel_values [P, patch_dim] -> merged embeddings [M, out_hidden_size] in processor order.

  `layout`: the `vision_layout` arrays (a dict of arrays, so it can cross a jit boundary).
  """
  dtype = params["patch_embed"]["kernel"].dtype
  x = pixel_values.astype(dtype) @ params["patch_embed"]["kernel"]
  num, unit = x.shape[0], config.merge_unit
  x = x.reshape(num // unit, unit, -1)[layout["window_index"]].reshape(num, -1)
  cos, sin = layout["rope_cos"], layout["rope_sin"]  # host-computed (`rope.vision_cos_sin`)
  blocks = params["blocks"]
  if isinstance(blocks, (list, tuple)):  # per-block trees (`unstack_blocks`): a Python loop
    for i, p in enumerate(blocks):
      x = _block(x, p, cos, sin, i in config.fullatt_block_indexes, layout, config)
  else:  # runs of consecutive blocks of one attention kind, each a scan (no lax.cond per block)
    for start, stop, full in _runs(config.depth, config.fullatt_block_indexes):
      run = jax.tree.map(lambda a, lo=start, hi=stop: a[lo:hi], blocks)
      x, _ = jax.lax.scan(lambda x, p, f=full: (_block(x, p, cos, sin, f, layout, config), None),
                          x, run)
  m = params["merger"]
  x = layers.rms_norm(x, m["norm"]["scale"], config.norm_eps).reshape(num // unit, -1)
  x = layers.dense(layers.activation("gelu")(layers.dense(x, m["fc1"])), m["fc2"])
  return x[layout["reverse_index"]]

