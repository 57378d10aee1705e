"""Config presets, HF config.json in both layouts, and validation errors."""

import dataclasses
import json
import re

import pytest

from vlm_jax import config as config_lib, config_json
from vlm_jax.config import ConfigError, ModelConfig, TextConfig, VisionConfig

# The transformers-4 ("flat") config.json of Qwen2.5-VL-7B-Instruct as released.
FLAT_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
    "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 3584,
    "initializer_range": 0.02, "intermediate_size": 18944, "max_position_embeddings": 128000,
    "max_window_layers": 28, "model_type": "qwen2_5_vl", "num_attention_heads": 28,
    "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.41.2", "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280,
                      "intermediate_size": 3420, "num_heads": 16, "in_chans": 3,
                      "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
                      "spatial_patch_size": 14, "window_size": 112,
                      "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                      "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}


def test_flat_layout_gives_7b_preset():
  assert config_json.from_hf(FLAT_7B) == config_lib.get_config("7b")
  # DESIGN.md's names in vlm_jax.config stay (the HF half lives in config_json)
  assert (config_lib.from_hf, config_lib.to_hf) == (config_json.from_hf, config_json.to_hf)


@pytest.mark.parametrize("name", ["tiny", "3b", "7b", "32b", "72b"])
def test_nested_round_trip_through_transformers(name, tmp_path):
  transformers = pytest.importorskip("transformers")
  cfg = config_lib.get_config(name)
  hf = transformers.Qwen2_5_VLConfig(**config_json.to_hf(cfg))
  hf.save_pretrained(tmp_path)
  assert config_json.from_hf(str(tmp_path)) == cfg
  assert config_json.from_hf(json.loads((tmp_path / "config.json").read_text())) == cfg


def test_missing_keys_take_transformers_defaults():
  transformers = pytest.importorskip("transformers")
  hf = transformers.Qwen2_5_VLConfig().to_dict()
  # transformers' own defaults are not even self-consistent (vision out 3584 vs text 8192):
  ours = config_json.from_hf({"model_type": "qwen2_5_vl", "text_config": {
      "hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4}})
  assert ours.text.num_layers == hf["text_config"]["num_hidden_layers"] == 80
  assert ours.text.rms_norm_eps == hf["text_config"]["rms_norm_eps"] == 1e-5
  assert ours.vision.hidden_size == hf["vision_config"]["hidden_size"]
  assert ours.vision.tokens_per_second == hf["vision_config"]["tokens_per_second"]


@pytest.mark.parametrize("make, field", [
    (lambda: TextConfig(hidden_size=100, num_heads=3), "num_heads"),
    (lambda: TextConfig(num_heads=28, num_kv_heads=5), "num_kv_heads"),
    (lambda: TextConfig(mrope_section=(16, 24, 23)), "mrope_section"),
    (lambda: TextConfig(hidden_act="relu6"), "hidden_act"),
    (lambda: VisionConfig(hidden_size=1280, num_heads=12), "num_heads"),
    (lambda: VisionConfig(fullatt_block_indexes=(7, 32)), "fullatt_block_indexes"),
    (lambda: VisionConfig(window_size=27), "window_size"),
    (lambda: VisionConfig(tokens_per_second=2.5), "tokens_per_second"),
    (lambda: VisionConfig(tokens_per_second="2"), "tokens_per_second"),
    (lambda: VisionConfig(depth=0), "depth"),
    (lambda: ModelConfig(vision=VisionConfig(out_hidden_size=100)), "out_hidden_size"),
    (lambda: ModelConfig(image_token_id=10**7), "image_token_id"),
])
def test_invalid_values_raise_naming_the_field(make, field):
  with pytest.raises(ConfigError, match=field):
    make()


def test_bad_config_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    config_json.from_hf(str(tmp_path))
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ConfigError, match="invalid JSON"):
    config_json.from_hf(str(tmp_path))
  with pytest.raises(ConfigError, match="model_type"):
    config_json.from_hf({"model_type": "llama"})
  with pytest.raises(ConfigError, match=r"sliding-window attention \(layers 14..27"):
    config_json.from_hf(dict(FLAT_7B, use_sliding_window=True, max_window_layers=14))
  with pytest.raises(ConfigError, match=r"layers 3..3"):
    config_json.from_hf(dict(FLAT_7B, layer_types=["full_attention"] * 3 + ["sliding_attention"]))


def _nested(**text):
  base = {"hidden_size": 256, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 16,
          "rope_parameters": {"rope_type": "default", "mrope_section": [4, 2, 2]}}
  return {"model_type": "qwen2_5_vl", "vision_config": {"out_hidden_size": 256},
          "text_config": {k: v for k, v in {**base, **text}.items() if v != "absent"}}


@pytest.mark.parametrize("case", [
    _nested(num_key_value_heads="absent"),  # the class default (8), not the query heads
    _nested(num_key_value_heads=None),      # null: the query heads
    dict(_nested(num_key_value_heads=4), tie_word_embeddings=False,
         text_config=dict(_nested(num_key_value_heads=4)["text_config"], tie_word_embeddings=True)),
    _nested(num_key_value_heads=4, rope_scaling={"type": "mrope", "mrope_section": [2, 4, 2]}),
    _nested(num_key_value_heads=4, use_sliding_window=True, max_window_layers=2),  # none slides
    {k: v for k, v in _nested().items() if k != "text_config"} | _nested()["text_config"],
], ids=["kv_absent", "kv_null", "tie_in_text_only", "rope_scaling_and_parameters",
        "sliding_flag_no_layer", "flat_kv_absent"])
def test_config_forms_read_as_transformers_reads_them(case):
  """The fields transformers 5 fills in or picks between, read the same way here."""
  transformers = pytest.importorskip("transformers")
  case = {k: v for k, v in case.items() if v != "absent"}
  hf = transformers.Qwen2_5_VLConfig(**json.loads(json.dumps(case)))
  ours = config_json.from_hf(case)
  assert ours.text.num_kv_heads == hf.text_config.num_key_value_heads
  assert ours.text.tie_word_embeddings == hf.tie_word_embeddings
  assert list(ours.text.mrope_section) == hf.text_config.rope_parameters["mrope_section"]
  assert "sliding_attention" not in hf.text_config.layer_types


def test_text_only_configs_take_their_class_defaults():
  transformers = pytest.importorskip("transformers")
  for model_type, cls in (("qwen3", transformers.Qwen3Config),
                          ("qwen2", transformers.Qwen2Config)):
    case = {"model_type": model_type, "hidden_size": 512, "num_attention_heads": 64,
            "num_hidden_layers": 2, "use_sliding_window": True}  # max_window_layers 28: no layer
    assert config_json.from_hf(case).text.num_kv_heads == cls(**case).num_key_value_heads == 32
    with pytest.raises(ConfigError, match="layers 1..1"):
      config_json.from_hf(dict(case, max_window_layers=1))


def test_window_and_tokens_per_second_as_transformers_takes_them(tmp_path):
  from transformers import Qwen2_5_VLConfig
  vision = VisionConfig(window_size=100, tokens_per_second=2.0)  # transformers floors 100 to 3
  assert vision.window_merged == 3 and vision.tokens_per_second == 2
  hf = config_json.to_hf(ModelConfig(vision=vision))
  assert type(hf["vision_config"]["tokens_per_second"]) is int  # transformers refuses 2.0
  Qwen2_5_VLConfig(**hf).save_pretrained(str(tmp_path))  # its strict config loads it
  assert config_json.from_hf(str(tmp_path)).vision == vision


def test_configs_are_hashable_for_jit():
  assert hash(config_lib.get_config("7b")) == hash(config_json.from_hf(FLAT_7B))


PRESETS = ["tiny", "small", "3b", "7b", "32b", "72b"]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_to_hf_round_trips_in_both_layouts(name, layout):
  cfg = config_lib.get_config(name)
  assert config_json.from_hf(config_json.to_hf(cfg, layout=layout)) == cfg


def test_flat_layout_is_the_released_one():
  """What save_hf writes: the config.json Qwen released (which transformers 4.49+ and 5 load
  alike), key for key, but for keys that do not change the model."""
  ours = config_json.to_hf(config_lib.get_config("7b"), "bfloat16", layout="flat")
  assert "text_config" not in ours and "rope_parameters" not in ours and "dtype" not in ours
  not_model = {"transformers_version", "vision_token_id", "sliding_window", "vision_config"}
  assert {k: ours.get(k) for k in FLAT_7B if k not in not_model} == {
      k: v for k, v in FLAT_7B.items() if k not in not_model}
  vision = ours["vision_config"]
  assert {k: vision.get(k) for k in FLAT_7B["vision_config"]} == FLAT_7B["vision_config"]
  assert vision["in_channels"] == 3  # the name transformers reads (in_chans is ignored)


@pytest.mark.parametrize("name", ["tiny", "3b"])
def test_flat_layout_through_transformers(name, tmp_path):
  """transformers 5 reads the flat file into the same model (RoPE, dtype, vision) and its own
  re-save of it parses back the same."""
  transformers = pytest.importorskip("transformers")
  cfg = config_lib.get_config(name)
  (tmp_path / "config.json").write_text(json.dumps(config_json.to_hf(cfg, "float32", "flat")))
  hf = transformers.AutoConfig.from_pretrained(str(tmp_path))
  assert hf.text_config.rope_parameters["mrope_section"] == list(cfg.text.mrope_section)
  assert hf.text_config.rope_parameters["rope_theta"] == cfg.text.rope_theta
  assert str(hf.text_config.dtype) == "torch.float32"
  assert hf.vision_config.in_channels == cfg.vision.in_channels
  hf.save_pretrained(tmp_path / "resaved")
  assert config_json.from_hf(str(tmp_path / "resaved")) == cfg


def test_flat_layout_keeps_another_vision_rope_theta():
  cfg = config_lib.get_config("tiny")
  cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, rope_theta=20000.0))
  assert config_json.to_hf(cfg, layout="flat")["vision_config"]["rope_theta"] == 20000.0
  assert config_json.from_hf(config_json.to_hf(cfg, layout="flat")) == cfg
  assert "rope_theta" not in config_json.to_hf(config_lib.get_config("tiny"),
                                               layout="flat")["vision_config"]


def _text_only(architecture):
  text = TextConfig(vocab_size=1000, hidden_size=64, intermediate_size=96, num_layers=2,
                    num_heads=4, num_kv_heads=2, mrope_section=None, rope_theta=5e5,
                    head_dim_override=32 if architecture == "qwen3" else None,
                    qkv_bias=architecture == "qwen2", qk_norm=architecture == "qwen3")
  return ModelConfig(vision=None, text=text, architecture=architecture, eos_token_id=(1, 2))


@pytest.mark.parametrize("architecture", ["qwen3", "qwen2"])
def test_text_only_flat_layout_as_qwen3_ships(architecture):
  """Qwen3 / Qwen2 in the flat layout: `rope_theta` with `rope_scaling: null` and `torch_dtype`
  (transformers 4 reads no `rope_parameters`, and would run RoPE at its default base)."""
  transformers = pytest.importorskip("transformers")
  cfg = _text_only(architecture)
  flat = config_json.to_hf(cfg, "bfloat16", layout="flat")
  assert (flat["rope_theta"], flat["rope_scaling"], flat["torch_dtype"]) == (5e5, None, "bfloat16")
  assert "rope_parameters" not in flat and "dtype" not in flat
  assert config_json.from_hf(flat) == cfg
  hf = transformers.AutoConfig.for_model(**flat)
  assert hf.rope_parameters["rope_theta"] == 5e5


def test_to_hf_refuses_an_unknown_layout():
  with pytest.raises(ValueError, match="layout='hub'"):
    config_json.to_hf(config_lib.get_config("tiny"), layout="hub")


@pytest.mark.parametrize("method", ["awq", "gptq", "fp8"])
def test_quantized_config_refused_in_one_line_naming_the_file(method, tmp_path):
  quantized = dict(FLAT_7B, quantization_config={"quant_method": method, "bits": 4})
  message = (f"quantized checkpoint (quantization_config.quant_method='{method}'); vlm_jax "
             "loads only unquantized float weights")
  with pytest.raises(ConfigError, match=re.escape(f"config.json: {message}")):
    config_json.from_hf(quantized)
  (tmp_path / "config.json").write_text(json.dumps(quantized))
  with pytest.raises(ConfigError) as err:
    config_json.from_hf(str(tmp_path))
  assert str(err.value) == f"{tmp_path / 'config.json'}: {message}"
