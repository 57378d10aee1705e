"""HF checkpoints: both key layouts in, hub layout out, transformers reloads it; clear errors."""

import json
import os
import re

import numpy as np
import pytest
import jax

import vlm_jax
from vlm_jax import convert, hf, safetensors_io
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


@pytest.fixture(scope="module")
def small_hf(tmp_path_factory):
  """An HF dir of a tiny random model written by save_hf (no transformers model to build)."""
  from tests.vlm_jax.test_convert import small_config
  path = tmp_path_factory.mktemp("small")
  config = small_config()
  vlm_jax.save_hf(vlm_jax.init_params(config, jax.random.key(0)), config, str(path))
  return path


def _corrupt_copy(src, dst, data: bytes, name="model.safetensors"):
  os.makedirs(dst, exist_ok=True)
  (dst / "config.json").write_text((src / "config.json").read_text())
  (dst / name).write_bytes(data)
  return dst / name


def _mismatched_size() -> bytes:
  """A header whose 'x' claims shape [2, 3] of F32 (24 bytes) over a 20-byte span."""
  head = json.dumps({"x": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}).encode()
  return len(head).to_bytes(8, "little") + head + bytes(20)


@pytest.mark.parametrize("mesh", [None, "2x4"])
def test_corrupt_safetensors_errors_name_the_file(small_hf, tmp_path, mesh):
  from vlm_jax import sharding
  good = (small_hf / "model.safetensors").read_bytes()
  cases = {
      "truncated": (good[:-100], r"truncated safetensors: tensor '.*' needs bytes \[\d+, "
                                 rf"{len(good)}\) but the file has {len(good) - 100} bytes"),
      "random": (np.random.default_rng(0).bytes(4096),
                 r"not a safetensors file, or truncated \(header length \d+ but the file has "
                 r"4096 bytes\)"),
      "short": (good[:5], r"not a safetensors file \(5 bytes"),
      "not json": (good[:8] + b"{x" + good[10:], r"not a safetensors file \(header is not JSON"),
      "size mismatch": (_mismatched_size(), r"corrupt safetensors header: tensor 'x' spans 20 "
                                            r"bytes, but shape \[2, 3\] of F32 needs 24"),
  }
  for i, (data, message) in enumerate(cases.values()):
    bad = _corrupt_copy(small_hf, tmp_path / str(i), data)
    with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: {message}"):
      vlm_jax.load_hf(str(bad.parent), mesh=mesh and sharding.parse_mesh(mesh))
    with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: "):
      safetensors_io.SafetensorsFile(str(bad))


def test_corrupt_index_errors_name_the_file(small_hf, tmp_path):
  for i, text in enumerate(["{not json", '{"metadata": {}}', '{"weight_map": [1]}']):
    index = _corrupt_copy(small_hf, tmp_path / str(i), text.encode(),
                          name="model.safetensors.index.json")
    with pytest.raises(ValueError, match=f"^{re.escape(str(index))}: corrupt safetensors index"):
      vlm_jax.load_hf(str(index.parent))


def test_parse_size():
  assert hf.parse_size("5GB") == 5 * 10**9
  assert hf.parse_size(" 500mb") == 500 * 10**6
  assert hf.parse_size("1.5KB") == 1500
  assert hf.parse_size("2GiB") == 2 * 2**30
  assert hf.parse_size(123) == 123
  for bad in ("banana", "GB", "5", "-1GB", "0MB", "5 GBs", 0):
    with pytest.raises(ValueError, match=re.escape(f"expected e.g. 5GB or 500MB, got {bad!r}")):
      hf.parse_size(bad)


def test_save_hf_writes_the_released_flat_config(small_hf):
  """Qwen's released layout (text fields at the top, rope_scaling type mrope, torch_dtype),
  which transformers 4.49+ load as well as 5 (test_round_trip_through_transformers: 5)."""
  from tests.vlm_jax.test_convert import small_config
  written = json.loads((small_hf / "config.json").read_text())
  assert written == vlm_jax.to_hf(small_config(), "float32", layout="flat")
  assert "text_config" not in written and written["torch_dtype"] == "float32"
  assert written["rope_scaling"] == {"type": "mrope", "mrope_section": [2, 3, 3]}


def _processor_files(folder):
  """What a transformers-5 `processor.save_pretrained` leaves: the image processor only in
  processor_config.json, and named chat templates in additional_chat_templates/."""
  folder.mkdir()
  (folder / "tokenizer_config.json").write_text("{}")
  (folder / "processor_config.json").write_text('{"image_processor": {"max_pixels": 50176}}')
  (folder / "additional_chat_templates").mkdir()
  (folder / "additional_chat_templates" / "tool_use.jinja").write_text("{{ tools }}")
  return folder


def test_save_hf_copies_processor_config_and_chat_template_folder(small_hf, tmp_path):
  src = _processor_files(tmp_path / "src")
  (tmp_path / "only_templates").mkdir()
  (tmp_path / "only_templates" / "additional_chat_templates").mkdir()
  hf.check_extra_files(str(tmp_path / "only_templates"))  # a folder alone is something to copy
  config, params = vlm_jax.load_hf(str(small_hf))
  out = tmp_path / "out"
  vlm_jax.save_hf(params, config, str(out), extra_files_from=str(src))
  assert json.loads((out / "processor_config.json").read_text())["image_processor"] == {
      "max_pixels": 50176}
  assert (out / "additional_chat_templates" / "tool_use.jinja").read_text() == "{{ tools }}"


def test_save_hf_into_the_folder_its_files_come_from(small_hf, tmp_path):
  """Fine-tuned weights saved back beside the tokenizer files they were loaded with: the
  files are already there (no SameFileError), the weights are replaced."""
  folder = _processor_files(tmp_path / "model")
  for name in ("config.json", "model.safetensors"):
    (folder / name).write_bytes((small_hf / name).read_bytes())
  config, params = vlm_jax.load_hf(str(folder))
  doubled = jax.tree.map(lambda x: 2 * x, params)
  vlm_jax.save_hf(doubled, config, str(folder), extra_files_from=str(folder))
  assert (folder / "processor_config.json").exists()
  assert (folder / "additional_chat_templates" / "tool_use.jinja").exists()
  _, again = vlm_jax.load_hf(str(folder))
  jax.tree.map(np.testing.assert_array_equal, again, doubled)


def test_save_hf_killed_over_an_earlier_export_leaves_it_loadable(small_hf, tmp_path, monkeypatch):
  """A save killed after some of its shards (preemption, a full disk) leaves the earlier
  export whole: transformers and our loader still read the old weights; the next save
  clears the staged leftovers and replaces the old shards."""
  config, params = vlm_jax.load_hf(str(small_hf))
  out = tmp_path / "export"
  vlm_jax.save_hf(params, config, str(out))
  old_files = sorted(p.name for p in out.iterdir())
  write, calls = safetensors_io.write, []

  def dies_on_the_third(path, tensors, metadata=None):
    calls.append(path)
    if len(calls) == 3:
      raise KeyboardInterrupt
    write(path, tensors, metadata)

  monkeypatch.setattr(safetensors_io, "write", dies_on_the_third)
  doubled = jax.tree.map(lambda x: 2 * x, params)
  with pytest.raises(KeyboardInterrupt):
    vlm_jax.save_hf(doubled, config, str(out), max_shard_size="100KB")
  monkeypatch.setattr(safetensors_io, "write", write)
  assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == old_files
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  old_logits = _reload_logits(str(out), batch)
  _, again = vlm_jax.load_hf(str(out))
  jax.tree.map(np.testing.assert_array_equal, again, params)
  vlm_jax.save_hf(doubled, config, str(out), max_shard_size="100KB")
  names = sorted(p.name for p in out.iterdir())
  assert "model.safetensors" not in names and not any(n.startswith(".") for n in names), names
  assert not np.allclose(_reload_logits(str(out), batch), old_logits)  # transformers: new ones
  _, again = vlm_jax.load_hf(str(out))
  jax.tree.map(np.testing.assert_array_equal, again, doubled)


def test_save_hf_killed_while_committing_over_shards_of_the_same_names(small_hf, tmp_path,
                                                                       monkeypatch):
  """Re-exporting into a sharded export of the same layout (the usual overwrite): the new
  shards get other names, so a kill between the renames (here after the first) leaves the old
  index and every old shard: the old weights load whole, never a mix of old and new."""
  from vlm_jax import hf
  config, params = vlm_jax.load_hf(str(small_hf))
  out = tmp_path / "export"
  vlm_jax.save_hf(params, config, str(out), max_shard_size="100KB")
  old_files = sorted(p.name for p in out.iterdir())
  replace, calls = os.replace, []

  def dies_on_the_second(src, dst):  # of the commit's renames (staged shard -> its name)
    if os.path.basename(src).startswith(".staged-"):
      calls.append(dst)
      if len(calls) == 2:
        raise KeyboardInterrupt
    replace(src, dst)

  monkeypatch.setattr(hf.os, "replace", dies_on_the_second)
  doubled = jax.tree.map(lambda x: 2 * x, params)
  with pytest.raises(KeyboardInterrupt):
    vlm_jax.save_hf(doubled, config, str(out), max_shard_size="100KB")
  monkeypatch.setattr(hf.os, "replace", replace)
  assert set(old_files) <= {p.name for p in out.iterdir()}
  _, again = vlm_jax.load_hf(str(out))
  jax.tree.map(np.testing.assert_array_equal, again, params)
  vlm_jax.save_hf(doubled, config, str(out), max_shard_size="100KB")
  _, again = vlm_jax.load_hf(str(out))
  jax.tree.map(np.testing.assert_array_equal, again, doubled)
  index = json.loads((out / "model.safetensors.index.json").read_text())
  assert sorted(p.name for p in out.iterdir()) == sorted(
      set(index["weight_map"].values()) | {"config.json", "model.safetensors.index.json"})


def test_model_safetensors_is_read_first_as_transformers_does(small_hf, tmp_path):
  """A folder with model.safetensors beside an index and shards (e.g. an export over a sharded
  one) loads model.safetensors, as transformers does, not the index."""
  config, params = vlm_jax.load_hf(str(small_hf))
  vlm_jax.save_hf(jax.tree.map(lambda x: 2 * x, params), config, str(tmp_path),
                  max_shard_size="100KB")
  (tmp_path / "model.safetensors").write_bytes((small_hf / "model.safetensors").read_bytes())
  _, again = vlm_jax.load_hf(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, again, params)


def test_quantized_checkpoint_refused_up_front(small_hf, tmp_path):
  """An AWQ/GPTQ/FP8 export: one line naming config.json and the method, before any weight is
  matched (not the list of qweight/scales keys), also when the caller passes the config."""
  config = vlm_jax.from_hf(str(small_hf))
  quantized = json.loads((small_hf / "config.json").read_text())
  quantized["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128}
  (tmp_path / "config.json").write_text(json.dumps(quantized))
  (tmp_path / "model.safetensors").write_bytes((small_hf / "model.safetensors").read_bytes())
  want = re.escape(f"{tmp_path / 'config.json'}: quantized checkpoint "
                   "(quantization_config.quant_method='awq')")
  for kwargs in ({}, {"config": config}):
    with pytest.raises(ValueError, match=f"^{want}") as err:
      vlm_jax.load_hf(str(tmp_path), **kwargs)
    assert "\n" not in str(err.value)
