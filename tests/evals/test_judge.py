"""CoT-consistency judges: output splitting, letter parsing, rule judge, LLM judge, make_judge
(the HTTP judge: test_judge_http.py)."""

import re

import pytest

from evals import judge as judge_lib
from evals.judge import (JUDGE_PROMPT_VERSION, RULE_VERSION, JudgeRequest, LLMJudge,
                         RuleJudge, Verdict, consistency, judge_prompt, make_judge, parse_letter,
                         split_output)
from evals.judge_http import HTTPJudge

LETTERS = ["A", "B", "C", "D"]
OPTIONS = ["the red circle", "blue square", "left", "left side"]


# ----------------------------------------------------------------------------------------------
# split_output

@pytest.mark.parametrize("text, think, answer", [
    ("<think>The cup is red.</think><answer>B</answer>", "The cup is red.", "B"),
    ("<think>\n x \n</think>\n<answer> C </answer>", "x", "C"),
    ("Sure. <think>t</think><answer>A</answer>", "t", "A"),               # preamble ignored
    # prefilled think: the output starts mid-think, no opening tag
    (" it faces left, so A.</think><answer>A</answer>", "it faces left, so A.", "A"),
    # missing closing think tag: think runs to <answer>, or to the end
    ("<think>abc <answer>B</answer>", "abc", "B"),
    ("<think>still thinking", "still thinking", None),
    ("continued prefill, no tags at all", "continued prefill, no tags at all", None),
    # Vision-R1 may omit answer tags
    ("<think>so B</think> The answer is B.", "so B", None),
    ("prefilled</think>B", "prefilled", None),
    # unclosed <answer> (stop string cut off), empty parts, nothing
    ("<think>x</think><answer> D", "x", "D"),
    ("<answer>B</answer>", None, "B"),
    ("<think></think><answer></answer>", None, None),
    ("<THINK>x</THINK><Answer>b</Answer>", "x", "b"),
    ("", None, None),
    (None, None, None),
])
def test_split_output(text, think, answer):
  assert split_output(text) == (think, answer)


# ----------------------------------------------------------------------------------------------
# parse_letter

@pytest.mark.parametrize("text, want", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("[C]", "C"), ("**D**", "D"), (" b ", "B"),
    ("B) blue square", "B"), ("B) the red one", "B"), ("(B) blue square", "B"),
    ("B: blue square", "B"), ("Option D", "D"), ("Answer: B", "B"), ("answer: (C)", "C"),
    ("the answer is B", "B"), ("The answer is B.", "B"), ("Therefore the answer is C.", "C"),
    ("\\boxed{A}", "A"), ("<answer>C</answer>", "C"), ("A", "A"), ("A.", "A"),
    # option text (ViGoRL): case, space, punctuation and leading article do not matter
    ("the red circle", "A"), ("Red  Circle.", "A"), ("BLUE-SQUARE", "B"), ("a red circle", "A"),
    ("left", "C"), ("Left side", "D"), ("the answer is left side", "D"),
    ("the correct option is the red circle", "A"),
    ("The answer is A green triangle", None),  # article "A", and no option is green
    ("The answer is A blue square", "B"),
    # ambiguous: two letters or a label contradicting its text
    ("A or B", None), ("A, B", None), ("B) the red circle", None),
    ("Answer: A. Answer: B", None), ("A and C are both plausible", None),
    # hedges and lists of options name two letters (each parsed as its first letter before)
    ("(C) and (D)", None), ("(C) (D)", None), ("(C) left (D) left side", None),
    ("The answer is C or D", None), ("A. the red circle B. blue square C. left D. left side", None),
    # another letter that is ruled out, or the article "A", is no second letter
    ("C, not D", "C"), ("The answer is C because A is wrong", "C"),
    ("B) blue square, not A", "B"),
    # lower case where it cannot be the article, decorated and full-width letters
    ("(b)", "B"), ("b)", "B"), ("option b", "B"), ("answer: b", "B"), ("answer: a red car", None),
    ("C (left)", "C"), ("C (blue square)", None), ("C, left", "C"), ("\\boxed{\\text{C}}", "C"),
    ("\uff23", "C"), ("\uff08\uff22\uff09", "B"),
    # nothing
    ("", None), ("NONE", None), ("E", None), ("Blue", None), ("green triangle", None),
    ("I cannot tell", None), (None, None),
])
def test_parse_letter(text, want):
  assert parse_letter(text, LETTERS, OPTIONS) == want


def test_parse_letter_duplicate_option_texts_are_ambiguous():
  assert parse_letter("red", ["A", "B", "C"], ["red", "Red.", "blue"]) is None
  assert parse_letter("blue", ["A", "B", "C"], ["red", "Red.", "blue"]) == "C"


# ----------------------------------------------------------------------------------------------
# RuleJudge

WRONG_THINK = ("The dog's body is turned so that its right side is facing the camera, which "
               "means the answer should be B. But I think the answer is A.")
RULE_CASES = [
    ("Looking closely, the top shape is red. So the answer is B.", "B"),
    (WRONG_THINK, "A"),
    ("Comparing both objects, therefore (C).", "C"),
    ("Therefore, C.", "C"),
    ("The correct option is the red circle.", "A"),
    ("Hard to say. I'll go with A.", "A"),
    ("I will go with option D.", "D"),
    ("Final answer: D", "D"),
    ("answer: the blue square", "B"),
    ("B is correct because the square is blue.", "B"),
    ("(C) is the best answer here.", "C"),
    ("I think it's C.", "C"),
    ("So the answer is \\boxed{B}.", "B"),
    ("The answer is likely B, not A.", "B"),
    ("So the answer is A blue square.", "B"),  # "A" is the article here
    ("It seemed A is correct, but on reflection the answer is C.", "C"),  # change of mind
    ("Option A is wrong. So the answer is C.", "C"),
    # a conclusion followed by a little more talk still counts (within the last 3 sentences)
    ("So the answer is B. Let me double check. The square is blue.", "B"),
    ("The answer is C.\nWait, that was the left side.", "C"),
    # no cue: the last option mentioned in the final sentence
    ("The object is on the left.", "C"),
    ("It is not on the left side, it is the blue square.", "B"),
    ("Between (A) and (B), the picture shows (B)", "B"),
    ("It sits on the left side", "D"),   # longest of the overlapping option texts
    # nothing concluded
    ("Okay let's see. This should be the final answer.", None),
    ("A careful look shows nothing conclusive.", None),
    ("The answer is not A.", None),
    ("Therefore, option A is wrong.", None),
    ("So the answer is B. Then I looked again. Hmm. It is hard. Nothing is clear.", None),
    # rules v2: a change of mind with "actually", a negation earlier in the clause, and an
    # option word used as an adjective of "answer" (not a mention of option C)
    ("The answer should be C. Let me double check. Actually, it's D.", "D"),
    ("The shape is not on the left.", None),
    ("It isn't on the left side; it is the blue square.", "B"),
    ("There is no doubt: it is on the left.", "C"),
    ("The square is blue. That's the left answer.", None),
]


@pytest.mark.parametrize("think, want", RULE_CASES)
def test_rule_judge(think, want):
  verdict = RuleJudge().judge([JudgeRequest("Which shape?", OPTIONS, LETTERS, think)])[0]
  assert verdict.letter == want, verdict
  assert verdict.error is None
  assert (verdict.judge, verdict.prompt_version) == ("rule", RULE_VERSION)


def test_rule_judge_keeps_batch_order_and_flags_missing_think():
  batch = [JudgeRequest("q", OPTIONS, LETTERS, t) for t, _ in RULE_CASES]
  batch.insert(2, JudgeRequest("q", OPTIONS, LETTERS, None))
  batch.insert(3, JudgeRequest("q", OPTIONS, LETTERS, "  \n "))
  verdicts = RuleJudge(name="r").judge(batch)
  assert [v.letter for v in verdicts] == [w for _, w in RULE_CASES[:2]] + [None, None] + \
      [w for _, w in RULE_CASES[2:]]
  assert verdicts[2] == Verdict(None, "", "r", RULE_VERSION, judge_lib.NO_THINK)
  assert verdicts[3].error == judge_lib.NO_THINK and verdicts[0].error is None


def test_rule_judge_window_is_a_parameter():
  think = "So the answer is B. One. Two. Three."
  assert RuleJudge(window=3).judge([JudgeRequest("q", OPTIONS, LETTERS, think)])[0].letter is None
  assert RuleJudge(window=4).judge([JudgeRequest("q", OPTIONS, LETTERS, think)])[0].letter == "B"


def test_consistency():
  assert consistency("B", "B") is True
  assert consistency("A", "B") is False
  assert consistency(None, "B") is None and consistency("B", None) is None


def test_judge_request_checks_lengths():
  with pytest.raises(ValueError, match="3 options but 2 letters"):
    JudgeRequest("q", ["x", "y", "z"], ["A", "B"], "t")


# ----------------------------------------------------------------------------------------------
# judge_prompt and LLMJudge

def test_judge_prompt():
  messages = judge_prompt("Where is the cup?", ["left", "right"], ["A", "B"], "It is left. So A.")
  assert [m["role"] for m in messages] == ["system", "user"]
  system, user = messages[0]["content"], messages[1]["content"]
  assert "NONE" in system and "letter" in system
  assert "Where is the cup?" in user and "A. left\nB. right" in user
  assert "It is left. So A." in user and user.endswith("exactly one of: A, B, NONE.")
  long = judge_prompt("q", ["x", "y"], ["A", "B"], "start " + "z" * 100 + " END", 50)
  assert "[...] " in long[1]["content"] and "END" in long[1]["content"]
  assert "start" not in long[1]["content"]  # the head goes, the conclusion stays


class FakeGenerate:
  """Replies from a table keyed by the question; records every call."""

  def __init__(self, replies):
    self.replies, self.calls = replies, []

  def __call__(self, prompts, max_new_tokens):
    self.calls.append((prompts, max_new_tokens))
    return [self.replies[re.search(r"Question: (\S+)", p[1]["content"])[1]] for p in prompts]


def test_llm_judge_with_fake_generate_fn():
  fake = FakeGenerate({"q1": "B", "q2": "NONE", "q3": "between A and B",
                       "q4": "<think>hm</think>(C)", "q5": "The answer is the red circle.",
                       "q6": "<think>cut off"})
  batch = [JudgeRequest(f"q{i}", OPTIONS, LETTERS, f"think {i}") for i in range(1, 7)]
  batch.insert(1, JudgeRequest("q0", OPTIONS, LETTERS, None))
  verdicts = LLMJudge(fake, name="jax:qwen", max_new_tokens=8).judge(batch)
  assert len(fake.calls) == 1 and fake.calls[0][1] == 8
  prompts = fake.calls[0][0]
  assert len(prompts) == 6  # the think-less request is not sent
  assert prompts[0] == judge_prompt("q1", OPTIONS, LETTERS, "think 1")
  assert [v.letter for v in verdicts] == ["B", None, None, None, "C", "A", None]
  assert [v.error for v in verdicts] == [None, judge_lib.NO_THINK, None, "unparseable judge reply",
                                         None, None, "unparseable judge reply"]
  assert verdicts[3].raw == "between A and B"
  assert {(v.judge, v.prompt_version) for v in verdicts} == {("jax:qwen", JUDGE_PROMPT_VERSION)}


@pytest.mark.parametrize("reply, letter, error", [
    ("B", "B", None), ("**B**", "B", None), ("Letter: B", "B", None),
    ("<think>\n\n</think>\n\nB", "B", None),                    # Qwen3, thinking off
    ("NONE", None, None), ("None.", None, None),
    # JSON, bare or fenced, and the prompt's own words
    ('{"answer": "B"}', "B", None), ('```json\n{"letter": "C"}\n```', "C", None),
    ('{"conclusion": "(D) left side", "why": "it says so"}', "D", None),
    ('{"option": "NONE"}', None, None), ('{"answer": null}', None, None), ('"B"', "B", None),
    ("The reasoning concludes B.", "B", None), ("The reasoning concludes option C", "C", None),
    # nothing usable: an error, never a guess
    ('{"a": "B", "b": "C"}', None, judge_lib.UNPARSEABLE), ("B or C", None, judge_lib.UNPARSEABLE),
    ("I'm sorry, but I can't help with that.", None, judge_lib.UNPARSEABLE),
    ("<think>still thinking when max_tokens ran out", None, judge_lib.UNPARSEABLE),
])
def test_verdict_from_reply(reply, letter, error):
  request = JudgeRequest("q", OPTIONS, LETTERS, "so B")
  verdict = judge_lib.verdict_from_reply(reply, request, "j")
  assert (verdict.letter, verdict.error, verdict.raw) == (letter, error, reply)


def test_llm_judge_rejects_wrong_reply_count():
  judge = LLMJudge(lambda prompts, n: ["A"])
  with pytest.raises(ValueError, match="1 replies for 2 prompts"):
    judge.judge([JudgeRequest("q", OPTIONS, LETTERS, "t")] * 2)


def requests_for(questions):
  return [JudgeRequest(q, OPTIONS, LETTERS, f"reasoning for {q}") for q in questions]


# ----------------------------------------------------------------------------------------------
# make_judge

def test_make_judge(tmp_path, monkeypatch):
  monkeypatch.delenv("JUDGE_MODEL", raising=False)
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  assert isinstance(make_judge("rule"), RuleJudge)

  judge = make_judge("http://127.0.0.1:8000/v1/#Qwen3-32B", timeout=2.0)
  assert isinstance(judge, HTTPJudge) and judge_lib.HTTPJudge is HTTPJudge
  assert (judge.url, judge.model, judge.api_key, judge.timeout) == (
      "http://127.0.0.1:8000/v1/chat/completions", "Qwen3-32B", None, 2.0)
  # Qwen3 (the study's judge) thinks by default: its few reply tokens would end inside <think>
  assert judge.extra_body == {"chat_template_kwargs": {"enable_thinking": False}}
  assert make_judge("http://h/v1#Qwen3-32B", extra_body={}).extra_body == {}
  with pytest.raises(ValueError, match="JUDGE_MODEL"):
    make_judge("https://example.invalid/v1")
  with pytest.raises(ValueError, match="JUDGE_MODEL"):  # before any model loads
    judge_lib.check_spec("https://example.invalid/v1")
  monkeypatch.setenv("JUDGE_MODEL", "gpt-oss-120b")
  monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
  judge = make_judge("https://example.invalid/v1")
  assert (judge.model, judge.api_key) == ("gpt-oss-120b", "sk-env")
  assert judge.name == "http:gpt-oss-120b"

  model_dir = tmp_path / "Qwen2.5-VL-7B-Instruct"
  model_dir.mkdir()
  seen = []
  fake = FakeGenerate({"q1": "C"})
  judge = make_judge(str(model_dir), lambda path: seen.append(path) or fake)
  assert isinstance(judge, LLMJudge) and seen == [str(model_dir)]
  assert judge.name == "llm:Qwen2.5-VL-7B-Instruct"
  assert judge.judge(requests_for(["q1"]))[0].letter == "C"
  with pytest.raises(ValueError, match="no generate_fn_factory"):
    make_judge(str(model_dir))
  with pytest.raises(ValueError, match="unknown judge spec"):
    make_judge(str(tmp_path / "missing"))
