"""HF checkpoints: both key layouts in, hub layout out, transformers reloads it; clear errors."""

import json
import os

import numpy as np
import pytest
import jax

import vlm_jax
from vlm_jax import convert, safetensors_io
from tests.vlm_jax import hf_models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BATCH = [[4, ("image", (1, 8, 12)), 3], [2, ("image", (1, 4, 4)), 6]]


@pytest.fixture(scope="module", params=["base", "windows"])
def hf_dir(request, tmp_path_factory):
  path = str(tmp_path_factory.mktemp(request.param))
  model = hf_models.save_hf_model(request.param, path)
  return request.param, path, model


def _reload_logits(path, batch):
  model, info = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
      path, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info.get("mismatched_keys"), info
  return hf_models.hf_logits(model.eval(), batch)


def test_round_trip_through_transformers(hf_dir, tmp_path):
  name, path, model = hf_dir
  config, params = vlm_jax.load_hf(path)
  vlm_jax.save_hf(params, config, str(tmp_path), max_shard_size="100KB")
  assert os.path.exists(tmp_path / "model.safetensors.index.json")  # really sharded
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  np.testing.assert_array_equal(_reload_logits(str(tmp_path), batch),
                                hf_models.hf_logits(model, batch))
  # and our own loader reads the sharded output back bit for bit
  _, again = vlm_jax.load_hf(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, again, params)
  # saving other weights into the same folder replaces the old shards (no stale index)
  doubled = jax.tree.map(lambda x: 2 * x, params)
  vlm_jax.save_hf(doubled, config, str(tmp_path))
  assert not (tmp_path / "model.safetensors.index.json").exists()
  _, again = vlm_jax.load_hf(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, again, doubled)


def _rewrite(src, dst, rename=lambda k: k, drop=(), add=None, reshape=None):
  os.makedirs(dst, exist_ok=True)
  f = safetensors_io.SafetensorsFile(os.path.join(src, "model.safetensors"))
  tensors = {rename(k): f.get(k) for k in f.keys() if k not in drop}
  if reshape:
    tensors[reshape] = tensors[reshape][:-1]
  tensors.update(add or {})
  safetensors_io.write(os.path.join(dst, "model.safetensors"), tensors)
  with open(os.path.join(src, "config.json")) as a, open(os.path.join(dst, "config.json"), "w") as b:
    b.write(a.read())


def _v5_name(key):
  if key.startswith("visual."):
    return "model.visual." + key[len("visual."):]
  if key.startswith("model."):
    return "model.language_model." + key[len("model."):]
  return key


def test_transformers5_module_layout_loads_the_same(hf_dir, tmp_path):
  _, path, _ = hf_dir
  _rewrite(path, str(tmp_path), rename=_v5_name)
  _, want = vlm_jax.load_hf(path)
  _, got = vlm_jax.load_hf(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_dtype_cast_on_load(hf_dir):
  _, path, _ = hf_dir
  _, params = vlm_jax.load_hf(path, dtype="bfloat16")
  assert {str(x.dtype) for x in jax.tree.leaves(params)} == {"bfloat16"}


def test_missing_unexpected_and_misshaped_keys_listed_in_one_error(hf_dir, tmp_path):
  _, path, _ = hf_dir
  _rewrite(path, str(tmp_path), drop={"model.layers.1.mlp.up_proj.weight"},
           add={"model.layers.0.extra.weight": np.zeros(3, np.float32)},
           reshape="visual.blocks.0.attn.qkv.bias")
  with pytest.raises(ValueError) as err:
    vlm_jax.load_hf(str(tmp_path))
  msg = str(err.value)
  assert "model.layers.1.mlp.up_proj.weight" in msg
  assert "model.layers.0.extra.weight" in msg
  assert "visual.blocks.0.attn.qkv.bias" in msg


def test_pickle_only_and_missing_dirs(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    vlm_jax.load_hf(str(tmp_path / "nope"))
  (tmp_path / "config.json").write_text(json.dumps(vlm_jax.to_hf(vlm_jax.get_config("tiny"))))
  (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
  with pytest.raises(FileNotFoundError, match="pickle"):
    vlm_jax.load_hf(str(tmp_path))


def test_convert_cli_hf_orbax_hf(hf_dir, tmp_path):
  _, path, model = hf_dir
  (tmp_path / "src_extra").mkdir()
  (tmp_path / "src_extra" / "preprocessor_config.json").write_text("{}")
  assert convert.main(["hf-to-orbax", "--src", path, "--dst", str(tmp_path / "orbax")]) == 0
  assert convert.main(["orbax-to-hf", "--src", str(tmp_path / "orbax"), "--dst",
                       str(tmp_path / "hf"), "--copy-files-from", str(tmp_path / "src_extra")]) == 0
  assert (tmp_path / "hf" / "preprocessor_config.json").exists()
  batch = hf_models.build_batch(BATCH, 1176)
  np.testing.assert_array_equal(_reload_logits(str(tmp_path / "hf"), batch),
                                hf_models.hf_logits(model, batch))
