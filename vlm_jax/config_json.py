"""HF `config.json` in and out of `vlm_jax.config.ModelConfig`.

`from_hf` reads both HF layouts:
  * transformers 4 ("flat"): text fields at the top level, `rope_scaling: {type: mrope, ...}` and
    `rope_theta` at the top level, `vision_config` nested (real checkpoints also say `in_chans`);
  * transformers 5 ("nested"): `text_config` / `vision_config`, `rope_parameters`.
Missing keys take the *transformers class defaults* (which are not the 7B values), exactly as
`Qwen2_5_VLConfig.from_pretrained` would, so the same `config.json` gives the same model.
`to_hf` writes either: "flat" (as released; transformers 4 and 5 load it, `hf.save_hf` writes
it) or "nested" (transformers 5 only; vlm_jax's own orbax and training-run dirs).
"""

from __future__ import annotations

import json
import os

from vlm_jax.config import ConfigError, ModelConfig, TextConfig, VisionConfig

# transformers class defaults (Qwen2_5_VLTextConfig / Qwen2_5_VLVisionConfig), used for missing keys.
_HF_TEXT_DEFAULTS = dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568,
                         num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                         hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-5,
                         rope_theta=1000000.0, tie_word_embeddings=False)
_HF_VISION_DEFAULTS = dict(depth=32, hidden_size=3584, hidden_act="silu", intermediate_size=3420,
                           num_heads=16, in_channels=3, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, tokens_per_second=4, window_size=112,
                           out_hidden_size=3584, fullatt_block_indexes=(7, 15, 23, 31))


def _read_json(path_or_dict: str | os.PathLike | dict) -> tuple[dict, str]:
  """(the config dict, the file name errors give for it)."""
  if isinstance(path_or_dict, dict):
    return path_or_dict, "config.json"
  path = os.fspath(path_or_dict)
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint path {path} does not exist")
  if os.path.isdir(path):
    path = os.path.join(path, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config.json at {path}")
  with open(path) as f:
    try:
      return json.load(f), path
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path}: invalid JSON ({e})") from e


def _refuse_quantized(top: dict, source: str) -> None:
  """Raise for a quantized checkpoint (AWQ, GPTQ, FP8, ...): its packed weights and scales are
  not float tensors of our layout, and would otherwise fail as a long list of missing and
  unexpected keys."""
  quant = top.get("quantization_config")
  if quant:
    method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else quant
    raise ConfigError(f"{source}: quantized checkpoint (quantization_config.quant_method="
                      f"{method!r}); vlm_jax loads only unquantized float weights")


def refuse_quantized(path_or_dict: str | os.PathLike | dict) -> None:
  """Raise a one-line ConfigError naming the file if this `config.json` is of a quantized
  checkpoint (`from_hf` checks it too)."""
  _refuse_quantized(*_read_json(path_or_dict))


def _refuse_sliding(text: dict, num_layers: int, max_window_layers: int) -> None:
  """transformers' layer types: a layer slides when `layer_types` says so, or (without it) when
  `use_sliding_window` with a `sliding_window` and index >= `max_window_layers`. A config whose
  flag is on but where no layer slides loads as it does there; one where a layer slides is
  refused (no released Qwen2.5-VL or Qwen3 uses one)."""
  types = text.get("layer_types")
  if types is not None:
    sliding = [i for i, kind in enumerate(types) if kind == "sliding_attention"]
  elif text.get("use_sliding_window") and text.get("sliding_window", 4096) is not None:
    sliding = list(range(text.get("max_window_layers", max_window_layers), num_layers))
  else:
    sliding = []
  if sliding:
    raise ConfigError(f"sliding-window attention (layers {sliding[0]}..{sliding[-1]}: "
                      f"use_sliding_window / max_window_layers / layer_types) is not supported")


def _kv_heads(text: dict, default: int, n_heads: int) -> int:
  """transformers: the class default when the key is absent, the query heads when it is null."""
  kv = text.get("num_key_value_heads", default)
  return n_heads if kv is None else kv


def _rope(text: dict, top: dict) -> tuple[float, tuple[int, ...] | None]:
  # transformers 5 takes a text config's rope_scaling over its rope_parameters
  rope = text.get("rope_scaling") or text.get("rope_parameters") or top.get("rope_scaling") or {}
  theta = rope.get("rope_theta", text.get("rope_theta", top.get("rope_theta",
                                                                 _HF_TEXT_DEFAULTS["rope_theta"])))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", "mrope"):
    raise ConfigError(f"rope type {rope_type!r} is not supported (only default/mrope)")
  section = rope.get("mrope_section", [16, 24, 24])
  return float(theta), tuple(section)


def _text_from_hf(text: dict, top: dict) -> TextConfig:
  get = lambda k: text.get(k, _HF_TEXT_DEFAULTS.get(k))
  _refuse_sliding(text, get("num_hidden_layers"), max_window_layers=80)
  theta, section = _rope(text, top)
  # transformers 5 ties when either level says so (pre-v5 saves kept it in text_config only)
  tie = top.get("tie_word_embeddings") or text.get("tie_word_embeddings") or False
  n_heads = get("num_attention_heads")
  return TextConfig(
      vocab_size=get("vocab_size"), hidden_size=get("hidden_size"),
      intermediate_size=get("intermediate_size"), num_layers=get("num_hidden_layers"),
      num_heads=n_heads, num_kv_heads=_kv_heads(text, _HF_TEXT_DEFAULTS["num_key_value_heads"],
                                                n_heads),
      rms_norm_eps=float(get("rms_norm_eps")), rope_theta=theta, mrope_section=section,
      max_position_embeddings=get("max_position_embeddings"), hidden_act=get("hidden_act"),
      tie_word_embeddings=bool(tie))


def _vision_from_hf(vision: dict) -> VisionConfig:
  get = lambda k: vision.get(k, _HF_VISION_DEFAULTS.get(k))
  rope = vision.get("rope_parameters") or {}
  return VisionConfig(
      depth=get("depth"), hidden_size=get("hidden_size"),
      intermediate_size=get("intermediate_size"), num_heads=get("num_heads"),
      out_hidden_size=get("out_hidden_size"),
      in_channels=vision.get("in_channels", vision.get("in_chans", 3)),
      patch_size=get("patch_size"), temporal_patch_size=get("temporal_patch_size"),
      spatial_merge_size=get("spatial_merge_size"), window_size=get("window_size"),
      fullatt_block_indexes=tuple(get("fullatt_block_indexes")),
      tokens_per_second=get("tokens_per_second"), hidden_act=get("hidden_act"),
      rope_theta=float(rope.get("rope_theta", vision.get("rope_theta", 10000.0))))


_TEXT_ONLY_DEFAULTS = {  # transformers' Qwen3Config / Qwen2Config class defaults
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  head_dim=128, rms_norm_eps=1e-6, max_position_embeddings=32768),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  rms_norm_eps=1e-6, max_position_embeddings=32768),
}


def _text_only_from_hf(top: dict, model_type: str) -> ModelConfig:
  """Qwen3 (q/k RMSNorm, no qkv bias, explicit head_dim) or Qwen2 text models, 1-D RoPE."""
  get = lambda k: top.get(k, _TEXT_ONLY_DEFAULTS[model_type].get(k))
  _refuse_sliding(top, get("num_hidden_layers"), max_window_layers=28)
  rope = top.get("rope_scaling") or top.get("rope_parameters") or {}
  if rope.get("rope_type", rope.get("type", "default")) != "default":
    raise ConfigError(f"rope type {rope.get('rope_type', rope.get('type'))!r} is not supported")
  qwen3 = model_type == "qwen3"
  bias = bool(top.get("attention_bias", False)) if qwen3 else True
  n_heads = get("num_attention_heads")
  text = TextConfig(
      vocab_size=get("vocab_size"), hidden_size=get("hidden_size"),
      intermediate_size=get("intermediate_size"), num_layers=get("num_hidden_layers"),
      num_heads=n_heads,
      num_kv_heads=_kv_heads(top, _TEXT_ONLY_DEFAULTS[model_type]["num_key_value_heads"],
                             n_heads),
      head_dim_override=get("head_dim") if qwen3 else None,
      rms_norm_eps=float(get("rms_norm_eps")),
      rope_theta=float(rope.get("rope_theta", top.get("rope_theta", 10000.0))),
      mrope_section=None, max_position_embeddings=get("max_position_embeddings"),
      hidden_act=top.get("hidden_act", "silu"),
      tie_word_embeddings=bool(top.get("tie_word_embeddings", False)),
      qkv_bias=bias, o_bias=bias and qwen3, qk_norm=qwen3)
  return ModelConfig(vision=None, text=text, architecture=model_type,
                     bos_token_id=top.get("bos_token_id"), eos_token_id=top.get("eos_token_id"),
                     pad_token_id=top.get("pad_token_id"))


def from_hf(path_or_dict: str | os.PathLike | dict) -> ModelConfig:
  """`ModelConfig` from a HF `config.json` (a path, a checkpoint dir, or a dict).

  Qwen2.5-VL (`qwen2_5_vl`) and, for the LLM judges, the text-only `qwen3` and `qwen2`.
  """
  top, source = _read_json(path_or_dict)
  _refuse_quantized(top, source)
  model_type = top.get("model_type")
  if model_type in _TEXT_ONLY_DEFAULTS:
    return _text_only_from_hf(top, model_type)
  if model_type not in (None, "qwen2_5_vl"):
    raise ConfigError(f"config.json model_type={model_type!r}; expected one of "
                      f"'qwen2_5_vl', 'qwen3', 'qwen2'")
  text = top.get("text_config") or top  # flat transformers-4 layout keeps text fields on top
  text = dict(text) if isinstance(text, dict) else text.to_dict()
  vision = top.get("vision_config") or {}
  get = lambda k, d: top.get(k, text.get(k, d))
  return ModelConfig(
      vision=_vision_from_hf(vision), text=_text_from_hf(text, top),
      image_token_id=get("image_token_id", 151655), video_token_id=get("video_token_id", 151656),
      vision_start_token_id=get("vision_start_token_id", 151652),
      vision_end_token_id=get("vision_end_token_id", 151653),
      bos_token_id=get("bos_token_id", 151643), eos_token_id=get("eos_token_id", 151645),
      pad_token_id=get("pad_token_id", None))


LAYOUTS = ("flat", "nested")
_DTYPE_KEY = {"flat": "torch_dtype", "nested": "dtype"}


def _eos(config: ModelConfig):
  eos = config.eos_token_id
  return list(eos) if isinstance(eos, tuple) else eos


def _text_fields(config: ModelConfig) -> dict:
  """The decoder fields both layouts share (at the top level in "flat", in text_config in
  "nested"); sliding window off, as in every released Qwen2.5-VL and Qwen3."""
  t = config.text
  return dict(
      vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
      num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
      num_key_value_heads=t.num_kv_heads, hidden_act=t.hidden_act,
      max_position_embeddings=t.max_position_embeddings, rms_norm_eps=t.rms_norm_eps,
      use_sliding_window=False, sliding_window=None, max_window_layers=t.num_layers,
      attention_dropout=0.0, initializer_range=0.02, bos_token_id=config.bos_token_id,
      eos_token_id=_eos(config), pad_token_id=config.pad_token_id,
      tie_word_embeddings=t.tie_word_embeddings)


def _text_only_to_hf(config: ModelConfig, dtype: str, layout: str) -> dict:
  """Qwen3 / Qwen2 (flat in both layouts; they differ in how RoPE and the dtype are spelled)."""
  t = config.text
  qwen3 = config.architecture == "qwen3"
  out = dict(architectures=["Qwen3ForCausalLM" if qwen3 else "Qwen2ForCausalLM"],
             model_type=config.architecture, **_text_fields(config))
  if layout == "flat":  # as Qwen3 ships: "rope_scaling": null, "rope_theta" beside it
    out.update(rope_theta=t.rope_theta, rope_scaling=None)
  else:
    out.update(rope_parameters=dict(rope_type="default", rope_theta=t.rope_theta))
  if qwen3:
    out.update(head_dim=t.head_dim, attention_bias=t.qkv_bias)
  out[_DTYPE_KEY[layout]] = dtype
  return out


def _mrope_section(t: TextConfig) -> list[int]:
  return list(t.mrope_section or (t.head_dim // 2, 0, 0))


def _vision_fields(v: VisionConfig) -> dict:
  return dict(
      depth=v.depth, hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
      num_heads=v.num_heads, out_hidden_size=v.out_hidden_size, in_channels=v.in_channels,
      patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
      spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
      fullatt_block_indexes=list(v.fullatt_block_indexes),
      tokens_per_second=v.tokens_per_second, hidden_act=v.hidden_act)


def _flat_vision(v: VisionConfig) -> dict:
  """The released vision_config: no model_type, `in_chans` and `spatial_patch_size` beside the
  `in_channels` transformers reads. transformers 4 hard-codes the vision RoPE base 10000, so
  `rope_theta` is written only for another one (which transformers 5 reads)."""
  out = dict(_vision_fields(v), in_chans=v.in_channels, spatial_patch_size=v.patch_size)
  if v.rope_theta != VisionConfig.rope_theta:
    out["rope_theta"] = v.rope_theta
  return out


def _tokens(config: ModelConfig) -> dict:
  return dict(image_token_id=config.image_token_id, video_token_id=config.video_token_id,
              vision_start_token_id=config.vision_start_token_id,
              vision_end_token_id=config.vision_end_token_id)


def _flat_to_hf(config: ModelConfig, dtype: str) -> dict:
  t = config.text
  return dict(
      architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl",
      **_text_fields(config), **_tokens(config), use_cache=True, rope_theta=t.rope_theta,
      rope_scaling=dict(type="mrope", mrope_section=_mrope_section(t)),
      vision_config=_flat_vision(config.vision), torch_dtype=dtype)


def _nested_to_hf(config: ModelConfig, dtype: str) -> dict:
  t, v = config.text, config.vision
  text = dict(
      model_type="qwen2_5_vl_text", **_text_fields(config),
      rope_parameters=dict(rope_type="default", rope_theta=t.rope_theta,
                           mrope_section=_mrope_section(t)), dtype=dtype)
  vision = dict(model_type="qwen2_5_vl_vision", **_vision_fields(v), initializer_range=0.02,
                rope_parameters=dict(rope_type="axial", rope_theta=v.rope_theta))
  return dict(
      architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl",
      text_config=text, vision_config=vision, **_tokens(config),
      tie_word_embeddings=t.tie_word_embeddings, dtype=dtype)


def to_hf(config: ModelConfig, dtype: str = "bfloat16", layout: str = "nested") -> dict:
  """The HF `config.json` dict for `config`, in one of two layouts (`from_hf` reads both):

  * "flat": as Qwen ships on the Hub (text fields at the top level, `rope_theta`,
    `rope_scaling: {type: mrope, mrope_section}`, `torch_dtype`, the released `vision_config`
    names; Qwen3/Qwen2 with `rope_theta` and `rope_scaling: null`). transformers 4.49+ and 5
    load it alike: what `hf.save_hf` writes for other tools.
  * "nested": the transformers-5 form (`text_config`, `rope_parameters`, `dtype`), which
    transformers 4 mis-loads (4.57 fails at forward, 4.51 in from_pretrained); for the files
    only vlm_jax reads (orbax and training-run dirs; rl.train compares their `dtype` on resume).
  """
  if layout not in LAYOUTS:
    raise ValueError(f"to_hf layout={layout!r}; expected one of {LAYOUTS}")
  if config.vision is None:
    return _text_only_to_hf(config, dtype, layout)
  return _flat_to_hf(config, dtype) if layout == "flat" else _nested_to_hf(config, dtype)
