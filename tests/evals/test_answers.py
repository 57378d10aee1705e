"""Answer extraction on the shapes Qwen2.5-VL and its RL descendants write (tags, labels, option
text, Markdown, CJK punctuation), and what must stay unparsed (hedges, letters past the options)."""

import pytest

from evals import presets
from evals.answers import parse_letter, split_output
from evals.variants import PromptSpec

LETTERS = ["A", "B", "C", "D"]
OPTIONS = ["cat", "dog", "bird", "fish"]


@pytest.mark.parametrize("text, want", [
    ("<answer>(B)</answer>", "B"), ("B", "B"), ("The answer is B.", "B"), ("**B**", "B"),
    ("**Answer:** B", "B"), ("Answer: **B**", "B"), ("**(B)**", "B"), ("**B. dog**", "B"),
    ("B) dog", "B"), ("(b) dog", "B"), ("B: dog", "B"), ("B, dog", "B"), ("B - dog", "B"),
    ("dog", "B"), ("The dog.", "B"), ("a dog", "B"), ("b", "B"), ("a", "A"),
    ("A cat", "A"), ("Final Answer: B", "B"), ("final answer: $\\boxed{B}$", "B"),
    ("The correct answer is (B) dog.", "B"), ("B.\n\nThe dog is on the left.", "B"),
    # a label contradicting its text, two letters, hedges, a letter past the options: unparsed
    ("B) cat", None), ("B C", None), ("BC", None), ("AB", None), ("(B) or (C)", None),
    ("Probably B, but maybe C", None), ("E", None), ("F) x", None), ("I", None),
    ("I'm not sure", None), ("None of the above", None), ("It's not B", None),
])
def test_realistic_answers(text, want):
  assert parse_letter(text, LETTERS, OPTIONS) == want


@pytest.mark.parametrize("text, want", [
    ("B\u3002", "B"), ("<answer>B\u3002</answer>", "B"), ("\u3010B\u3011", "B"),
    ("\u300cB\u300d", "B"), ("B\u3001dog", "B"), ("B\u3001C", None),
    ("\uff08B\uff09", "B"), ("B\uff1a dog", "B"),       # full-width, as before
    ("\u7b54\u6848\uff1aB", "B"), ("\u7b54\u6848\u662fB\u3002", "B"),  # 答案：B, 答案是B。
    ("\u9009\u9879 C", "C"),                              # 选项 C
])
def test_cjk_punctuation_and_answer_prefix(text, want):
  """Qwen models sometimes close an answer with Chinese punctuation or label it in Chinese."""
  assert parse_letter(text, LETTERS, OPTIONS) == want


def test_answers_go_through_the_preset():
  spec = PromptSpec("base", "q", tuple(OPTIONS), "B")
  instruct, vision_r1 = presets.get_preset("qwen2_5_vl_instruct"), presets.get_preset("vision_r1")
  assert presets.parse_answer("<think>it barks</think><answer>B\u3002</answer>", spec,
                              instruct) == "B"
  # the answer is what the <answer> tag holds; a conclusion only inside the think is no answer
  assert presets.parse_answer("<think>so the answer is B</think>", spec, instruct) is None
  assert presets.parse_answer("<think>so B</think>\nThe answer is B.", spec, vision_r1) == "B"
  # generation stops at "</answer>", so an answer written inside an unclosed think is the answer
  assert split_output("<think>it barks <answer>B</answer>") == ("it barks", "B")
