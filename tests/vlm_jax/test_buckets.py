"""Shape buckets: sizes, left alignment, and inert vision padding."""

import jax
import numpy as np
import pytest

from vlm_jax import buckets, model as model_lib, params as params_lib
from vlm_jax.config import get_config
from tests.vlm_jax import hf_models

CONFIG = get_config("tiny").replace(image_token_id=hf_models.IMG, video_token_id=hf_models.VID,
                                    vision_start_token_id=hf_models.VSTART,
                                    vision_end_token_id=hf_models.VEND)


def test_bucket_sizes():
  assert [buckets.bucket(n) for n in (1, 2, 3, 5, 7, 100, 129, 4097)] == [1, 2, 3, 6, 8, 128, 192,
                                                                         6144]
  assert buckets.bucket(5, minimum=64) == 64


def test_new_tokens_buckets_waste_under_64_slots():
  got = [buckets.new_tokens_bucket(n) for n in (1, 5, 48, 64, 65, 128, 1024, 1100)]
  assert got == [1, 6, 48, 64, 128, 128, 1024, 1152]


def test_left_align_moves_real_tokens_right():
  batch = {"input_ids": np.array([[5, 6, 0, 0], [7, 8, 9, 1]]),
           "attention_mask": np.array([[1, 1, 0, 0], [1, 1, 1, 1]])}
  out = buckets.left_align(batch, 6)
  np.testing.assert_array_equal(out["input_ids"], [[0, 0, 0, 0, 5, 6], [0, 0, 7, 8, 9, 1]])
  np.testing.assert_array_equal(out["attention_mask"], [[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]])
  with pytest.raises(ValueError, match="bucket length"):
    buckets.left_align(batch, 3)
  # arrays padded wider than their longest prompt (e.g. to max_length): the padding goes
  wide = {k: np.pad(v, ((0, 0), (0, 60))) for k, v in batch.items()}
  np.testing.assert_array_equal(buckets.left_align(wide, 6)["input_ids"], out["input_ids"])


@pytest.mark.parametrize("samples", [
    [[3, ("image", (1, 8, 12)), 2], [4, ("image", (1, 6, 6)), ("image", (1, 4, 10)), 1]],
    [[2, ("video", (3, 8, 8), 1.0), 1, ("image", (1, 12, 20))]],
])
def test_vision_padding_is_inert(samples):
  params = params_lib.init_params(CONFIG, jax.random.key(0))
  batch = hf_models.build_batch(samples, CONFIG.vision.patch_dim)
  inputs = model_lib.prepare_inputs(CONFIG, **batch)
  padded = buckets.pad_vision(inputs, CONFIG.vision, min_patches=1024)
  assert padded["pixel_values"].shape[0] == 1024
  want = model_lib.embed(params, CONFIG, inputs)
  got = model_lib.embed(params, CONFIG, padded)
  np.testing.assert_allclose(got, want, atol=1e-6)
