"""Getting an item's image bytes from base64 text, embedded bytes or a file, checked.

Every image is opened with PIL and verified before it enters an `Item`, so a corrupt file is a
`BadItem` at load time rather than a crash in the middle of an evaluation. PNG and JPEG bytes are
kept as they are (no re-encoding: the model must see the release's pixels); any other format
(WebP, GIF, BMP, ...) is re-encoded as PNG because the item schema promises PNG/JPEG.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from pathlib import Path, PurePosixPath

from evals.benchmarks.common import ItemError, is_missing

KEPT_FORMATS = ("PNG", "JPEG")
# The PIL modes the model's image path (vlm_jax.images.SUPPORTED_PIL_MODES, not imported here:
# that would pull jax into the loaders) turns into RGB without guessing a value range. 16-bit
# and float images ("I;16", "I", "F") are refused there, and PIL's convert("RGB") clips them
# to near white, so they are bad items here, at load time, rather than a crash mid-evaluation.
MODEL_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV",
               "LAB")
# PIL refuses an image over 2 x Image.MAX_IMAGE_PIXELS (89M by default) as a decompression bomb.
# Release images can be larger (MME-RealWorld's remote-sensing scenes come from DOTA-v2, up to
# ~29000 x 28000) and are resized to the model's max_pixels at once: the guard is raised to this
# (vlm_jax.images raises it the same way for the model's own decode).
LARGEST_IMAGE_PIXELS = 1 << 30


def _pil_image():
  from PIL import Image
  if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < LARGEST_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = LARGEST_IMAGE_PIXELS
  return Image


def checked_image(data: bytes, what: str) -> bytes:
  """`data` if PIL can decode it (re-encoded as PNG unless PNG/JPEG); ItemError otherwise."""
  Image = _pil_image()
  try:
    with Image.open(io.BytesIO(data)) as img:
      fmt, mode = img.format, img.mode
      img.verify()  # integrity check without decoding every pixel
  except Exception as e:  # PIL raises many types for corrupt data
    # PIL's messages embed the BytesIO repr (a memory address): drop it for stable reasons.
    detail = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the data", str(e))
    raise ItemError(f"unreadable image ({what}): {type(e).__name__}: {detail}") from e
  if mode not in MODEL_MODES:
    raise ItemError(f"unsupported image mode {mode!r} ({what}): 16-bit or float pixels have no "
                    f"agreed 8-bit rendering; convert the image to 8-bit RGB or grayscale")
  if fmt in KEPT_FORMATS:
    return data
  with Image.open(io.BytesIO(data)) as img:
    out = io.BytesIO()
    img.convert("RGBA" if "A" in img.getbands() else "RGB").save(out, format="PNG")
  return out.getvalue()


def decode_base64(value: str, what: str) -> bytes:
  """Bytes of a base64 image (a "data:image/...;base64," prefix is allowed). Whitespace inside
  (MIME-style line wrapping, stray spaces) is ignored, as VLMEvalKit's b64decode ignores it;
  any other non-base64 character is an error."""
  s = value.strip()
  if s.startswith("data:") and "," in s:
    s = s.split(",", 1)[1]
  s = "".join(s.split())
  try:
    data = base64.b64decode(s, validate=True)
  except (binascii.Error, ValueError) as e:
    raise ItemError(f"undecodable base64 image ({what}): {e}") from e
  return checked_image(data, what)


def read_image_file(path: Path) -> bytes:
  """Bytes of an image file; ItemError naming the path if it is missing or unreadable."""
  if not path.is_file():
    raise ItemError(f"missing image file {path}")
  return checked_image(path.read_bytes(), str(path))


def image_from_cell(value, what: str, resolve=None) -> bytes:
  """An image from a table cell: HF Image struct ({"bytes", "path"}), raw bytes, or a path.

  `resolve(relative_path) -> Path` locates paths; without it paths are not accepted.
  """
  if isinstance(value, dict):
    if value.get("bytes"):
      return checked_image(bytes(value["bytes"]), what)
    value = value.get("path")
  if isinstance(value, (bytes, bytearray, memoryview)):
    return checked_image(bytes(value), what)
  if is_missing(value) or not str(value).strip():
    raise ItemError(f"no image ({what})")
  if resolve is None:
    raise ItemError(f"image given as a path {value!r} but no image folder applies ({what})")
  return read_image_file(resolve(str(value).strip()))


class ImageIndex:
  """Finds an image by its file name anywhere under a root folder (walked once, lazily).

  Releases whose annotation names only the file ("129d118ad0.jpg") or a foreign path
  ("data/controlled_images/x.jpeg", "http://images.cocodataset.org/val2017/x.jpg") are
  resolved by base name; a name present twice under the root is ambiguous and not resolved.
  """

  def __init__(self, root: Path):
    self.root = root
    self._by_name: dict[str, Path | None] | None = None

  def _index(self) -> dict[str, Path | None]:
    if self._by_name is None:
      self._by_name = {}
      for folder, _, files in os.walk(self.root):
        for name in files:
          # None marks a name seen twice: refusing to guess is safer than a wrong image.
          self._by_name[name] = None if name in self._by_name else Path(folder) / name
    return self._by_name

  def find(self, name: str) -> Path | None:
    """The one file called `name` (its base name) under the root; ItemError if several."""
    base = os.path.basename(name.rstrip("/"))
    index = self._index()
    if base in index and index[base] is None:
      raise ItemError(f"image name {base!r} occurs more than once under {self.root}")
    return index.get(base)

  def resolve(self, ref: str, *bases: Path) -> Path:
    """The file `ref` names: under each base, then the root, with leading folders of `ref`
    dropped one by one (so "data/x/y.jpg" and "http://host/x/y.jpg" find x/y.jpg), else the one
    file with that name below the root. ItemError naming where it looked otherwise."""
    path = ref.split("://", 1)[1] if "://" in ref else ref
    parts = PurePosixPath(path).parts
    suffixes = [PurePosixPath(*parts[i:]) for i in range(len(parts))]
    for base in (*bases, self.root):
      for suffix in suffixes:
        if (base / suffix).is_file():
          return base / suffix
    found = self.find(path)
    if found is None:
      where = ", ".join(dict.fromkeys(str(b) for b in (*bases, self.root)))
      raise ItemError(f"missing image file {ref!r} (not in {where}, nor by name below "
                      f"{self.root})")
    return found
