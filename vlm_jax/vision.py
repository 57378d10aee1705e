"""The Qwen2.5-VL vision tower: patch embed, window/full attention blocks, patch merger.

Host side (numpy, `vision_layout`): from `grid_thw` it derives the window permutation, per-token
segment ids for window and full attention, and rotary coordinates. Device side (`vision_forward`):
a `lax.scan` over the blocks, each attending within its segment ids.

Token order (P patches, U = merge_unit patches per merged token, M = P/U merged tokens):
the processor emits patches image by image, frame by frame, each 2x2 merge group contiguous.
Blocks run in *window order* (merged tokens grouped by 112 px window, `window_index`); the merger
output is put back into processor order with the inverse permutation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import jax
import jax.numpy as jnp

from vlm_jax import layers, rope
from vlm_jax.config import VisionConfig


@dataclasses.dataclass(frozen=True)
class VisionLayout:
  """Host-computed index arrays for one vision call (all numpy)."""
  window_index: np.ndarray   # [M] merged-token permutation into window order
  reverse_index: np.ndarray  # [M] its inverse
  pos_hw: np.ndarray         # [P, 2] rotary (h, w) per patch, window order
  window_segment: np.ndarray  # [P] window id per patch, window order
  full_segment: np.ndarray    # [P] (image, frame) id per patch, window order


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


def vision_layout(grid_thw: np.ndarray, config: VisionConfig) -> VisionLayout:
  grid_thw = np.asarray(grid_thw, np.int64).reshape(-1, 3)
  unit = config.merge_unit
  perm, merged_window = window_index(grid_thw, config)
  patch_perm = (perm[:, None] * unit + np.arange(unit)).reshape(-1)
  frames = np.repeat(np.arange(int(grid_thw[:, 0].sum())),
                     np.repeat(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0]))
  return VisionLayout(
      window_index=perm, reverse_index=np.argsort(perm),
      pos_hw=rope.vision_position_ids(grid_thw, config.spatial_merge_size)[patch_perm],
      window_segment=np.repeat(merged_window, unit), full_segment=frames[patch_perm])


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


def _block(x, p, cos, sin, mask, config: VisionConfig):
  """One pre-norm ViT block on x [P, D] (no batch axis: images are packed along P)."""
  h = layers.rms_norm(x, p["norm1"]["scale"], config.norm_eps)
  q, k, v = (layers.dense(h, p[n]).reshape(h.shape[0], config.num_heads, config.head_dim)
             for n in ("q", "k", "v"))
  q, k = rope.apply_rope(q, cos, sin), rope.apply_rope(k, cos, sin)
  attn = layers.attention(q[None], k[None], v[None], mask[None])[0]
  x = x + layers.dense(attn.reshape(x.shape), p["proj"])
  h = layers.rms_norm(x, p["norm2"]["scale"], config.norm_eps)
  return x + layers.gated_mlp(h, p["mlp"], config.hidden_act)


def vision_forward(params: dict, config: VisionConfig, pixel_values: jax.Array,
                   layout: dict) -> jax.Array:
  """pixel_values [P, patch_dim] -> merged embeddings [M, out_hidden_size] in processor order.

  `layout` holds the VisionLayout arrays (as a dict of arrays, so it can cross a jit boundary).
  """
  dtype = params["patch_embed"]["kernel"].dtype
  x = pixel_values.astype(dtype) @ params["patch_embed"]["kernel"]
  num, unit = x.shape[0], config.merge_unit
  x = x.reshape(num // unit, unit, -1)[layout["window_index"]].reshape(num, -1)
  cos, sin = rope.vision_cos_sin(layout["pos_hw"], config.head_dim, config.rope_theta)
  window_mask = layout["window_segment"][:, None] == layout["window_segment"][None, :]
  full_mask = layout["full_segment"][:, None] == layout["full_segment"][None, :]
  is_full = np.isin(np.arange(config.depth), config.fullatt_block_indexes)

  def body(x, xs):
    p, full = xs
    return _block(x, p, cos, sin, jnp.where(full, full_mask, window_mask), config), None

  x, _ = jax.lax.scan(body, x, (params["blocks"], jnp.asarray(is_full)))
  m = params["merger"]
  x = layers.rms_norm(x, m["norm"]["scale"], config.norm_eps).reshape(num // unit, -1)
  x = layers.dense(layers.activation("gelu")(layers.dense(x, m["fc1"])), m["fc2"])
  return x[layout["reverse_index"]]


def layout_arrays(layout: VisionLayout) -> dict:
  return {f.name: getattr(layout, f.name) for f in dataclasses.fields(layout)}
