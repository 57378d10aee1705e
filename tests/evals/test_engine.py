"""Letter distribution at the answer position, with the real Qwen tokenizer ('>' merges with
the letter after it) and a scripted next-token distribution."""

import numpy as np
import pytest

from evals.engine import ANSWER_STEM, Engine, Job, letter_table
from evals.judge import RuleJudge
from evals.presets import get_preset
from evals.schema import Item
from evals.variants import make_variant
from vlm_jax import processor as processor_lib
from vlm_jax.sampler import SampleOutput


@pytest.fixture(scope="module")
def proc():
  return processor_lib.Processor(processor_lib.load_tokenizer(processor_lib.qwen_tokenizer_dir()))


class ScriptedSampler:
  """p(next | row) from the last token of the row: after 'answer', after '>', after '>\\n'."""

  def __init__(self, tok, table=None):
    self.tok = tok
    enc = lambda s: tok.encode(s, add_special_tokens=False)[0]
    self.table = {enc(last): {enc(t): p for t, p in probs.items()}
                  for last, probs in (table or {
                      "answer": {">B": 0.5, ">": 0.2, ">\n": 0.1, ">(": 0.1},
                      ">": {" A": 0.4, "B": 0.2},
                      ">\n": {"C": 1.0},
                      ">(": {"A": 0.5, "C": 0.5},
                  }).items()}

  def next_token_logprobs(self, batch, ids):
    out = []
    for r in range(batch["input_ids"].shape[0]):
      last = batch["input_ids"][r][batch["attention_mask"][r] == 1][-1]
      probs = self.table.get(int(last), {})
      out.append([np.log(probs.get(int(i), 1e-30)) for i in ids])
    return np.array(out)


def _engine(proc, table=None):
  return Engine(ScriptedSampler(proc.tokenizer, table), proc, get_preset("r1"), RuleJudge(), 16,
                "t")


def _output(proc, text):
  tokens = np.array([proc.tokenizer.encode(text, add_special_tokens=False)])
  return SampleOutput(tokens=tokens, lengths=np.array([tokens.shape[1]]), logprobs=None,
                      entropies=None, texts=[text], finish_reasons=["stop"],
                      prompt_index=np.array([0]))


BATCH = {"input_ids": np.array([[5, 6, 7]]), "attention_mask": np.ones((1, 3), np.int64)}


@pytest.mark.parametrize("output, cut", [
    ("<think>red</think><answer>B</answer>", "<think>red</think><answer"),
    ("<think>red</think>\n<answer> B </answer>", "<think>red</think>\n<answer"),
    ("<think>no tag at all", "<think>no tag at all<answer"),
])
def test_answer_prefix_stops_before_the_merged_gt(proc, output, cut):
  engine = _engine(proc)
  tokens = np.array(proc.tokenizer.encode(output, add_special_tokens=False))
  prefix = engine._answer_prefix(tokens, len(tokens))
  assert proc.decode(prefix) == cut and proc.decode(prefix).endswith(ANSWER_STEM)


def test_letter_probs_combine_the_four_spellings(proc):
  engine = _engine(proc)
  item = Item(id="1", benchmark="t", question="Q?", options=("x", "y", "z"), answer="B")
  job = Job(item, make_variant(item, "base"), [])
  probs, mass = engine._letter_probs(BATCH, _output(proc, "<think>t</think><answer>B</answer>"),
                                     [job])[0]
  want = np.array([0.2 * 0.4 + 0.1 * 0.5, 0.5 + 0.2 * 0.2, 0.1 * 1.0 + 0.1 * 0.5])
  np.testing.assert_allclose(probs, want / want.sum(), rtol=1e-6)
  np.testing.assert_allclose(mass, want.sum(), rtol=1e-6)  # 0.12 of the mass is elsewhere


def test_letter_table_real_tokenizer(proc):
  table = letter_table(proc.tokenizer)
  assert table.merged_ok[:16].all()  # '>A'..'>P' are single tokens in Qwen's vocabulary
  enc = lambda s: proc.tokenizer.encode(s, add_special_tokens=False)
  assert table.openers.tolist() == [enc(">")[0], enc(">\n")[0], enc(">\n\n")[0], enc(">(")[0]]
  assert enc("<answer>(B)")[-3:-1] == [enc(">(")[0], enc("B")[0]]  # the '>(' path is real
  assert table.seconds.tolist() == enc(" (")  # and '>' ' (' 'B' of "<answer> (B)"
  assert enc("<answer> (B) y")[-5:-2] == [enc(">")[0], enc(" (")[0], enc("B")[0]]


@pytest.mark.parametrize("prefill, output, cut", [
    # a tag named inside the think is not the answer (the parser reads the one after </think>)
    (None, "<think>I reply in <answer> tags.</think><answer>B</answer>",
     "<think>I reply in <answer> tags.</think><answer"),
    (None, "<think>red</think>\n<Answer>B</Answer>", "<think>red</think>\n<Answer"),
    # a prefilled think that names a tag: the model's own tag after </think>
    ("<think>I'd write <answer>B</answer>", " no.</think><answer>C</answer>",
     " no.</think><answer"),
    ("<think>So the answer should be (B)", " hmm.</think>\n<answer> C", " hmm.</think>\n<answer"),
    (None, "<think>cut off right after <answer", "<think>cut off right after <answer"),
])
def test_answer_prefix_is_the_tag_the_parser_reads(proc, prefill, output, cut):
  engine = _engine(proc)
  tokens = np.array(proc.tokenizer.encode(output, add_special_tokens=False))
  prefix = engine._answer_prefix(tokens, len(tokens), prefill or "")
  assert proc.decode(prefix) == cut


def test_no_answer_position_when_the_tag_is_the_prefills(proc):
  engine = _engine(proc)
  tokens = np.array(proc.tokenizer.encode("B</answer>", add_special_tokens=False))
  assert engine._answer_prefix(tokens, len(tokens), "<think>t</think><answer>") is None


def test_letter_probs_count_blank_line_and_paren_spellings(proc):
  # "<answer>\n\nB" is '>\n\n' 'B' and "<answer>\n(C) z" is '>\n' '(C' ')' in Qwen's BPE
  engine = _engine(proc, {"answer": {">\n\n": 0.6, ">\n": 0.3, ">A": 0.05},
                          ">\n\n": {"B": 1.0}, ">\n": {"(C": 0.9, "AB": 0.1}})
  item = Item(id="1", benchmark="t", question="Q?", options=("x", "y", "z"), answer="B")
  job = Job(item, make_variant(item, "base"), [])
  probs, mass = engine._letter_probs(BATCH, _output(proc, "<think>t</think><answer>\n\nB"),
                                     [job])[0]
  want = np.array([0.05, 0.6, 0.3 * 0.9])  # 'AB' is not the letter A
  np.testing.assert_allclose(probs, want / want.sum(), rtol=1e-6)
  np.testing.assert_allclose(mass, want.sum(), rtol=1e-6)


def test_letter_probs_count_an_answer_written_as_in_the_option_list(proc):
  """"<answer> (C) z" (the prompt lists options as "(C) z") is '>' ' (' 'C': scored through
  both tokens after '>'."""
  engine = _engine(proc, {"answer": {">": 0.5, ">B": 0.3}, ">": {" (": 0.6, "A": 0.2},
                          " (": {"C": 1.0}})
  item = Item(id="1", benchmark="t", question="Q?", options=("x", "y", "z"), answer="C")
  job = Job(item, make_variant(item, "base"), [])
  probs, mass = engine._letter_probs(BATCH, _output(proc, "<think>t</think><answer> (C) z"),
                                     [job])[0]
  want = np.array([0.5 * 0.2, 0.3, 0.5 * 0.6 * 1.0])
  np.testing.assert_allclose(probs, want / want.sum(), rtol=1e-6)
  np.testing.assert_allclose(mass, want.sum(), rtol=1e-6)


def test_letter_table_entries_spell_exactly_their_letter(proc):
  table = letter_table(proc.tokenizer)
  text = lambda i: proc.tokenizer.decode([int(i)])
  assert [text(i) for i in table.openers] == [">", ">\n", ">\n\n", ">("]
  for k, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
    assert not table.merged_ok[k] or text(table.merged[k]) == ">" + c
    assert [text(i) for i in table.plain[k][table.plain_ok[k]]] == [c, " " + c, "(" + c]


def test_text_answer_presets_get_no_letter_distribution(proc):
  """ViGoRL answers with the option's text: no letter is written at the answer position, so
  none is scored (its first token, '>C' of 'Cup', would pass for the letter C)."""
  class Stub(ScriptedSampler):
    def __call__(self, batch, sampling, row_keys=None):
      return _output(proc, "<think>t</think><answer>left</answer>")

    def next_token_logprobs(self, batch, ids):
      raise AssertionError("letters scored for a text-answer preset")

  engine = Engine(Stub(proc.tokenizer), proc, get_preset("vigorl_spatial"), RuleJudge(), 16,
                  "t")
  item = Item(id="1", benchmark="t", question="Where?", options=("right", "left"), answer="B")
  (record,) = engine.run_batch([Job(item, make_variant(item, "base"), [])])
  assert record["parsed"] == "B" and record["letter_probs"] is None
  assert record["letter_version"] == "letters-v3"


def test_batched_letter_probs_equal_one_row_at_a_time(proc):
  """Rows of other lengths, images, prefills and answer tags (own and forced) in one padded,
  bucketed scoring batch give each row what it gets alone."""
  import jax  # noqa: PLC0415

  from vlm_jax import config as config_lib, params as params_lib  # noqa: PLC0415
  from vlm_jax.demo import synthetic_image  # noqa: PLC0415
  from vlm_jax.sampler import Sampler  # noqa: PLC0415
  config = config_lib.get_config("tiny")
  sampler = Sampler(params_lib.init_params(config, jax.random.key(0)), config, proc)
  engine = Engine(sampler, proc, get_preset("r1"), RuleJudge(), 16, "t")
  jobs, outputs = [], []
  for n, variant, image, output in [
      (2, "base", True, "<think>red</think>\n<answer>B</answer>"),
      (3, "wrong_think", False, " so B.</think><answer> A"),
      (4, "abstain", True, "<think>never answers"),
      (6, "stop_think", False, "\n<answer>\n(F)")]:
    item = Item(id=str(n), benchmark="t", question="Which? " * n,
                options=tuple(f"o{i}" for i in range(n)), answer="B")
    jobs.append(Job(item, make_variant(item, variant), [synthetic_image(112, 84)] if image else []))
    outputs.append(proc.tokenizer.encode(output, add_special_tokens=False))

  def probs(rows):
    sub = [jobs[r] for r in rows]
    batch = proc([engine.preset.messages(j.spec, len(j.images)) for j in sub],
                 images=[im for j in sub for im in j.images],
                 assistant_prefill=[j.spec.assistant_prefill for j in sub])
    width = max(len(outputs[r]) for r in rows)
    tokens = np.array([outputs[r] + [proc.pad_token_id] * (width - len(outputs[r])) for r in rows])
    out = SampleOutput(tokens=tokens, lengths=np.array([len(outputs[r]) for r in rows]),
                       logprobs=None, entropies=None, texts=[""] * len(rows),
                       finish_reasons=["stop"] * len(rows), prompt_index=np.arange(len(rows)))
    return engine._letter_probs(batch, out, sub)

  together = probs(range(len(jobs)))
  for r, (p, mass) in enumerate(together):
    alone, alone_mass = probs([r])[0]
    assert len(p) == len(jobs[r].spec.letters)
    np.testing.assert_allclose(p, alone, atol=1e-5)
    np.testing.assert_allclose(mass, alone_mass, rtol=1e-4)
