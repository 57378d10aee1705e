"""Prompt presets: the answer each evaluated model's output convention gives."""

import pytest

from evals.presets import PRESETS, answer_text, get_preset, parse_answer
from evals.variants import PromptSpec

SPEC = PromptSpec("base", "Where is the cup?", ("right", "above", "left", "below"), "C")


@pytest.mark.parametrize("output, want", [
    ("<think>x</think><answer>C</answer>", "C"),
    ("<think>x</think> C", "C"),            # Vision-R1 may end with a bare answer
    ("<think>x</THINK>\nC", "C"),           # in any tag spelling split_output accepts
    ("<think>x</ think > (C) left", "C"),
    ("<think>a</think> A <think>b</think> C", "C"),  # after the last closing tag
    ("<think>x</think>", None), ("no tags at all: C", None),
])
def test_vision_r1_bare_answers(output, want):
  assert parse_answer(output, SPEC, get_preset("vision_r1")) == want


def test_bare_answers_only_where_the_preset_allows_them():
  assert answer_text("<think>x</think> C", get_preset("r1")) is None
  assert answer_text("<think>x</think> C", get_preset("vision_r1")) == "C"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_reads_a_tagged_letter_or_text_and_refuses_hedges(name):
  preset = get_preset(name)
  assert parse_answer("<think>x</think><answer>C</answer>", SPEC, preset) == "C"
  assert parse_answer("<think>x</think><answer>the left</answer>", SPEC, preset) == "C"
  assert parse_answer("<think>x</think><answer>C or D</answer>", SPEC, preset) is None
  assert parse_answer("<think>x</think><answer>\n</answer>", SPEC, preset) is None


@pytest.mark.parametrize("answer, want", [
    ("C\n\nThe cup is left of the plate.", "C"),   # a label alone on its first line decides
    ("(C)\nbecause the handle points left", "C"), ("**C.**\nleft", "C"), ("C.\nD is wrong", "C"),
    ("the\nleft", "C"),                             # no label line: the text, collapsed
    ("C or\nD", None), ("Z\nleft", None),            # not an option letter: the whole text
])
def test_a_label_on_its_own_first_line_is_the_answer(answer, want):
  for name in ("r1", "qwen2_5_vl_instruct"):
    assert parse_answer(f"<think>x</think><answer>{answer}</answer>", SPEC,
                        get_preset(name)) == want


def test_unknown_preset():
  with pytest.raises(KeyError, match="unknown preset"):
    get_preset("llava")
