"""The forward pass: HF processor arrays -> logits, on one functional model core.

Two stages:
  * `prepare_inputs` (host, numpy): validates the arrays the HF Qwen2.5-VL processor returns and
    derives what depends on their *values*: M-RoPE positions and rope deltas, the vision window
    layout, and where vision embeddings go in the token sequence.
  * `apply` (device, jittable): embeddings, the vision tower, the decoder, with an optional KV
    cache. The sampler, the log-prob kernel, GRPO and the judges all call `apply`.
`forward` is the two together plus the LM head.
"""

from __future__ import annotations

import functools

import numpy as np
import jax

from vlm_jax import buckets, rope, sharding, text, vision
from vlm_jax.config import ModelConfig


def _as_2d(name: str, x) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 1:
    x = x[None]
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [batch, seq], got {x.shape}")
  return x


def _check_visual(config: ModelConfig, input_ids, pixels, grid, token_id, kind: str):
  """Validate one modality; returns (pixels, grid) or (None, None) when absent."""
  n_tokens = int((input_ids == token_id).sum())
  pv_name = "pixel_values" if kind == "image" else "pixel_values_videos"
  if pixels is None:
    if n_tokens:
      raise ValueError(f"input_ids hold {n_tokens} {kind} tokens but {pv_name} is None")
    return None, None
  if grid is None:
    raise ValueError(f"{pv_name} given without {kind}_grid_thw")
  grid = vision.check_grid(grid, config.vision, f"{kind}_grid_thw")
  pixels = np.asarray(pixels)
  want_patches = int(grid.prod(-1).sum())
  if pixels.shape != (want_patches, config.vision.patch_dim):
    raise ValueError(f"{pv_name} has shape {pixels.shape}; {kind}_grid_thw {grid.tolist()} needs "
                     f"({want_patches}, {config.vision.patch_dim})")
  want_tokens = want_patches // config.vision.merge_unit
  if n_tokens != want_tokens:
    per_sample = (input_ids == token_id).sum(-1).tolist()
    raise ValueError(f"input_ids hold {n_tokens} {kind} tokens (per sample {per_sample}) but "
                     f"{kind}_grid_thw {grid.tolist()} gives {want_tokens} merged patches")
  return pixels, grid


def prepare_inputs(config: ModelConfig, input_ids, attention_mask=None, pixel_values=None,
                   image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
                   second_per_grid_ts=None, mm_token_type_ids=None, position_ids=None,
                   rope_resume: str = "spatial") -> dict:
  """Validate HF-processor arrays and build the device inputs of `apply` (a dict of arrays).

  Returns: input_ids int32 [B, T]; token_mask bool [B, T]; positions int32 [3, B, T];
  rope_deltas int32 [B, 1]; and with images/videos: pixel_values [P, patch_dim] (images first,
  then videos), vision_layout (dict of index arrays), vision_scatter int32 [M] (flat B*T slots
  of the vision tokens, images then videos, in sequence order) and vision_grid_thw int64 [I, 3]
  (host only: `buckets.pad_vision` uses it to split the vision work by batch shard; `apply`
  never reads it, and `forward` / the sampler drop it before their programs).
  """
  ids = _as_2d("input_ids", input_ids).astype(np.int64)
  mask = np.ones_like(ids) if attention_mask is None else _as_2d("attention_mask", attention_mask)
  if mask.shape != ids.shape:
    raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
  vocab = config.text.vocab_size
  if ids.size and (ids.min() < 0 or ids.max() >= vocab):
    raise ValueError(f"input_ids outside [0, {vocab}): min {ids.min()}, max {ids.max()}")
  if config.vision is None:
    if pixel_values is not None or pixel_values_videos is not None:
      raise ValueError(f"{config.architecture} is a text-only model: no pixel inputs")
    img = img_grid = vid = vid_grid = None
    mm_token_type_ids = np.zeros_like(ids)
  else:
    img, img_grid = _check_visual(config, ids, pixel_values, image_grid_thw,
                                  config.image_token_id, "image")
    vid, vid_grid = _check_visual(config, ids, pixel_values_videos, video_grid_thw,
                                  config.video_token_id, "video")
  if mm_token_type_ids is None:
    mm_token_type_ids = ((ids == config.image_token_id) * 1 + (ids == config.video_token_id) * 2)
  if position_ids is None:
    positions, deltas = rope.get_rope_index(
        ids, mm_token_type_ids, img_grid, vid_grid, second_per_grid_ts, mask,
        spatial_merge_size=config.vision.spatial_merge_size if config.vision else 2,
        tokens_per_second=config.vision.tokens_per_second if config.vision else 1,
        resume=rope_resume)
  else:
    positions = np.asarray(position_ids)
    if positions.ndim == 3 and positions.shape[0] == 4:
      positions = positions[1:]  # transformers 5's [text; t; h; w]: row 0 only marks packing
    if positions.shape == ids.shape:
      positions = np.broadcast_to(positions, (3,) + ids.shape)
    if positions.shape != (3,) + ids.shape:
      raise ValueError(f"position_ids shape {np.shape(position_ids)}: want [B, T], [3, B, T] "
                       f"or [4, B, T] with [B, T] = {list(ids.shape)} (input_ids)")
    deltas = positions.max(axis=(0, 2))[:, None] + 1 - mask.sum(-1, keepdims=True)
  inputs = {"input_ids": ids.astype(np.int32), "token_mask": mask.astype(bool),
            "positions": positions.astype(np.int32), "rope_deltas": deltas.astype(np.int32)}
  if img is not None or vid is not None:
    pixels = [p for p in (img, vid) if p is not None]
    grids = [g for g in (img_grid, vid_grid) if g is not None]
    layout = vision.vision_layout(np.concatenate(grids), config.vision)
    inputs["pixel_values"] = np.concatenate(pixels).astype(np.float32)
    inputs["vision_layout"] = layout
    slots = [np.flatnonzero(ids == t) for t, p in
             ((config.image_token_id, img), (config.video_token_id, vid)) if p is not None]
    inputs["vision_scatter"] = np.concatenate(slots).astype(np.int32)
    inputs["vision_grid_thw"] = np.concatenate(grids)
  return inputs


def pad_batch(inputs: dict, multiple: int) -> dict:
  """Append fully-masked rows so the batch divides `multiple` (the mesh's batch axes)."""
  b = inputs["input_ids"].shape[0]
  extra = -b % multiple
  if not extra:
    return inputs
  out = dict(inputs)
  for name, axis in (("input_ids", 0), ("token_mask", 0), ("rope_deltas", 0), ("positions", 1)):
    if name not in inputs:
      continue
    widths = [(0, 0)] * inputs[name].ndim
    widths[axis] = (0, extra)
    out[name] = np.pad(inputs[name], widths)
  return out  # vision_scatter holds flat b*T+t slots: rows appended at the end leave them valid


def embed(params: dict, config: ModelConfig, inputs: dict, mesh=None) -> jax.Array:
  """Token embeddings [B, T, D] with vision-tower outputs written into the vision-token slots.

  Vision inputs split by batch shard (`buckets.pad_vision(shards=S)`: pixel_values
  [S, P, patch_dim], every layout array and vision_scatter with a leading S, scatter slots
  local to the shard's B/S rows) run the tower once per shard, vmapped: on a mesh each batch
  shard computes only its own rows' images, not every image of the batch. With the `mesh` the
  inputs are split over, the embedded rows are split by batch (`sharding.constrain_batch`)."""
  x = sharding.constrain_batch(params["text"]["embed"]["embedding"][inputs["input_ids"]], mesh)
  if "pixel_values" not in inputs:
    return x
  b, t, d = x.shape
  # mode="drop": bucket padding points its merged tokens past the end (see buckets.py)
  put = lambda rows, slots, feats: rows.at[slots].set(feats.astype(rows.dtype), mode="drop")
  tower = lambda pixels, layout: vision.vision_forward(params["vision"], config.vision, pixels,
                                                       layout)
  if inputs["pixel_values"].ndim == 2:
    feats = tower(inputs["pixel_values"], inputs["vision_layout"])
    return put(x.reshape(b * t, d), inputs["vision_scatter"], feats).reshape(b, t, d)
  shards = inputs["pixel_values"].shape[0]
  feats = jax.vmap(tower)(inputs["pixel_values"], inputs["vision_layout"])
  rows = x.reshape(shards, b // shards * t, d)
  return jax.vmap(put)(rows, inputs["vision_scatter"], feats).reshape(b, t, d)


def apply(params: dict, config: ModelConfig, inputs: dict, cache: dict | None = None,
          last_only: bool = False, mesh=None) -> tuple[jax.Array, dict | None]:
  """Final hidden states [B, T, D] ([B, 1, D], the last position's, with `last_only`; see
  `text.decoder`) and the updated KV cache (None in, None out). `mesh`: the one the inputs
  are split over (see `embed`)."""
  x = embed(params, config, inputs, mesh)
  return text.decoder(params["text"], config.text, x, inputs["positions"], inputs["token_mask"],
                      cache, last_only=last_only)


@functools.partial(jax.jit, static_argnums=(1, 3))
def _logits(params, config: ModelConfig, inputs, mesh=None):
  hidden, _ = apply(params, config, inputs, mesh=mesh)
  return text.lm_head(params["text"], config.text, hidden)


def forward(params: dict, config: ModelConfig, input_ids, attention_mask=None, pixel_values=None,
            image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
            second_per_grid_ts=None, mm_token_type_ids=None, position_ids=None,
            mesh=None) -> jax.Array:
  """float32 logits [B, T, V] for the arrays HF's Qwen2.5-VL processor returns.

  With a `mesh` (params placed by `load_hf(..., mesh=)` or `sharding.shard_params`), the batch is
  padded to a multiple of the batch mesh axes and split over them; the logits come back global.

  Always uses 3-D M-RoPE positions (derived from input_ids when mm_token_type_ids is absent),
  unlike transformers 5, which silently falls back to 1-D positions without mm_token_type_ids.
  Logits at padding positions are meaningless.
  """
  inputs = prepare_inputs(config, input_ids, attention_mask, pixel_values, image_grid_thw,
                          pixel_values_videos, video_grid_thw, second_per_grid_ts,
                          mm_token_type_ids, position_ids)
  inputs.pop("rope_deltas")
  if mesh is None:
    inputs.pop("vision_grid_thw", None)
    return _logits(params, config, inputs)
  batch, shards = inputs["input_ids"].shape[0], sharding.batch_size_multiple(mesh)
  inputs = pad_batch(inputs, shards)
  if "pixel_values" in inputs:  # each batch shard runs the tower on its own rows' images
    inputs = buckets.pad_vision(inputs, config.vision, shards=shards)
  return _logits(params, config, sharding.shard_inputs(inputs, mesh), mesh)[:batch]


@functools.partial(jax.jit, static_argnums=1)
def _vision(params, config: ModelConfig, pixel_values, layout):
  return vision.vision_forward(params["vision"], config.vision, pixel_values, layout)


def vision_embeddings(params: dict, config: ModelConfig, pixel_values, grid_thw) -> jax.Array:
  """Merged vision embeddings [M, D] (what transformers' `get_image_features` concatenates)."""
  grid = vision.check_grid(grid_thw, config.vision, "grid_thw")
  layout = vision.vision_layout(grid, config.vision)
  return _vision(params, config, np.asarray(pixel_values, np.float32), layout)
