"""Stop strings matched on the text's bytes however the tokens split them (vlm_jax/stops.py):
the automaton tables against a brute-force search, and against transformers'
StopStringCriteria on the real Qwen tokenizer."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer
from transformers.generation.stopping_criteria import StopStringCriteria

from vlm_jax import processor as P, stops


@pytest.fixture(scope="module")
def proc():
  return P.Processor(AutoTokenizer.from_pretrained(P.qwen_tokenizer_dir(), local_files_only=True))


def _first_stop(table, ids):
  state = np.zeros(table.shape[0], np.int64)
  for k, t in enumerate(ids):
    state = table[np.arange(table.shape[0]), state, t].astype(np.int64)
    if (state == table.shape[1]).any():
      return k
  return None


def test_token_bytes_are_the_decoded_text(proc):
  vocab = stops.token_bytes(proc.tokenizer)
  ids = proc.tokenizer.encode("Ünïcode 龘 and <|im_end|> spaces\n\n", add_special_tokens=False)
  assert b"".join(vocab.bytes[i] for i in ids) == proc.decode(ids).encode("utf-8")


@pytest.mark.parametrize("text", [
    "<answer>B</answer>", "<answer>B.</answer>", "<answer>(B)</answer>", "<answer> B </answer>",
    "<answer>B</answer>\n", "<answer>B</answer>.", "B.\n\nQuestion", "B. Question: x",
    "no stop here </answ", "aaa</answer</answer>", "caf\u00e9\u00e9\n\n"])
def test_stops_where_transformers_stop_string_criteria_stops(proc, text):
  strings = ("</answer>", "\n\n", "Question:")
  table = stops.stop_table(proc, strings, 151936)
  criteria = StopStringCriteria(proc.tokenizer, list(strings))
  ids = proc.tokenizer.encode(text, add_special_tokens=False)
  theirs = next((k for k in range(len(ids))
                 if criteria(torch.tensor([ids[:k + 1]]), None).any()), None)
  assert _first_stop(table, ids) == theirs


def test_automaton_equals_a_search_of_the_bytes(proc):
  # random token sequences over an alphabet with many overlaps (periodic strings, prefixes
  # that are suffixes): the first token whose bytes complete a stop string, found by search
  vocab = stops.token_bytes(proc.tokenizer)
  alphabet = set(b"ab</>.\n ")
  pool = [i for i, b in enumerate(vocab.bytes) if b and set(b) <= alphabet]
  rng = np.random.default_rng(0)
  for _ in range(60):
    strings = tuple(
        "".join(rng.choice(list("ab</>"), int(rng.integers(1, 7)))) for _ in range(2))
    table = stops.stop_table(proc, strings, 151936)
    ids = [int(i) for i in rng.choice(pool, 40)]
    text = b""
    want = None
    for k, t in enumerate(ids):
      text += vocab.bytes[t]
      if any(s.encode() in text for s in strings):
        want = k
        break
    assert _first_stop(table, ids) == want, (strings, [vocab.bytes[i] for i in ids])


def test_tokens_without_text_and_no_strings_never_stop(proc):
  table = stops.stop_table(proc, ("ab",), 151936 + 128)  # ids past the tokenizer: no text
  a, b = (proc.tokenizer.encode(c, add_special_tokens=False)[0] for c in "ab")
  assert _first_stop(table, [a, 151936 + 5, b]) == 2  # the empty token keeps the state
  assert _first_stop(stops.stop_table(proc, (), 151936), [a, b]) is None
  with pytest.raises(ValueError, match="stop_strings need a processor"):
    stops.stop_table(None, ("x",), 10)
