"""Our forward vs transformers' PyTorch Qwen2.5-VL on tiny random models (float32, 1e-4 abs)."""

import functools

import numpy as np
import pytest

import vlm_jax
from tests.vlm_jax import hf_models

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

CASES = {
    "padded_batch_left": ([[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10]], "left"),
    "padded_batch_right": ([[5, ("image", (1, 8, 12)), 7], [3, ("image", (1, 12, 20)), 10]], "right"),
    "two_images": ([[4, ("image", (1, 8, 8)), 3, ("image", (1, 6, 10)), 5]], "left"),
    "video": ([[4, ("video", (3, 8, 12), 0.5), 6]], "left"),
    "image_video_text_only": ([[3, ("image", (1, 10, 8)), 2], [2, ("video", (2, 8, 8), 1.0), 3],
                               [9]], "left"),
}


@functools.lru_cache(maxsize=None)
def _models(name, tmp_root):
  path = f"{tmp_root}/{name}"
  model = hf_models.save_hf_model(name, path)
  config, params = vlm_jax.load_hf(path)
  return model, config, params


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("hf"))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", hf_models.PARITY_CONFIGS)
def test_logits_match_transformers(name, case, tmp_root):
  model, config, params = _models(name, tmp_root)
  samples, padding = CASES[case]
  fractional = any(isinstance(part, tuple) and part[0] == "video" and part[2] % 1
                   for sample in samples for part in sample)
  if fractional and hf_models.hf_truncates_video_seconds():
    pytest.skip("this transformers truncates fractional second_per_grid_ts to an int")
  batch = hf_models.build_batch(samples, config.vision.patch_dim, padding)
  want = hf_models.hf_logits(model, batch)
  got = np.asarray(vlm_jax.forward(params, config, **batch))
  real = batch["attention_mask"] == 1
  err = np.abs(got[real] - want[real]).max()
  assert err < 1e-4, f"{name}/{case}: max |logit diff| {err:.2e}"
  assert np.abs(want[real]).max() > 0.1  # the comparison is not between near-zero values


@pytest.mark.parametrize("name", hf_models.PARITY_CONFIGS)
def test_vision_embeddings_match(name, tmp_root):
  model, config, params = _models(name, tmp_root)
  grid = np.array([[1, 12, 20], [1, 6, 6], [2, 10, 14]])
  rng = np.random.RandomState(1)
  pixels = rng.randn(int(grid.prod(-1).sum()), config.vision.patch_dim).astype(np.float32)
  with torch.no_grad():
    want = model.model.get_image_features(torch.tensor(pixels), torch.tensor(grid)).pooler_output
    want = torch.cat(want).numpy()
  got = np.asarray(vlm_jax.vision_embeddings(params, config, pixels, grid))
  assert got.shape == want.shape
  assert np.abs(got - want).max() < 1e-4


def test_mm_token_type_ids_optional(tmp_root):
  """Without mm_token_type_ids we still use 3-D positions (transformers would fall back to 1-D)."""
  model, config, params = _models("base", tmp_root)
  batch = hf_models.build_batch(CASES["padded_batch_left"][0], config.vision.patch_dim)
  with_ids = np.asarray(vlm_jax.forward(params, config, **batch))
  batch.pop("mm_token_type_ids")
  without = np.asarray(vlm_jax.forward(params, config, **batch))
  np.testing.assert_array_equal(with_ids, without)


def test_position_ids_in_each_form_transformers_takes(tmp_root):
  """position_ids [B, T] (1-D positions on all three streams), [3, B, T] and transformers 5's
  [4, B, T] (a text row, then the three streams): the same logits as transformers given them."""
  model, config, params = _models("base", tmp_root)
  batch = hf_models.build_batch(CASES["padded_batch_left"][0], config.vision.patch_dim)
  real = batch["attention_mask"] == 1
  with torch.no_grad():
    streams = model.model.get_rope_index(
        torch.tensor(batch["input_ids"]), torch.tensor(batch["mm_token_type_ids"]),
        image_grid_thw=torch.tensor(batch["image_grid_thw"]),
        attention_mask=torch.tensor(batch["attention_mask"]))[0].numpy()
  text = np.where(real, np.cumsum(batch["attention_mask"], -1) - 1, 0)
  for positions in (streams, text, np.concatenate([text[None], streams])):
    inputs = dict(batch, position_ids=positions)
    want = hf_models.hf_logits(model, inputs)
    got = np.asarray(vlm_jax.forward(params, config, **inputs))
    assert np.abs(got[real] - want[real]).max() < 1e-4, positions.shape
  with pytest.raises(ValueError, match=r"position_ids shape \(2, 2, 5\)"):
    vlm_jax.forward(params, config, **dict(batch, position_ids=streams[:2, :, :5]))
