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

  def __init__(self, tok):
    self.tok = tok
    enc = lambda s: tok.encode(s, add_special_tokens=False)[0]
    self.table = {
        enc("answer"): {enc(">B"): 0.5, enc(">"): 0.2, enc(">\n"): 0.1, enc(">("): 0.1},
        enc(">"): {enc(" A"): 0.4, enc("B"): 0.2},
        enc(">\n"): {enc("C"): 1.0},
        enc(">("): {enc("A"): 0.5, enc("C"): 0.5},
    }

  def next_token_logprobs(self, batch, ids):
    out = []
    for r in range(batch["input_ids"].shape[0]):
      last = batch["input_ids"][r][batch["attention_mask"][r] == 1][-1]
      probs = self.table.get(int(last), {})
      out.append([np.log(probs.get(int(i), 1e-30)) for i in ids])
    return np.array(out)


def _engine(proc):
  return Engine(ScriptedSampler(proc.tokenizer), proc, get_preset("r1"), RuleJudge(), 16, "t")


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
  batch = {"input_ids": np.array([[5, 6, 7]]), "attention_mask": np.ones((1, 3), np.int64)}
  tokens = np.array([proc.tokenizer.encode("<think>t</think><answer>B</answer>",
                                           add_special_tokens=False)])
  out = SampleOutput(tokens=tokens, lengths=np.array([tokens.shape[1]]), logprobs=None,
                     entropies=None, texts=[""], finish_reasons=["stop"],
                     prompt_index=np.array([0]))
  probs, mass = engine._letter_probs(batch, out, [job])[0]
  want = np.array([0.2 * 0.4 + 0.1 * 0.5, 0.5 + 0.2 * 0.2, 0.1 * 1.0 + 0.1 * 0.5])
  np.testing.assert_allclose(probs, want / want.sum(), rtol=1e-6)
  np.testing.assert_allclose(mass, want.sum(), rtol=1e-6)  # 0.12 of the mass is elsewhere


def test_letter_table_real_tokenizer(proc):
  table = letter_table(proc.tokenizer)
  assert table.merged_ok[:16].all()  # '>A'..'>P' are single tokens in Qwen's vocabulary
  enc = lambda s: proc.tokenizer.encode(s, add_special_tokens=False)
  assert table.openers.tolist() == [enc(">")[0], enc(">\n")[0], enc(">(")[0]]
  assert enc("<answer>(B)")[-3:-1] == [enc(">(")[0], enc("B")[0]]  # the '>(' path is real
