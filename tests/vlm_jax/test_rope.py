"""M-RoPE positions, vision coordinates and window layout vs transformers (exact integers)."""

import numpy as np
import pytest

from vlm_jax import rope, vision
from vlm_jax.config import VisionConfig
from tests.vlm_jax import hf_models

torch = pytest.importorskip("torch")

SAMPLES = {
    "left_padded_two_images": ([[3, ("image", (1, 8, 12)), 4, ("image", (1, 4, 6)), 2],
                                [5, ("image", (1, 12, 20)), 1]], "left"),
    "right_padded": ([[3, ("image", (1, 8, 12)), 4], [5, ("image", (1, 12, 20)), 9]], "right"),
    "video_and_text_only": ([[2, ("video", (4, 8, 8), 2.0), 3], [7],
                             [1, ("image", (1, 6, 6)), ("video", (2, 4, 6), 0.5), 2]], "left"),
}


@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_get_rope_index_matches_transformers(case):
  model = hf_models.hf_model("base")
  samples, padding = SAMPLES[case]
  batch = hf_models.build_batch(samples, 1176, padding)
  kw = dict(image_grid_thw=batch.get("image_grid_thw"), video_grid_thw=batch.get("video_grid_thw"),
            second_per_grid_ts=batch.get("second_per_grid_ts"),
            attention_mask=batch["attention_mask"])
  want_pos, want_delta = model.model.get_rope_index(
      torch.tensor(batch["input_ids"]), torch.tensor(batch["mm_token_type_ids"]),
      **{k: None if v is None else torch.tensor(v) for k, v in kw.items()})
  got_pos, got_delta = rope.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"], **kw,
                                           spatial_merge_size=2, tokens_per_second=2)
  real = batch["attention_mask"] == 1
  np.testing.assert_array_equal(got_pos[:, real], want_pos.numpy()[:, real])
  for b in range(len(samples)):
    positions = got_pos[:, b, real[b]]
    # the next token continues the text: last position + 1 (transformers' generate does this
    # too; its deltas are max-based, different only after a video that outruns its size)
    assert got_delta[b, 0] == positions[:, -1].max() + 1 - real[b].sum()
    if positions.max() == positions[:, -1].max():
      assert got_delta[b, 0] == want_delta.numpy()[b, 0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fractional_video_seconds_round_in_their_dtype(dtype):
  """transformers multiplies in the dtype of the second_per_grid_ts tensor it is given; for
  float32(2 / 2.4) s the third temporal step's exact product is 4.99999988: 5 in float32, 4 in
  float64. Ours follows the array's dtype."""
  if hf_models.hf_truncates_video_seconds():
    pytest.skip("this transformers truncates fractional second_per_grid_ts to an int")
  model = hf_models.hf_model("base")
  batch = hf_models.build_batch([[2, ("video", (6, 4, 4), 2 / 2.4), 3],
                                 [1, ("video", (4, 4, 6), 0.7), 2]], 1176, "left")
  seconds = np.asarray(batch["second_per_grid_ts"], np.float32).astype(dtype)
  ids, types, mask = batch["input_ids"], batch["mm_token_type_ids"], batch["attention_mask"]
  grid = batch["video_grid_thw"]
  want, _ = model.model.get_rope_index(torch.tensor(ids), torch.tensor(types),
                                       video_grid_thw=torch.tensor(grid),
                                       second_per_grid_ts=torch.tensor(seconds),
                                       attention_mask=torch.tensor(mask))
  got, _ = rope.get_rope_index(ids, types, video_grid_thw=grid, second_per_grid_ts=seconds,
                               attention_mask=mask, spatial_merge_size=2, tokens_per_second=2)
  np.testing.assert_array_equal(got[:, mask == 1], want.numpy()[:, mask == 1])
  temporal = sorted(set(got[0, 0, types[0] == 2].tolist()))
  assert temporal[3] - temporal[0] == (5 if dtype == "float32" else 4)


def test_rope_index_hand_values():
  # text(2) image(1x4x6 -> 2x3 merged) text(2); left padded by 1.
  ids = np.array([[0, 5, 5, 9, 9, 9, 9, 9, 9, 5, 5]])
  types = (ids == 9).astype(int)
  mask = np.array([[0] + [1] * 10])
  pos, delta = rope.get_rope_index(ids, types, [[1, 4, 6]], attention_mask=mask)
  np.testing.assert_array_equal(pos[0, 0], [1, 0, 1, 2, 2, 2, 2, 2, 2, 5, 6])   # t
  np.testing.assert_array_equal(pos[1, 0], [1, 0, 1, 2, 2, 2, 3, 3, 3, 5, 6])   # h
  np.testing.assert_array_equal(pos[2, 0], [1, 0, 1, 2, 3, 4, 2, 3, 4, 5, 6])   # w
  assert delta[0, 0] == 7 - 10  # max position 6, + 1, minus the number of real tokens


def test_rope_index_resume_modes_differ_only_for_long_videos():
  # video of 4 temporal patches at 2 s each, 4 tokens/s: t positions 0, 8, 16, 24; spatial 2x2.
  ids = np.array([[5] + [9] * 16 + [5]])
  types = (ids == 9) * 2
  kw = dict(video_grid_thw=[[4, 4, 4]], second_per_grid_ts=[2.0], tokens_per_second=4)
  spatial, _ = rope.get_rope_index(ids, types, **kw, resume="spatial")
  maximum, _ = rope.get_rope_index(ids, types, **kw, resume="max")
  assert spatial[0, 0, -1] == 1 + 2           # transformers 5: start + max(h, w) / merge
  assert maximum[0, 0, -1] == 1 + 24 + 1      # original Qwen code: max position + 1
  np.testing.assert_array_equal(spatial[:, :, :-1], maximum[:, :, :-1])
  # a prompt that ends with the video: the next text token goes where the resume rule puts it
  for resume, want in (("spatial", 1 + 2), ("max", 1 + 24 + 1)):
    _, delta = rope.get_rope_index(ids[:, :-1], types[:, :-1], **kw, resume=resume)
    assert delta[0, 0] + ids.shape[1] - 1 == want


GRIDS = [[[1, 8, 8]], [[1, 12, 20]], [[1, 6, 34], [2, 16, 4]], [[3, 10, 14]], [[1, 2, 2]]]


@pytest.mark.parametrize("window_size", [112, 56, 100])  # 100: floored to 3 merged tokens
@pytest.mark.parametrize("grid", GRIDS)
def test_window_index_matches_transformers(grid, window_size):
  from transformers.vision_utils import get_vision_window_index
  want_index, want_cu = get_vision_window_index(torch.tensor(grid), 2, window_size, 14)
  config = VisionConfig(window_size=window_size)
  layout = vision.vision_layout(np.array(grid), config)
  np.testing.assert_array_equal(layout["window_index"], want_index.numpy())
  # The window slot table must hold HF's windows: consecutive runs of the cumulative lengths.
  num = len(layout["rope_cos"])
  sizes = (layout["window_slots"] < num).sum(1)
  np.testing.assert_array_equal(np.concatenate([[0], np.cumsum(sizes)]), want_cu.numpy())
  flat = layout["window_slots"][layout["window_slots"] < num]
  np.testing.assert_array_equal(flat, np.arange(num))  # in order, each patch once
  np.testing.assert_array_equal(layout["window_slots"].reshape(-1)[layout["window_inverse"]],
                                np.arange(num))


@pytest.mark.parametrize("grid", GRIDS)
def test_vision_position_ids_match_transformers(grid):
  from transformers.vision_utils import get_vision_position_ids
  want = get_vision_position_ids(torch.tensor(grid), 2).numpy()
  np.testing.assert_array_equal(rope.vision_position_ids(np.array(grid), 2), want)


@pytest.mark.parametrize("head_dim, theta", [(128, 1e6), (128, 1e4), (64, 1e6), (80, 1e4),
                                             (40, 1e4), (16, 500.0)])
def test_inv_freq_matches_transformers(head_dim, theta):
  """transformers' float32 1 / theta^(2i/d): the text rotary (M-RoPE) and the vision tower's
  (head_dim / 2 frequencies). Bit-equal but for at most one entry one ulp off (numpy's float32
  `**` was off in up to 14 of 64 on AVX-512 hosts; ours now rounds a float64 power once)."""
  from transformers import Qwen2_5_VLConfig
  from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as hf
  config = Qwen2_5_VLConfig(
      text_config=dict(hidden_size=2 * head_dim, num_attention_heads=2, num_key_value_heads=1,
                       rope_parameters=dict(rope_type="default", rope_theta=theta,
                                            mrope_section=[head_dim // 4, head_dim // 8,
                                                           head_dim // 2 - 3 * head_dim // 8])),
      vision_config=dict(hidden_size=4 * head_dim, num_heads=4))
  text_want = hf.Qwen2_5_VLRotaryEmbedding(config.text_config).inv_freq.numpy()
  vision_want = hf.Qwen2_5_VLVisionRotaryEmbedding(config.vision_config).inv_freq.numpy()
  for got, want in ((rope.inv_freq(head_dim, theta), text_want),
                    (rope.inv_freq(head_dim // 2, 1e4), vision_want)):
    assert got.dtype == np.float32 and got.shape == want.shape
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32))
    assert ulps.max() <= 1 and (ulps > 0).sum() <= 1, ulps
