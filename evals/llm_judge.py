"""A local LLM judge on this project's own model core (Qwen3 in the study; any checkpoint that
`vlm_jax.load_hf` reads), as the `generate_fn` that `evals.judge.LLMJudge` wraps."""

from __future__ import annotations

import numpy as np


def _render(tokenizer, messages: list[dict]) -> str:
  """The checkpoint's own chat template (Qwen3: thinking off, so the reply is the verdict)."""
  if getattr(tokenizer, "chat_template", None):
    try:
      return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                           enable_thinking=False)
    except TypeError:
      return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  from vlm_jax.processor import render_chat
  return render_chat(messages)


def local_factory(mesh=None, dtype: str = "bfloat16"):
  """The `generate_fn_factory` that `evals.judge.make_judge` turns a local model directory into a
  judge with: path -> `local_generate_fn(path, mesh, dtype)` (`evals.run` and `rl.train`)."""
  return lambda path: local_generate_fn(path, mesh, dtype)


def local_generate_fn(path: str, mesh=None, dtype: str = "bfloat16"):
  """fn(list of message lists, max_new_tokens) -> list of reply texts (greedy)."""
  from vlm_jax import hf, processor as proc_lib
  from vlm_jax.sampler import Sampler, SamplingParams
  config, params = hf.load_hf(path, dtype=dtype, mesh=mesh)
  tokenizer = proc_lib.load_tokenizer(path)
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  sampler = Sampler(params, config, mesh=mesh, pad_id=pad)
  eos = tuple(int(t) for t in np.atleast_1d(config.eos_token_id or []))
  eos += tuple(int(t) for t in [tokenizer.convert_tokens_to_ids("<|im_end|>")] if t is not None)

  def generate(message_lists: list[list[dict]], max_new_tokens: int) -> list[str]:
    rows = [tokenizer.encode(_render(tokenizer, m), add_special_tokens=False)
            for m in message_lists]
    ids, mask = proc_lib.pad_rows(rows, pad, "left")
    out = sampler({"input_ids": ids, "attention_mask": mask},
                  SamplingParams(max_new_tokens=max_new_tokens, stop_token_ids=eos,
                                 logprobs=False))
    return [tokenizer.decode([int(t) for t in out.tokens[r, :out.lengths[r]] if t not in eos],
                             skip_special_tokens=True) for r in range(len(rows))]

  return generate
