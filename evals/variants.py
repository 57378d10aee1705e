"""Text perturbations of a multiple-choice item (PAPER.md section 4), as a pure library.

`make_variant(item, variant, seed)` returns a `PromptSpec`: the question text (with a caption in
front when the variant has one), the options (abstain adds one), the assistant prefill (the
think variants), and the generated texts, which are stored with every result. The same code
builds GRPO's training-time augmentation (`rl/augment.py`), so it has no model or I/O in it.

The wrong option is drawn uniformly from the incorrect ones by a generator seeded with
(seed, item key): a run is reproducible and the draw does not depend on batch order [ours].
Captions and thinks come from templates keyed by question category (`TemplateTexts`), or from
any object with the same two methods (e.g. an LLM generator through the project's sampler).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Protocol

import numpy as np

from evals.schema import LETTERS, Item

VARIANTS = ("base", "stop_think", "wrong_think", "wrong_think_but", "wrong_caption",
            "wrong_caption_disclaimer", "correct_caption", "correct_think", "abstain")
STOP_THINK = "<think>Okay let's see. This should be the final answer.</think>"
BUT_SUFFIX = " But I think"
DISCLAIMER = ", but I could be wrong."
ABSTAIN_OPTION = "I'm not sure"


@dataclasses.dataclass(frozen=True)
class PromptSpec:
  variant: str
  question: str                   # user text: caption (if any) + the item's question
  options: tuple[str, ...]        # lettered A, B, ... (abstain appends ABSTAIN_OPTION)
  answer: str                     # key letter (unchanged by every variant)
  assistant_prefill: str | None = None
  caption: str | None = None      # the inserted caption, as stored with the result
  think: str | None = None        # the inserted reasoning, as stored with the result
  target: str | None = None       # letter the caption/think asserts

  @property
  def letters(self) -> tuple[str, ...]:
    return tuple(LETTERS[: len(self.options)])


class TextSource(Protocol):
  def caption(self, item: Item, option: int) -> str: ...
  def think(self, item: Item, option: int) -> str: ...


def _meta(item: Item) -> dict:
  return dict(item.meta)


def _statement(item: Item, option: int) -> str:
  """A declarative sentence asserting option `option` (meta `statement_<letter>` when given)."""
  meta = _meta(item)
  letter = LETTERS[option]
  if f"statement_{letter}" in meta:
    return meta[f"statement_{letter}"]
  text = item.options[option].strip().rstrip(".")
  question = item.question.strip()
  return f'For the question "{question}", the answer is "{text}"'


class TemplateTexts:
  """Captions and thinks from per-category templates; a generic template for the rest.

  Templates see {statement} (a sentence asserting the option), {option} (its text), {letter}.
  """

  CAPTIONS = {
      "default": "{statement}.",
  }
  THINKS = {
      "default": "Let me look at the image carefully. {statement}. So the answer should be "
                 "({letter}) {option}.",
      "count": "Let me count the objects one by one. {statement}. So the answer should be "
               "({letter}) {option}.",
  }

  def _fill(self, table: dict, item: Item, option: int) -> str:
    template = table.get(item.category.lower(), table["default"])  # CV-Bench says "Count"
    return template.format(statement=_statement(item, option), option=item.options[option],
                           letter=LETTERS[option])

  def caption(self, item: Item, option: int) -> str:
    return self._fill(self.CAPTIONS, item, option)

  def think(self, item: Item, option: int) -> str:
    return self._fill(self.THINKS, item, option)


def wrong_option(item: Item, seed: int) -> int:
  """Index of an incorrect option, uniform, from a generator seeded by (seed, item key)."""
  digest = hashlib.sha256(f"{seed}/{item.key}".encode()).digest()
  rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
  wrong = [i for i in range(len(item.options)) if i != item.answer_index]
  return int(wrong[rng.integers(len(wrong))])


def make_variant(item: Item, variant: str, seed: int = 0,
                 texts: TextSource | None = None) -> PromptSpec:
  """The prompt of `item` under `variant` (one of VARIANTS)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
  texts = texts or TemplateTexts()
  base = PromptSpec(variant, item.question, tuple(item.options), item.answer)
  if variant == "base":
    return base
  if variant == "stop_think":
    return dataclasses.replace(base, assistant_prefill=STOP_THINK, think=STOP_THINK)
  if variant == "abstain":
    return dataclasses.replace(base, options=base.options + (ABSTAIN_OPTION,))
  target = item.answer_index if variant.startswith("correct") else wrong_option(item, seed)
  letter = LETTERS[target]
  if variant.endswith("think") or variant == "wrong_think_but":
    think = texts.think(item, target) + (BUT_SUFFIX if variant == "wrong_think_but" else "")
    return dataclasses.replace(base, assistant_prefill="<think>" + think, think=think,
                               target=letter)
  caption = texts.caption(item, target)
  if variant == "wrong_caption_disclaimer":
    caption = caption.rstrip(".") + DISCLAIMER
  return dataclasses.replace(base, question=f"{caption}\n{item.question}", caption=caption,
                             target=letter)


class LLMTexts:
  """Captions and thinks written by a language model: `generate_fn(message_lists,
  max_new_tokens) -> texts` (e.g. `evals.llm_judge.local_generate_fn` on our sampler).

  Falls back to the templates when the model returns nothing usable. Results are memoised per
  (item, option, kind), so every variant of an item shares the same text.
  """

  def __init__(self, generate_fn, max_new_tokens: int = 96, fallback: TextSource | None = None):
    self.generate_fn, self.max_new_tokens = generate_fn, max_new_tokens
    self.fallback = fallback or TemplateTexts()
    self._memo: dict = {}

  def _ask(self, item: Item, option: int, kind: str) -> str:
    key = (item.key, option, kind)
    if key not in self._memo:
      what = ("a one-sentence image caption that states this as a visible fact"
              if kind == "caption" else
              "two sentences of step-by-step reasoning about the image that conclude it")
      prompt = (f'Question about an image: "{item.question}"\nClaim: the answer is '
                f'"{item.options[option]}".\nWrite {what}. Reply with the text only.')
      reply = self.generate_fn([[{"role": "user", "content": prompt}]], self.max_new_tokens)[0]
      fallback = getattr(self.fallback, kind)(item, option)
      self._memo[key] = reply.strip() or fallback
    return self._memo[key]

  def caption(self, item: Item, option: int) -> str:
    return self._ask(item, option, "caption")

  def think(self, item: Item, option: int) -> str:
    return self._ask(item, option, "think")
