"""Training-time prompt augmentation (PAPER.md section 7), reusing `evals.variants`.

Each training prompt independently becomes, with probability p each (default 0.1), a
correct_think, wrong_think, correct_caption or wrong_caption variant, else stays base (40%
perturbed in all at the defaults). The draw is seeded by (seed, step, item key), so a resumed run
augments exactly as the uninterrupted one. Numeric examples (counting, geometry) are augmented
at the same rates (`augment_number`): the caption or think asserts the answer, or a wrong
number drawn near it, and the reward still scores the true answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

from evals.schema import Item
from evals.variants import PromptSpec, TemplateTexts, TextSource, make_variant

AUGMENTATIONS = ("correct_think", "wrong_think", "correct_caption", "wrong_caption")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  probs: tuple[float, ...] = (0.1, 0.1, 0.1, 0.1)  # in AUGMENTATIONS order
  seed: int = 0

  def __post_init__(self):
    if len(self.probs) != len(AUGMENTATIONS) or min(self.probs) < 0 or sum(self.probs) > 1:
      raise ValueError(f"augmentation probs {self.probs} must be {len(AUGMENTATIONS)} "
                       "non-negative numbers summing to at most 1")


def _rng(*key) -> np.random.Generator:
  digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def choose_variant(item: Item, step: int, config: AugmentConfig) -> str:
  u = _rng(config.seed, step, item.key).random()
  edges = np.cumsum(config.probs)
  idx = int(np.searchsorted(edges, u, side="right"))
  return AUGMENTATIONS[idx] if idx < len(AUGMENTATIONS) else "base"


class TrainingTexts(TemplateTexts):
  """The training captions and thinks [ours]: the eval's templates (`evals.variants`) reworded,
  so that a trained model is measured on perturbation texts it has not seen verbatim (robustness
  to one memorised sentence would otherwise pass for robustness to the perturbation)."""

  CAPTIONS = {"default": "Image description: {statement}."}
  THINKS = {
      "default": "First I examine the picture. {statement}. Hence the answer is ({letter}) "
                 "{option}.",
      "count": "I go over the objects in the picture. {statement}. Hence the answer is "
               "({letter}) {option}.",
  }


def augment(item: Item, step: int, config: AugmentConfig,
            texts: TextSource | None = None) -> PromptSpec:
  """The (possibly perturbed) prompt of `item` at training step `step`; texts: default
  `TrainingTexts` (not the eval's wording)."""
  return make_variant(item, choose_variant(item, step, config), config.seed,
                      texts or TrainingTexts())


# numeric examples: what the texts assert; {label} is the counted object (pixmo-count), else the
# generic wording (geometry answers)
NUMBER_CAPTIONS = {"count": "There are {value} {label} in the image.",
                   "default": "The answer to this question is {value}."}
NUMBER_THINKS = {"count": "Let me count the {label} one by one. There are {value} {label}. So "
                          "the answer should be {value}.",
                 "default": "Let me work through this step by step. The answer comes out as "
                            "{value}. So the answer should be {value}."}
_LABEL = re.compile(r"^How many (.+?) are in the image\?$")


def wrong_number(answer: str, key: str, seed: int) -> str:
  """A plausible wrong answer, seeded by (seed, key): an integer 1-2 away (a count, >= 0, stays
  >= 0), else the value scaled by 0.5, 0.75, 1.25 or 1.5 at the answer's decimals."""
  value, rng = float(answer), _rng(seed, "wrong-number", key)
  if value == int(value) and "." not in answer:
    near = [int(value) + d for d in (-2, -1, 1, 2) if value < 0 or int(value) + d >= 0]
    return str(near[rng.integers(len(near))])
  decimals = len(answer.split(".")[1]) if "." in answer else 0
  for factor in rng.permutation([0.5, 0.75, 1.25, 1.5]):
    other = f"{value * factor:.{decimals}f}"
    if float(other) != value:
      return other
  return f"{value + 1:.{decimals}f}"


def augment_number(question: str, answer: str, key: str, category: str, step: int,
                   config: AugmentConfig) -> PromptSpec:
  """The (possibly perturbed) prompt of a numeric example: the same draw as `augment`; the
  caption goes before the question, the think is the assistant's prefill (no closing tag:
  the model continues it); `target` is the number they assert."""
  probe = Item(id=key, benchmark="", question=question, options=("a", "b"), answer="A")
  variant = choose_variant(probe, step, config)
  base = PromptSpec("base", question, (), answer)
  if variant == "base":
    return base
  value = answer if variant.startswith("correct") else wrong_number(answer, key, config.seed)
  label = _LABEL.match(question.strip())
  kind = "count" if category == "count" and label else "default"
  fill = lambda table: table[kind].format(value=value, label=label.group(1) if label else "")
  if variant.endswith("think"):
    think = fill(NUMBER_THINKS)
    return dataclasses.replace(base, variant=variant, assistant_prefill="<think>" + think,
                               think=think, target=value)
  caption = fill(NUMBER_CAPTIONS)
  return dataclasses.replace(base, variant=variant, question=f"{caption}\n{question}",
                             caption=caption, target=value)
