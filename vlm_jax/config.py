"""Model configuration: frozen dataclasses and presets (HF `config.json` in and out:
`config_json.py`).

Three dataclasses: `VisionConfig` (the ViT with window attention), `TextConfig` (the Qwen2 decoder,
also used for the Qwen3 text judge) and `ModelConfig` (both plus the special token ids). They are
hashable so they can be static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import numbers
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


_IN_CONFIG_JSON = ("from_hf", "to_hf", "refuse_quantized", "LAYOUTS")


def __getattr__(name: str):
  """`config.from_hf` / `to_hf` / `refuse_quantized` / `LAYOUTS`, the names DESIGN.md lists
  here, live in `config_json` (imported on first use: it imports this module)."""
  if name in _IN_CONFIG_JSON:
    from vlm_jax import config_json
    return getattr(config_json, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
