"""Rotary position embeddings: 1-D, the vision tower's 2-D (h, w), and M-RoPE with `get_rope_index`.

Convention (transformers' `rotate_half`): the head dim is split in halves [x1, x2] and rotated as
x*cos + [-x2, x1]*sin, with cos/sin = cat(freqs, freqs). All angle maths is float32.

`get_rope_index`, `vision_position_ids` and `vision_cos_sin` run on the host in numpy: they depend
on the values of `input_ids` and `image_grid_thw`, which decide array shapes anyway.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


def inv_freq(dim: int, theta: float) -> np.ndarray:
  """1 / theta^(2i/dim) for i < dim/2, float32 as transformers computes it: the float32 exponent,
  the power rounded to float32, then a float32 reciprocal. The power is taken in float64 and
  rounded once (correctly rounded): numpy's float32 `**` is off by an ulp in up to 14 of 64
  entries on AVX-512 hosts, which torch's is not, and the angle error grows with position."""
  exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
  power = (np.float64(np.float32(theta)) ** exponent.astype(np.float64)).astype(np.float32)
  return np.float32(1.0) / power


def rotate_half(x: jax.Array) -> jax.Array:
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x: [..., T, N, H]; cos/sin: [..., T, H] float32. Rotation in float32, result in x.dtype."""
  x32 = x.astype(jnp.float32)
  out = x32 * cos[..., None, :] + rotate_half(x32) * sin[..., None, :]
  return out.astype(x.dtype)


def mrope_cos_sin(positions: jax.Array, head_dim: int, theta: float,
                  section: tuple[int, ...] | None) -> tuple[jax.Array, jax.Array]:
  """cos/sin [B, T, H] from positions [3, B, T] (t, h, w streams) or [B, T] (1-D).

  M-RoPE: frequency i takes its angle from stream 0 for the first section[0] frequencies, from
  stream 1 for the next section[1], from stream 2 for the last section[2].
  """
  if section is None and positions.ndim == 3:
    positions = positions[0]  # text-only models: the three streams are equal
  freqs_per_stream = positions[..., None].astype(jnp.float32) * inv_freq(head_dim, theta)
  if positions.ndim == 2:
    freqs = freqs_per_stream
  else:
    bounds = np.cumsum((0,) + tuple(section))
    freqs = jnp.concatenate(
        [freqs_per_stream[i % 3, ..., bounds[i]:bounds[i + 1]] for i in range(len(section))], -1)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def vision_cos_sin(pos_hw: np.ndarray, head_dim: int,
                   theta: float) -> tuple[np.ndarray, np.ndarray]:
  """cos/sin [P, H] float32 for patch coordinates pos_hw [P, 2]: H/4 frequencies each for h and w.

  Host side (numpy), shipped with the vision layout: computed inside the vision tower's jit,
  XLA CPU sank cos/sin into every layer's scan body and fused them into the per-element gather
  of each attention segment, recomputing two transcendentals per q/k element per layer (~3% of
  the tower's time on the sampler benchmark's images).
  """
  freqs = np.asarray(pos_hw)[..., None].astype(np.float32) * inv_freq(head_dim // 2, theta)
  freqs = np.concatenate([freqs[:, 0], freqs[:, 1]], axis=-1)  # [P, H/2]
  emb = np.concatenate([freqs, freqs], axis=-1)
  return np.cos(emb), np.sin(emb)  # float32, as emb


def vision_position_ids(grid_thw: np.ndarray, merge: int) -> np.ndarray:
  """(h, w) coordinates [P, 2] of every patch, in the processor's merge-group order."""
  out = []
  for t, h, w in np.asarray(grid_thw).tolist():
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = (h // merge, merge, w // merge, merge)
    hh = hh.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
    ww = ww.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
    out.append(np.tile(np.stack([hh, ww], -1), (t, 1)))
  return np.concatenate(out, 0) if out else np.zeros((0, 2), np.int64)


def _vision_block_positions(start: int, grid_thw, merge: int, time_interval) -> np.ndarray:
  """time_interval: a numpy float scalar; the temporal positions are rounded in its dtype."""
  t, h, w = (int(x) for x in grid_thw)
  tt = (np.arange(t).astype(time_interval.dtype) * time_interval).astype(np.int64) + start
  # (truncation, as torch .long())
  hh = np.arange(h // merge) + start
  ww = np.arange(w // merge) + start
  grid = np.meshgrid(tt, hh, ww, indexing="ij")
  return np.stack(grid, 0).reshape(3, -1)


def _seconds(second_per_grid_ts) -> list:
  """The videos' seconds per temporal grid step as numpy scalars of the array's float dtype
  (float64 for integers or lists)."""
  if second_per_grid_ts is None:
    return []
  a = np.asarray(second_per_grid_ts).reshape(-1)
  return list(a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64))


def _time_interval(tokens_per_second, seconds):
  """tokens_per_second * seconds, rounded in seconds' dtype as transformers rounds it in the
  tensor it is given (a torch processor's float32, numpy's float64). Which whole number a
  temporal position truncates to can depend on it: with seconds = float32(2 / 2.4) and 2 tokens
  per second, temporal step 3 is at 5 computed in float32 and 4 in float64 (the exact product
  of that float32 value is 4.9999999). No seconds: 1 (transformers' default)."""
  if seconds is None:
    return np.float64(tokens_per_second)
  return np.asarray(tokens_per_second, seconds.dtype) * seconds


def get_rope_index(input_ids: np.ndarray, mm_token_type_ids: np.ndarray,
                   image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None,
                   attention_mask=None, *, spatial_merge_size: int = 2,
                   tokens_per_second: float = 2, resume: str = "spatial"):
  """M-RoPE positions [3, B, T] and deltas [B, 1]: a later token at real-token index n (padding
  not counted) gets position n + delta on all three streams, the position it would get as more
  text at the end of the sequence (what the sampler decodes with, and what the log-prob kernel
  gives a sampled response, so rollout and training positions agree).

  The deltas equal transformers' where the prompt's highest position is its last token's; after
  a video whose temporal positions outrun its spatial size transformers returns max + 1 - n, which
  its own `generate` does not use (it continues from the last position, as we do).

  Text tokens count up on all three streams; a vision block of grid (t, h, w) gets
  (start + t*interval, start + row, start + col) with interval = tokens_per_second *
  second_per_grid_t for videos and 1 for images. Padding (attention_mask == 0) gets position 1
  and is skipped when counting, so left and right padding give the same positions to real tokens.

  `resume` says where text continues after a vision block: "spatial" (transformers 5: start +
  max(h, w) / merge) or "max" (transformers 4 / the original Qwen code: max position + 1). The two
  differ only for videos whose temporal positions outrun their spatial size.
  """
  input_ids = np.asarray(input_ids)
  types = np.asarray(mm_token_type_ids)
  batch, length = input_ids.shape
  mask = np.ones_like(input_ids, bool) if attention_mask is None else np.asarray(attention_mask) == 1
  grids = {1: iter(np.asarray(image_grid_thw).tolist() if image_grid_thw is not None else []),
           2: iter(np.asarray(video_grid_thw).tolist() if video_grid_thw is not None else [])}
  seconds = iter(_seconds(second_per_grid_ts))
  positions = np.ones((3, batch, length), np.int64)
  deltas = np.zeros((batch, 1), np.int64)
  for b in range(batch):
    kinds = types[b][mask[b]]
    chunks, pos, i = [], 0, 0
    while i < len(kinds):
      j = i
      while j < len(kinds) and kinds[j] == kinds[i]:
        j += 1
      if kinds[i] == 0:
        chunks.append(np.broadcast_to(np.arange(j - i) + pos, (3, j - i)))
        pos += j - i
      else:
        grid = next(grids[int(kinds[i])])
        interval = (_time_interval(tokens_per_second, next(seconds, None)) if kinds[i] == 2
                    else np.float64(1))
        block = _vision_block_positions(pos, grid, spatial_merge_size, interval)
        chunks.append(block)
        pos = (int(block.max()) + 1 if resume == "max"
               else pos + max(grid[1], grid[2]) // spatial_merge_size)
      i = j
    llm = np.concatenate(chunks, 1) if chunks else np.zeros((3, 0), np.int64)
    positions[:, b, mask[b]] = llm
    deltas[b, 0] = pos - len(kinds)  # `pos`: where the next text token goes
  return positions, deltas


def text_positions(attention_mask: np.ndarray) -> np.ndarray:
  """1-D positions [B, T] for text-only inputs: count over real tokens, padding at 1."""
  mask = np.asarray(attention_mask)
  pos = np.cumsum(mask, -1) - 1
  return np.where(mask == 1, pos, 1).astype(np.int64)
