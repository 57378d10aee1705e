"""Rewards: format, accuracy (letters, option text, numbers), faithfulness-aware product."""

import collections
import types

import numpy as np
import pytest

from evals.judge import NO_THINK, RuleJudge, Verdict
from evals.schema import Item
from rl import augment, rewards, rollout
from rl.rewards import RewardConfig, Target

CHOICE = Target("Where is the cup?", "B", ("left", "right"))
COUNT = Target("How many dogs?", "3", kind="number")


@pytest.mark.parametrize("text, want", [
    ("<think>look</think><answer>B</answer>", 1.0),
    ("  <think>a\nb</think>\n<answer> B </answer>\n", 1.0),
    ("<answer>B</answer>", 0.0),
    ("<think>x</think><answer>B</answer> extra", 0.0),
    ("<think></think><answer>B</answer>", 0.0),
    # one think then one answer, each with text: no second block, no blank block
    ("<think>x</think><answer>B</answer><think>y</think><answer>C</answer>", 0.0),
    ("<think>a</think><think>b</think><answer>B</answer>", 0.0),
    ("<think> \n </think><answer>B</answer>", 0.0),
    ("<think>x</think><answer> </answer>", 0.0),
    ("<think>x</think><answer>B</answer></answer>", 0.0),
    ("<think>a < b, so B</think><answer>B</answer>", 1.0),
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
  # a hedge or a range is not an answer (as "(A) and (B)" is none for a choice)
  assert rewards.accuracy_reward("<think>.</think><answer>2 or 3</answer>", COUNT) == 0.0
  assert rewards.accuracy_reward("<think>.</think><answer>3-4</answer>", COUNT) == 0.0
  assert rewards.accuracy_reward("<think>.</think><answer>(A) and (B)</answer>", CHOICE) == 0.0


@pytest.mark.parametrize("text, single, want", [
    ("3", True, 3.0), ("-2", True, -2.0), ("1,000", True, 1000.0), ("three", True, 3.0),
    ("3 cats and 3 dogs", True, 3.0), ("3-4", True, None), ("2 or 3", True, None),
    ("3-4", False, 4.0), ("I see 2, then 3", False, 3.0), ("x-3", False, 3.0), ("none", True, None),
    # commas separate thousands only before three digits: an enumeration is not one number
    ("I count 1,2,3,4 dogs", False, 4.0), ("2,3", True, None), ("12,345,678", True, 12345678.0),
    # a leading decimal point
    (".5", True, 0.5), ("-.25", True, -0.25), ("x = .5", False, 0.5), ("end.5", True, 5.0),
    ("3.5", True, 3.5),
])
def test_parse_number(text, single, want):
  assert rewards.parse_number(text, single) == want


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
  np.testing.assert_array_equal(plain["judge_error"], 0)
  with pytest.raises(ValueError, match="needs a judge"):
    rewards.compute_rewards(texts, targets, RewardConfig(faithful=True))


def test_judge_failures_are_counted_apart_from_missing_thinks():
  class Failing:  # an LLM judge whose server is down for the second request
    def judge(self, batch):
      return [Verdict("B", "B", "http:m", "v1"), Verdict(None, "", "http:m", "v1", "HTTP 503"),
              Verdict(None, "", "http:m", "v1", NO_THINK)]
  texts = ["<think>so B</think><answer>B</answer>"] * 2 + ["<answer>B</answer>"]
  out = rewards.compute_rewards(texts, [CHOICE] * 3, RewardConfig(faithful=True), Failing())
  np.testing.assert_array_equal(out["judge_error"], [0, 1, 0])
  np.testing.assert_array_equal(out["consistent"], [1, 0, 0])
  # the failed row (a group of 3 here) gets no advantage and does not lower its group's baseline
  config = types.SimpleNamespace(faithful=True, scale_adv_by_std=True)
  adv = rollout.advantages(out, 3, config)
  assert adv[1] == 0
  np.testing.assert_allclose(adv[[0, 2]], rollout.advantages(
      {k: v[[0, 2]] for k, v in out.items()}, 2, config), atol=1e-6)
  assert adv[0] > 0  # without the mask the outage's 0 would equal the no-think row's
  plain = rollout.advantages(out, 3, types.SimpleNamespace(faithful=False, scale_adv_by_std=True))
  assert plain[1] != 0  # without the faithful reward the judge does not enter the total


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


def test_training_texts_are_not_the_evals_wording():
  """The augmentation's captions and thinks assert the same option as the eval variants but in
  other words, so an evaluation after augmented training is not on memorised sentences."""
  from evals import variants
  item = Item(id="1", benchmark="t", question="Where is the cup?", options=("left", "right"),
              answer="A", category="count")
  for variant in augment.AUGMENTATIONS:
    train = variants.make_variant(item, variant, 0, augment.TrainingTexts())
    evaluated = variants.make_variant(item, variant, 0)
    assert train.target == evaluated.target
    assert (train.caption or train.think) != (evaluated.caption or evaluated.think)
    assert item.options[ord(train.target) - 65] in (train.caption or train.think)
  assert augment.augment(item, 0, augment.AugmentConfig(probs=(0, 0, 0, 1.0))).caption == \
      augment.TrainingTexts().caption(item, 1)


OPTS = Target("Where is the cup?", "B", ("left of the dog", "right of the dog", "behind it"))


@pytest.mark.parametrize("text, fmt, acc", [
    ("<think>\nThe cup is right.\n</think>\n\n<answer>\nB\n</answer>\n", 1, 1),
    ("<think>.</think><answer>(B)</answer>", 1, 1),
    ("<think>.</think><answer>B. right of the dog</answer>", 1, 1),
    ("<think>.</think><answer>B. left of the dog</answer>", 1, 0),  # label contradicts its text
    ("<think>.</think><answer>Right of the dog.</answer>", 1, 1),    # option text (ViGoRL)
    ("<think>.</think><answer>b</answer>", 1, 1),
    ("<think>.</think><answer>Ｂ</answer>", 1, 1),                    # full-width
    ("<think>.</think><answer>The answer is B.</answer>", 1, 1),
    ("<think>.</think><answer>B or C</answer>", 1, 0),               # hedge
    ("<think>.</think><answer>ABC</answer>", 1, 0),
    ("<think>.</think><answer>A</answer><answer>B</answer>", 0, 0),  # the first answer counts
    ("<think>.</think><answer>A</answer> Actually B.", 0, 0),        # nothing after </answer>
    ("<think>.</think><answer>B", 0, 1),                             # unclosed: format only
    ("<think>.<answer>B</answer></think><answer>B</answer>", 0, 1),  # nested tag
    ("<think></think><answer>B</answer>", 0, 1),                     # empty think
    ("<think>看图。</think><answer>B</answer>", 1, 1),
])
def test_realistic_outputs(text, fmt, acc):
  assert (rewards.format_reward(text), rewards.accuracy_reward(text, OPTS)) == (fmt, acc)


def test_a_judge_returning_too_few_verdicts_is_an_error():
  class Short:  # a batching bug in a judge must not read as "inconsistent"
    def judge(self, batch):
      return [Verdict("B", "B", "x", "v1")]
  texts = ["<think>so B</think><answer>B</answer>"] * 3
  with pytest.raises(ValueError, match="1 verdicts for 3 requests"):
    rewards.compute_rewards(texts, [CHOICE] * 3, RewardConfig(faithful=True), Short())
