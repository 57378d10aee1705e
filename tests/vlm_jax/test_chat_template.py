"""The Qwen2.5-VL chat template: our renderer against jinja2 rendering of the official template
(plain and as HF renders it) and against the tokenizer's `apply_chat_template`."""

import jinja2
import jinja2.sandbox
import pytest
from transformers import AutoTokenizer

from vlm_jax import processor as P

OFFICIAL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for "
    "message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if "
    "message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content "
    "in "
    "message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in "
    "content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ "
    "image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif "
    "content['type'] == 'video' or 'video' in content %}{% set video_count.value = "
    "video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif "
    "%}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] "
    "}}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt "
    "%}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
  return AutoTokenizer.from_pretrained(P.qwen_tokenizer_dir(), local_files_only=True)



CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "Be terse."},
     {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"},
                                  {"type": "image", "image": "x.png"},
                                  {"type": "video"}, {"image_url": {"url": "u"}},
                                  {"type": "text", "text": "and this?"}]}],
    [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"video": [0]}]},
     {"role": "assistant", "content": "Hey."},
     {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "more"}]},
     {"role": "assistant", "content": [{"type": "text", "text": "Sure."}]},
     {"role": "user", "content": "thanks"}],
]


def _jinja(template, messages, **kwargs):
  return template.render(messages=messages, **kwargs)


def test_chat_template_file_is_the_official_one():
  assert P.CHAT_TEMPLATE == OFFICIAL_TEMPLATE


@pytest.mark.parametrize("env", [jinja2.Environment(),  # HF renders with trim/lstrip blocks:
                                 jinja2.sandbox.ImmutableSandboxedEnvironment(
                                     trim_blocks=True, lstrip_blocks=True)])
def test_render_chat_matches_jinja(env):
  template = env.from_string(P.CHAT_TEMPLATE)
  for messages in CONVERSATIONS:
    for gen in (True, False):
      for vision_id in (True, False):
        assert P.render_chat(messages, add_generation_prompt=gen, add_vision_id=vision_id) == (
            _jinja(template, messages, add_generation_prompt=gen, add_vision_id=vision_id))


def test_render_chat_matches_hf_apply_chat_template(tokenizer):
  for messages in CONVERSATIONS:
    hf = tokenizer.apply_chat_template(messages, chat_template=P.CHAT_TEMPLATE, tokenize=False,
                                       add_generation_prompt=True, add_vision_id=True)
    assert P.render_chat(messages, add_vision_id=True) == hf


def test_render_chat_prefill():
  prefill = "<think>Okay let's see."
  messages = CONVERSATIONS[1]
  text = P.render_chat(messages, assistant_prefill=prefill)
  template = jinja2.Environment().from_string(P.CHAT_TEMPLATE)
  assert text == _jinja(template, messages, add_generation_prompt=True) + prefill
  assert text.endswith("<|im_start|>assistant\n" + prefill)
  with pytest.raises(ValueError, match="add_generation_prompt"):
    P.render_chat(messages, add_generation_prompt=False, assistant_prefill=prefill)


def test_render_chat_rejects_unknown_content():
  messages = [{"role": "user", "content": [{"type": "text", "text": "x"},
                                           {"type": "audio", "audio": b""}]}]
  with pytest.raises(ValueError, match="message 0, content item 1: unknown content type 'audio'"):
    P.render_chat(messages)
