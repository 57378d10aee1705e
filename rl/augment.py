"""Training-time prompt augmentation (PAPER.md section 7), reusing `evals.variants`.

Each training prompt independently becomes, with probability p each (default 0.1), a
correct_think, wrong_think, correct_caption or wrong_caption variant, else stays base (40%
perturbed in all at the defaults). The draw is seeded by (seed, step, item key), so a resumed run
augments exactly as the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from evals.schema import Item
from evals.variants import PromptSpec, TextSource, make_variant

AUGMENTATIONS = ("correct_think", "wrong_think", "correct_caption", "wrong_caption")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  probs: tuple[float, ...] = (0.1, 0.1, 0.1, 0.1)  # in AUGMENTATIONS order
  seed: int = 0

  def __post_init__(self):
    if len(self.probs) != len(AUGMENTATIONS) or min(self.probs) < 0 or sum(self.probs) > 1:
      raise ValueError(f"augmentation probs {self.probs} must be {len(AUGMENTATIONS)} "
                       "non-negative numbers summing to at most 1")


def choose_variant(item: Item, step: int, config: AugmentConfig) -> str:
  digest = hashlib.sha256(f"{config.seed}/{step}/{item.key}".encode()).digest()
  u = np.random.default_rng(int.from_bytes(digest[:8], "little")).random()
  edges = np.cumsum(config.probs)
  idx = int(np.searchsorted(edges, u, side="right"))
  return AUGMENTATIONS[idx] if idx < len(AUGMENTATIONS) else "base"


def augment(item: Item, step: int, config: AugmentConfig,
            texts: TextSource | None = None) -> PromptSpec:
  """The (possibly perturbed) prompt of `item` at training step `step`."""
  return make_variant(item, choose_variant(item, step, config), config.seed, texts)
