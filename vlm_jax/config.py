"""Model configuration: frozen dataclasses, presets, and HF `config.json` in and out.

Three dataclasses: `VisionConfig` (the ViT with window attention), `TextConfig` (the Qwen2 decoder,
also used for the Qwen3 text judge) and `ModelConfig` (both plus the special token ids). They are
hashable so they can be static arguments of `jax.jit`.

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

import dataclasses
import json
import numbers
import os
from typing import Any

_ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "quick_gelu")


class ConfigError(ValueError):
  """An invalid configuration value; the message names the field."""


def _require(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def _positive(obj: Any, *names: str) -> None:
  for name in names:
    value = getattr(obj, name)
    _require(isinstance(value, int) and value > 0,
             f"{type(obj).__name__}.{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """Qwen2.5-VL vision tower. P patches of `patch_dim` = C*T*p*p values each."""
  depth: int = 32
  hidden_size: int = 1280
  intermediate_size: int = 3420
  num_heads: int = 16
  out_hidden_size: int = 3584
  in_channels: int = 3
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  tokens_per_second: int = 2  # an int in transformers' config (its loader refuses 2.0)
  hidden_act: str = "silu"
  rope_theta: float = 10000.0
  norm_eps: float = 1e-6  # hard-coded in HF's vision blocks and merger

  def __post_init__(self):
    object.__setattr__(self, "fullatt_block_indexes", tuple(int(i) for i in self.fullatt_block_indexes))
    tps = self.tokens_per_second
    _require(isinstance(tps, numbers.Real) and not isinstance(tps, bool) and tps > 0
             and float(tps).is_integer(),
             f"VisionConfig.tokens_per_second={self.tokens_per_second!r} must be a positive whole "
             "number (transformers' config holds an int)")
    object.__setattr__(self, "tokens_per_second", int(self.tokens_per_second))
    _positive(self, "depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size",
              "in_channels", "patch_size", "temporal_patch_size", "spatial_merge_size", "window_size")
    _require(self.hidden_size % self.num_heads == 0,
             f"VisionConfig.num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}")
    _require(self.head_dim % 4 == 0,
             f"VisionConfig head_dim={self.head_dim} must be a multiple of 4 (2-D rotary over h and w)")
    # windows are window_size // merge // patch merged tokens wide, rounded down as transformers
    # does (its window_size=100 at patch 14, merge 2 gives 3)
    _require(self.window_merged >= 1,
             f"VisionConfig.window_size={self.window_size} must be at least "
             f"patch_size*spatial_merge_size={self.patch_size * self.spatial_merge_size} (one "
             "merged token)")
    bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
    _require(not bad, f"VisionConfig.fullatt_block_indexes {bad} outside [0, depth={self.depth})")
    _require(self.hidden_act in _ACTIVATIONS,
             f"VisionConfig.hidden_act={self.hidden_act!r} not in {_ACTIVATIONS}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

  @property
  def merge_unit(self) -> int:
    """Patches merged into one LLM token."""
    return self.spatial_merge_size ** 2

  @property
  def window_merged(self) -> int:
    """Window side in merged tokens (112 px -> 4), rounded down."""
    return self.window_size // self.spatial_merge_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Decoder-only text model (Qwen2 with M-RoPE; `qk_norm=True, qkv_bias=False` is Qwen3)."""
  vocab_size: int = 152064
  hidden_size: int = 3584
  intermediate_size: int = 18944
  num_layers: int = 28
  num_heads: int = 28
  num_kv_heads: int = 4
  head_dim_override: int | None = None  # Qwen3 sets head_dim explicitly
  rms_norm_eps: float = 1e-6
  rope_theta: float = 1000000.0
  mrope_section: tuple[int, ...] | None = (16, 24, 24)  # None: plain 1-D RoPE
  max_position_embeddings: int = 128000
  hidden_act: str = "silu"
  tie_word_embeddings: bool = False
  qkv_bias: bool = True
  o_bias: bool = False
  qk_norm: bool = False

  def __post_init__(self):
    if self.mrope_section is not None:
      object.__setattr__(self, "mrope_section", tuple(int(s) for s in self.mrope_section))
    _positive(self, "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
              "num_kv_heads")
    if self.head_dim_override is None:
      _require(self.hidden_size % self.num_heads == 0,
               f"TextConfig.num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}")
    _require(self.num_heads % self.num_kv_heads == 0,
             f"TextConfig.num_kv_heads={self.num_kv_heads} does not divide num_heads={self.num_heads}")
    _require(self.head_dim % 2 == 0, f"TextConfig head_dim={self.head_dim} must be even (RoPE)")
    if self.mrope_section is not None:
      _require(len(self.mrope_section) == 3 and sum(self.mrope_section) * 2 == self.head_dim,
               f"TextConfig.mrope_section={list(self.mrope_section)} must be 3 ints summing to "
               f"head_dim/2={self.head_dim // 2}")
    _require(self.hidden_act in _ACTIVATIONS,
             f"TextConfig.hidden_act={self.hidden_act!r} not in {_ACTIVATIONS}")
    _require(self.rms_norm_eps > 0, f"TextConfig.rms_norm_eps must be > 0, got {self.rms_norm_eps}")

  @property
  def head_dim(self) -> int:
    return self.head_dim_override or self.hidden_size // self.num_heads

  @property
  def num_groups(self) -> int:
    """Query heads per kv head (GQA)."""
    return self.num_heads // self.num_kv_heads


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Qwen2.5-VL: vision tower + text decoder + the special token ids.

  `vision=None` is a text-only model (`architecture` "qwen3" or "qwen2": the LLM judges), run by
  the same decoder code; the vision token ids are then unused.
  """
  vision: VisionConfig | None = VisionConfig()
  text: TextConfig = TextConfig()
  architecture: str = "qwen2_5_vl"
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  bos_token_id: int | None = 151643
  eos_token_id: int | tuple[int, ...] | None = 151645
  pad_token_id: int | None = None

  def __post_init__(self):
    _require(self.architecture in ("qwen2_5_vl", "qwen3", "qwen2"),
             f"ModelConfig.architecture={self.architecture!r} is not supported")
    _require((self.vision is None) == (self.architecture != "qwen2_5_vl"),
             f"ModelConfig: architecture {self.architecture!r} "
             f"{'needs' if self.vision is None else 'has no'} a vision config")
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    if self.vision is None:
      return
    _require(self.vision.out_hidden_size == self.text.hidden_size,
             f"vision.out_hidden_size={self.vision.out_hidden_size} must equal "
             f"text.hidden_size={self.text.hidden_size}")
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
      value = getattr(self, name)
      _require(0 <= value < self.text.vocab_size,
               f"ModelConfig.{name}={value} outside the vocabulary [0, {self.text.vocab_size})")

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)


# ---------------------------------------------------------------------------------------------
# Presets. Values are those of the released Qwen2.5-VL-*-Instruct config.json files.

def _vision(out: int, intermediate: int) -> VisionConfig:
  return VisionConfig(depth=32, hidden_size=1280, intermediate_size=intermediate, num_heads=16,
                      out_hidden_size=out, tokens_per_second=2)


PRESETS: dict[str, ModelConfig] = {
    "3b": ModelConfig(
        vision=_vision(2048, 3420),
        text=TextConfig(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                        num_layers=36, num_heads=16, num_kv_heads=2, tie_word_embeddings=True)),
    "7b": ModelConfig(
        vision=_vision(3584, 3420),
        text=TextConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                        num_layers=28, num_heads=28, num_kv_heads=4)),
    "32b": ModelConfig(
        vision=_vision(5120, 3456),
        text=TextConfig(vocab_size=152064, hidden_size=5120, intermediate_size=27648,
                        num_layers=64, num_heads=40, num_kv_heads=8)),
    "72b": ModelConfig(
        vision=_vision(8192, 3456),
        text=TextConfig(vocab_size=152064, hidden_size=8192, intermediate_size=29568,
                        num_layers=80, num_heads=64, num_kv_heads=8)),
    # ~10M parameters (mostly the real-size vocabulary, so the real tokenizer works with it);
    # a 224 px image has 2x2 windows, block 1 attends over the full image.
    "tiny": ModelConfig(
        vision=VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
                            out_hidden_size=64, fullatt_block_indexes=(1,), tokens_per_second=2),
        text=TextConfig(vocab_size=151936, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=4, mrope_section=(2, 3, 3),
                        max_position_embeddings=4096)),
    # ~41M parameters (39M of them the embedding and LM head): a CPU-trainable step up from
    # tiny, for experiments where tiny is too small to learn the task (bench/grpo_gain.py).
    "small": ModelConfig(
        vision=VisionConfig(depth=4, hidden_size=128, intermediate_size=256, num_heads=4,
                            out_hidden_size=128, fullatt_block_indexes=(1, 3),
                            tokens_per_second=2),
        text=TextConfig(vocab_size=151936, hidden_size=128, intermediate_size=384, num_layers=4,
                        num_heads=4, num_kv_heads=2, mrope_section=(4, 6, 6),
                        max_position_embeddings=4096)),
}


def get_config(name: str) -> ModelConfig:
  """A preset by name (`tiny`, `small`, `3b`, `7b`, `32b`, `72b`)."""
  key = name.lower().replace("qwen2.5-vl-", "").replace("-instruct", "")
  if key not in PRESETS:
    raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[key]


# ---------------------------------------------------------------------------------------------
# HF config.json in and out.

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
