"""Host-side (numpy) image and video preprocessing for Qwen2.5-VL, equal to HF's image processor.

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
import io
import json
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps

# Release images past PIL's decompression-bomb guard (an error over 2 x 89M pixels; MME-RealWorld's
# remote-sensing scenes) are resized to max_pixels at once: the guard is raised to 2^30 pixels,
# as `evals.benchmarks.images` raises it for the loaders.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 1 << 30:
  Image.MAX_IMAGE_PIXELS = 1 << 30
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
VIDEO_PREPROCESSOR_CONFIG_NAME = "video_preprocessor_config.json"
# transformers 5 saves a processor as this one file, with the image and video settings nested
# under "image_processor" / "video_processor" (and no preprocessor_config.json); when both exist,
# transformers reads the nested section first.
PROCESSOR_CONFIG_NAME = "processor_config.json"

# Modes PIL can convert to RGB without guessing a value range ("I;16", "I", "F" would need one).
SUPPORTED_PIL_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                       "HSV", "LAB")

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
  def from_dir(cls, path: str | os.PathLike, filename: str = PREPROCESSOR_CONFIG_NAME,
               section: str = "image_processor"):
    """The settings of a HF checkpoint directory, read as transformers reads them: the
    `section` of processor_config.json when it has one, else `path/filename`
    (preprocessor_config.json by default)."""
    folder = pathlib.Path(path)
    nested = folder / PROCESSOR_CONFIG_NAME
    if nested.is_file():
      d = _read_json(nested)
      if isinstance(d.get(section), Mapping):
        return cls.from_dict(d[section], source=f"{nested} [{section!r}]")
    file = folder / filename
    if not file.is_file():
      raise FileNotFoundError(f"no {filename} (nor a {PROCESSOR_CONFIG_NAME} with an "
                              f"{section!r} section) in {str(path)!r}")
    return cls.from_dict(_read_json(file), source=str(file))

  @classmethod
  def has_config(cls, path: str | os.PathLike, filename: str, section: str) -> bool:
    """Whether `from_dir(path, filename, section)` finds settings (rather than raising)."""
    try:
      cls.from_dir(path, filename, section)
    except FileNotFoundError:
      return False
    return True

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

def _read_json(file: pathlib.Path) -> dict:
  try:
    with open(file, encoding="utf-8") as f:
      d = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{file}: not a JSON file ({e})") from e
  if not isinstance(d, dict):
    raise ValueError(f"{file}: expected a JSON object, got {type(d).__name__}")
  return d


def open_image(source: Any, where: str = "image") -> Image.Image:
  """A decoded RGB PIL image from a file path or encoded bytes, as a model should see it:
  turned upright by its EXIF orientation (as transformers' `load_image`; phone photos store
  pixels sideways) and with transparent pixels composited onto white (as its image
  processor). `where` names the image in errors."""
  try:
    image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    image.load()
    image = ImageOps.exif_transpose(image)
  except Exception as e:  # PIL raises many types for corrupt data (OSError, SyntaxError, ...)
    raise ValueError(f"{where}: cannot be decoded as an image ({e})") from e
  return Image.fromarray(_pil_to_rgb(image, where))


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
  if {"A", "a"} & set(image.getbands()) or image.info.get("transparency") is not None:
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


def video_patches(frames: Any, config: ImageProcessorConfig, where: str):
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
  patches, grid = video_patches(frames, config, where="video")
  return {"pixel_values_videos": patches.astype(np.float32, copy=False),
          "video_grid_thw": np.asarray([grid], dtype=np.int64),
          "second_per_grid_ts": [config.temporal_patch_size / fps]}
