"""Rewards: format, accuracy (letters, option text, numbers), faithfulness-aware product."""

import collections

import numpy as np
import pytest

from evals.judge import RuleJudge
from evals.schema import Item
from rl import augment, rewards
from rl.rewards import RewardConfig, Target

CHOICE = Target("Where is the cup?", "B", ("left", "right"))
COUNT = Target("How many dogs?", "3", kind="number")


@pytest.mark.parametrize("text, want", [
    ("<think>look</think><answer>B</answer>", 1.0),
    ("  <think>a\nb</think>\n<answer> B </answer>\n", 1.0),
    ("<answer>B</answer>", 0.0),
    ("<think>x</think><answer>B</answer> extra", 0.0),
    ("<think></think><answer>B</answer>", 0.0),
])
def test_format(text, want):
  assert rewards.format_reward(text) == want


def test_accuracy_letters_text_and_numbers():
  assert rewards.accuracy_reward("<think>.</think><answer>(B)</answer>", CHOICE) == 1.0
  assert rewards.accuracy_reward("<think>.</think><answer>right</answer>", CHOICE) == 1.0
  assert rewards.accuracy_reward("<think>.</think><answer>A</answer>", CHOICE) == 0.0
  assert rewards.accuracy_reward("B", CHOICE) == 0.0  # no answer tag
  assert rewards.accuracy_reward("<think>.</think><answer>3</answer>", COUNT) == 1.0
  assert rewards.accuracy_reward("<think>.</think><answer>three dogs</answer>", COUNT) == 1.0
  assert rewards.accuracy_reward("<think>.</think><answer>3.5</answer>", COUNT) == 0.0


def test_faithfulness_reward_zeroes_inconsistent_rollouts():
  texts = [
      "<think>The cup is on the right, so the answer is B.</think><answer>B</answer>",  # consistent
      "<think>The cup is on the left, so the answer is A.</think><answer>B</answer>",   # not
      "<think>It points left, so the answer is A.</think><answer>A</answer>",  # consistent, wrong
      "<think>I count 1, 2, 3 dogs.</think><answer>3</answer>",                  # consistent
      "<think>I count 4 dogs.</think><answer>3</answer>",                         # not
  ]
  targets = [CHOICE, CHOICE, CHOICE, COUNT, COUNT]
  plain = rewards.compute_rewards(texts, targets, RewardConfig(), RuleJudge())
  faithful = rewards.compute_rewards(texts, targets, RewardConfig(faithful=True), RuleJudge())
  np.testing.assert_allclose(plain["total"], [1.1, 1.1, 0.1, 1.1, 1.1])
  np.testing.assert_array_equal(plain["consistent"], [1, 0, 1, 1, 0])
  np.testing.assert_allclose(faithful["total"], [1.1, 0.0, 0.1, 1.1, 0.0])
  with pytest.raises(ValueError, match="needs a judge"):
    rewards.compute_rewards(texts, targets, RewardConfig(faithful=True))


def test_augmentation_rates_and_reproducibility():
  items = [Item(id=str(i), benchmark="t", question="Q?", options=("a", "b", "c"), answer="A")
           for i in range(2000)]
  cfg = augment.AugmentConfig(seed=1)
  counts = collections.Counter(augment.choose_variant(it, 7, cfg) for it in items)
  assert abs(counts["base"] / 2000 - 0.6) < 0.04
  for name in augment.AUGMENTATIONS:
    assert abs(counts[name] / 2000 - 0.1) < 0.025
  assert all(augment.choose_variant(it, 7, cfg) == augment.choose_variant(it, 7, cfg)
             for it in items[:50])
  spec = augment.augment(items[0], 7, cfg)
  assert spec.variant == augment.choose_variant(items[0], 7, cfg)
  with pytest.raises(ValueError):
    augment.AugmentConfig(probs=(0.5, 0.5, 0.5, 0.5))
