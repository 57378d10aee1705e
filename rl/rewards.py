"""Rewards for GRPO (PAPER.md section 7): format, accuracy, and the faithfulness-aware product.

  total = w_format * format + w_accuracy * accuracy            (defaults 0.1 and 1.0)
  faithful total = total * consistent                          (consistent in {0, 1})
format = 1 iff the response is exactly `<think>...</think><answer>...</answer>`: one think block
then one answer block, each with some non-blank text and no think/answer tag inside (whitespace
around the blocks allowed). accuracy = 1 iff the `<answer>` matches the key: an option letter or
text for multiple choice, the one number it gives for counting data (a hedge such as "2 or 3",
or a range "3-4", matches nothing). consistent = 1 iff the judge's
reading of the `<think>` conclusion equals the parsed answer (for numbers: the last number in
the think). Every component is returned separately so it can be logged, and so is judge_error:
1 where the judge gave no verdict (a transport failure after its retries, an unparseable
reply), which counts as inconsistent; training logs its mean (`reward/judge_error`), so a
judge outage shows instead of silently zeroing faithful rewards.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from evals.answers import parse_letter, split_output
from evals.judge import NO_THINK, JudgeRequest

_FORMAT = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.S)
_TAG = re.compile(r"</?(?:think|answer)>")
# a minus sign only where no digit or word precedes it: "3-4" is a range, not 3 and -4
# ".5" is 0.5 where no word or digit precedes the point ("end.5" stays 5)
_NUMBER = re.compile(r"(?:(?<![\w.])-)?(?:\d+(?:\.\d+)?|(?<![\w.])\.\d+)")
# a thousands separator only before a group of exactly three digits: "1,000" is 1000, while an
# enumeration "1,2,3" (a count in the think) or "2,3" (a hedge) stays several numbers
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten "
                                     "eleven twelve".split())}


@dataclasses.dataclass(frozen=True)
class Target:
  """What a rollout is scored against: `kind` "choice" (answer = letter) or "number"."""
  question: str
  answer: str
  options: tuple[str, ...] = ()
  kind: str = "choice"

  @property
  def letters(self) -> list[str]:
    return [chr(65 + i) for i in range(len(self.options))]


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  format_weight: float = 0.1
  accuracy_weight: float = 1.0
  faithful: bool = False  # multiply by the judge's consistency verdict


def format_reward(text: str) -> float:
  m = _FORMAT.match(text)
  return float(bool(m) and all(part.strip() and not _TAG.search(part) for part in m.groups()))


def parse_number(text: str | None, single: bool = False) -> float | None:
  """The last number in `text` (digits or a number word up to twelve), else None. single (an
  answer, not reasoning): None unless the text gives exactly one number, so a hedge ("2 or 3")
  or a range ("3-4") is not read as its last number, as two option letters give no letter."""
  if not text:
    return None
  found = [float(x) for x in _NUMBER.findall(_THOUSANDS.sub("", text))]
  if not found:
    found = [float(_WORDS[w]) for w in re.findall(r"[a-z]+", text.lower()) if w in _WORDS]
  if not found or (single and len(set(found)) > 1):
    return None
  return found[-1]


def parsed_answer(text: str, target: Target):
  """The answer a response gives: a letter (choice) or a float (number), None if absent."""
  _, answer = split_output(text)
  if answer is None:
    return None
  if target.kind == "number":
    return parse_number(answer, single=True)
  return parse_letter(answer, target.letters, list(target.options))


def accuracy_reward(text: str, target: Target) -> float:
  got = parsed_answer(text, target)
  if got is None:
    return 0.0
  if target.kind == "number":
    want = parse_number(target.answer, single=True)
    return float(want is not None and abs(got - want) < 1e-6)
  return float(got == target.answer)


def _consistent(text: str, target: Target, verdict_letter) -> float:
  got = parsed_answer(text, target)
  if got is None:
    return 0.0
  if target.kind == "number":
    think, _ = split_output(text)
    return float(parse_number(think) == got)
  return float(verdict_letter is not None and verdict_letter == got)


def compute_rewards(texts: list[str], targets: list[Target], config: RewardConfig,
                    judge=None) -> dict[str, np.ndarray]:
  """Reward components per rollout: format, accuracy, consistent, judge_error, total (float32
  [R])."""
  fmt = np.array([format_reward(t) for t in texts], np.float32)
  acc = np.array([accuracy_reward(t, g) for t, g in zip(texts, targets)], np.float32)
  letters = [None] * len(texts)
  judge_error = np.zeros(len(texts), np.float32)
  choice = [i for i, g in enumerate(targets) if g.kind == "choice"]
  if judge is not None and choice:
    requests = [JudgeRequest(targets[i].question, list(targets[i].options), targets[i].letters,
                             split_output(texts[i])[0] or "") for i in choice]
    verdicts = list(judge.judge(requests))
    if len(verdicts) != len(requests):  # zip would leave the rest silently "inconsistent"
      raise ValueError(f"the judge returned {len(verdicts)} verdicts for {len(requests)} "
                       "requests")
    for i, verdict in zip(choice, verdicts):
      letters[i] = verdict.letter
      judge_error[i] = verdict.error not in (None, NO_THINK)  # no think: nothing to judge
  consistent = np.array([_consistent(t, g, l) for t, g, l in zip(texts, targets, letters)],
                        np.float32)
  total = config.format_weight * fmt + config.accuracy_weight * acc
  if config.faithful:
    if judge is None:
      raise ValueError("the faithfulness-aware reward needs a judge")
    total = total * consistent
  return {"format": fmt, "accuracy": acc, "consistent": consistent, "judge_error": judge_error,
          "total": total.astype(np.float32)}
