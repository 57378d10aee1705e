"""The one item schema every benchmark loader produces, and the record of a skipped item.

Options are lettered A, B, C, ... in order; `answer` is the letter of the key. Images are kept
encoded (PNG/JPEG bytes) so items are cheap to store, shard and ship between processes; decode
them with `Item.pil_images()`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string

LETTERS = string.ascii_uppercase


@dataclasses.dataclass(frozen=True)
class Item:
  id: str                       # unique within its benchmark
  benchmark: str                # e.g. "cv_bench", "synthetic"
  question: str
  options: tuple[str, ...]      # option texts, lettered A, B, ... in this order
  answer: str                   # letter of the correct option
  images: tuple[bytes, ...] = ()  # encoded images (PNG/JPEG), in prompt order
  category: str = ""            # benchmark's own category / task type
  meta: tuple[tuple[str, str], ...] = ()  # extra string fields (hashable)

  def __post_init__(self):
    if len(self.options) < 2:
      raise ValueError(f"item {self.benchmark}/{self.id}: needs at least 2 options, "
                       f"got {len(self.options)}")
    if len(self.options) > len(LETTERS):
      raise ValueError(f"item {self.benchmark}/{self.id}: too many options ({len(self.options)})")
    if self.answer not in self.letters:
      raise ValueError(f"item {self.benchmark}/{self.id}: answer {self.answer!r} is not one of "
                       f"the option letters {self.letters}")

  @property
  def letters(self) -> tuple[str, ...]:
    return tuple(LETTERS[: len(self.options)])

  @property
  def answer_index(self) -> int:
    return self.letters.index(self.answer)

  @property
  def key(self) -> str:
    """Globally unique id: benchmark/id."""
    return f"{self.benchmark}/{self.id}"

  def fingerprint(self) -> str:
    """A short hash of what a model is shown and scored on (question, options, answer,
    category, images), stored with each result so a resume can tell that the data changed."""
    h = hashlib.sha256(json.dumps([self.question, list(self.options), self.answer,
                                   self.category]).encode())
    for image in self.images:
      h.update(hashlib.sha256(image).digest())
    return h.hexdigest()[:16]

  def pil_images(self) -> list:
    """The item's images decoded to RGB as the model sees them (`vlm_jax.images.open_image`:
    EXIF orientation applied, transparency on white)."""
    from vlm_jax.images import open_image  # noqa: PLC0415
    return [open_image(data, f"item {self.key}: image {i}") for i, data in enumerate(self.images)]


@dataclasses.dataclass(frozen=True)
class BadItem:
  """An item a loader could not use: reported by id and counted, never fatal."""
  benchmark: str
  id: str
  reason: str
