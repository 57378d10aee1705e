"""Training examples: multiple choice (scored by letter/option text, augmentable through
`evals.variants`) or open numeric (counting, geometry: scored by number; augmented by
`rl.augment.augment_number`)."""

from __future__ import annotations

import dataclasses

from evals.schema import Item


@dataclasses.dataclass(frozen=True)
class Example:
  id: str
  source: str                     # "synthetic", "sat2", "pixmo_count", "geometry3k", ...
  question: str
  answer: str                     # a letter for choice, a number (as text) for number
  options: tuple[str, ...] = ()   # empty for number
  images: tuple[bytes, ...] = ()  # encoded PNG/JPEG
  kind: str = "choice"            # "choice" | "number"
  category: str = ""
  meta: tuple[tuple[str, str], ...] = ()  # the item's meta (statements, facts for templates)

  def __post_init__(self):
    if self.kind not in ("choice", "number"):
      raise ValueError(f"example {self.source}/{self.id}: kind {self.kind!r}")
    if self.kind == "choice":
      self.as_item()  # validates options and the answer letter

  def as_item(self) -> Item:
    return Item(id=self.id, benchmark=self.source, question=self.question, options=self.options,
                answer=self.answer, images=self.images, category=self.category,
                meta=self.meta)

  @classmethod
  def from_item(cls, item: Item) -> "Example":
    return cls(id=item.id, source=item.benchmark, question=item.question, answer=item.answer,
               options=item.options, images=item.images, kind="choice", category=item.category,
               meta=item.meta)
