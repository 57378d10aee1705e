"""Prompt variants: the study's strings, seeded wrong options, stored texts."""

import collections

import pytest

from evals import variants
from evals.schema import Item


def _item(i=0, n=4, answer="B", category="relation"):
  return Item(id=str(i), benchmark="toy", question="Where is the cat?",
              options=tuple(f"option {k}" for k in range(n)), answer=answer, category=category)


def test_base_and_stop_think_and_abstain():
  item = _item()
  base = variants.make_variant(item, "base")
  assert base.question == item.question and base.assistant_prefill is None
  assert base.letters == ("A", "B", "C", "D") and base.answer == "B"
  stop = variants.make_variant(item, "stop_think")
  assert stop.assistant_prefill == ("<think>Okay let's see. This should be the final "
                                    "answer.</think>")
  abstain = variants.make_variant(item, "abstain")
  assert abstain.options[-1] == "I'm not sure" and abstain.letters[-1] == "E"
  assert abstain.answer == "B"


def test_wrong_option_is_seeded_uniform_and_never_the_key():
  counts = collections.Counter()
  for i in range(600):
    item = _item(i)
    w = variants.wrong_option(item, seed=3)
    assert w != item.answer_index
    assert w == variants.wrong_option(item, seed=3)  # reproducible
    counts[w] += 1
  assert set(counts) == {0, 2, 3} and min(counts.values()) > 150  # roughly uniform
  differs = sum(variants.wrong_option(_item(i), 3) != variants.wrong_option(_item(i), 4)
                for i in range(100))
  assert differs > 30  # the seed matters


def test_think_and_caption_variants_assert_the_target():
  item = _item()
  wt = variants.make_variant(item, "wrong_think", seed=1)
  assert wt.target != "B" and wt.assistant_prefill == "<think>" + wt.think
  assert "</think>" not in wt.assistant_prefill  # the model continues the reasoning
  assert f"({wt.target})" in wt.think
  but = variants.make_variant(item, "wrong_think_but", seed=1)
  assert but.assistant_prefill.endswith(" But I think") and but.target == wt.target
  ct = variants.make_variant(item, "correct_think")
  assert ct.target == "B" and "(B) option 1" in ct.think
  wc = variants.make_variant(item, "wrong_caption", seed=1)
  assert wc.question == f"{wc.caption}\n{item.question}" and wc.target == wt.target
  wcd = variants.make_variant(item, "wrong_caption_disclaimer", seed=1)
  assert wcd.caption.endswith(", but I could be wrong.")
  cc = variants.make_variant(item, "correct_caption")
  assert cc.target == "B" and "option 1" in cc.caption


def test_statement_meta_and_custom_text_source():
  item = Item(id="1", benchmark="toy", question="Q?", options=("left", "right"), answer="A",
              meta=(("statement_A", "The cup is left of the plate"),
                    ("statement_B", "The cup is right of the plate")))
  wc = variants.make_variant(item, "wrong_caption")
  assert wc.caption == "The cup is right of the plate."

  class Fixed:
    def caption(self, item, option):
      return f"generated caption {option}"

    def think(self, item, option):
      return f"generated think {option}"

  spec = variants.make_variant(item, "wrong_think", texts=Fixed())
  assert spec.think == "generated think 1"


def test_unknown_variant():
  with pytest.raises(ValueError, match="unknown variant"):
    variants.make_variant(_item(), "wrong_image")


def test_llm_texts_are_generated_once_and_stored():
  calls = []

  def generate(message_lists, max_new_tokens):
    calls.append(message_lists[0][0]["content"])
    return ["The cat sits left of the box." if "caption" in calls[-1] else ""]

  texts = variants.LLMTexts(generate)
  item = _item()
  a = variants.make_variant(item, "wrong_caption", seed=2, texts=texts)
  b = variants.make_variant(item, "wrong_caption_disclaimer", seed=2, texts=texts)
  assert a.caption == "The cat sits left of the box."
  assert b.caption == "The cat sits left of the box, but I could be wrong."
  assert len(calls) == 1 and item.options[variants.wrong_option(item, 2)] in calls[0]
  think = variants.make_variant(item, "wrong_think", seed=2, texts=texts)  # empty reply
  assert think.think == variants.TemplateTexts().think(item, variants.wrong_option(item, 2))


def test_category_templates_ignore_case():
  # CV-Bench spells its categories "Count", "Relation", ...
  counting = variants.TemplateTexts().think(_item(category="Count"), 1)
  assert counting == variants.TemplateTexts().think(_item(category="count"), 1)
  assert counting != variants.TemplateTexts().think(_item(category="other"), 1)
