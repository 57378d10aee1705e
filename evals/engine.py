"""One evaluation batch: prompts -> sampler -> answer parsing -> judge -> letter distribution.

The letter distribution (PAPER.md section 5) is read at the first answer-letter position: the
token right after the model's own `<answer>`; when it never writes one, after a forced
`<answer>` appended to its output. Letters are scored as the sum of the probabilities of their
token spellings ("A" and " A"), restricted to the item's option letters and renormalised.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from evals import presets as presets_lib
from evals.schema import Item
from evals.variants import PromptSpec
from vlm_jax.sampler import SamplingParams

ANSWER_OPEN = "<answer>"


@dataclasses.dataclass
class Job:
  item: Item
  spec: PromptSpec
  images: list


class Engine:
  """Holds the model-side objects of a run; `run_batch(jobs)` returns result records."""

  def __init__(self, sampler, processor, preset, judge, max_new_tokens: int, model_name: str,
               seed: int = 0, temperature: float = 0.0):
    self.sampler, self.processor, self.preset, self.judge = sampler, processor, preset, judge
    self.model_name, self.seed = model_name, seed
    eos = [processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    self.sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                   seed=seed, stop_token_ids=tuple(int(e) for e in eos if e),
                                   stop_strings=("</answer>",))
    self.letter_ids = _letter_token_ids(processor.tokenizer)
    self.answer_ids = processor.tokenizer.encode(ANSWER_OPEN, add_special_tokens=False)

  def run_batch(self, jobs: list[Job]) -> list[dict]:
    convs = [self.preset.messages(j.spec, len(j.images)) for j in jobs]
    batch = self.processor(convs, images=[im for j in jobs for im in j.images],
                           assistant_prefill=[j.spec.assistant_prefill for j in jobs])
    out = self.sampler(batch, self.sampling)
    fulls = [(j.spec.assistant_prefill or "") + t for j, t in zip(jobs, out.texts)]
    verdicts = self.judge.judge([_judge_request(j, f) for j, f in zip(jobs, fulls)])
    probs = self._letter_probs(batch, out, jobs)
    return [self._record(j, f, out, r, v, p)
            for r, (j, f, v, p) in enumerate(zip(jobs, fulls, verdicts, probs))]

  # -- letter distribution ------------------------------------------------------------------
  def _answer_prefix(self, tokens: np.ndarray, length: int) -> list[int]:
    """Generated tokens up to and including the first `<answer>`, else all + a forced one."""
    stops = set(self.sampling.stop_token_ids)
    gen = [int(t) for t in tokens[:length] if int(t) not in stops]
    decode = self.processor.decode
    if ANSWER_OPEN not in decode(gen):
      return gen + list(self.answer_ids)
    lo, hi = 1, len(gen)  # smallest k whose prefix contains the tag (monotone in k)
    while lo < hi:
      mid = (lo + hi) // 2
      lo, hi = (lo, mid) if ANSWER_OPEN in decode(gen[:mid]) else (mid + 1, hi)
    return gen[:lo]

  def _letter_probs(self, batch: dict, out, jobs: list[Job]) -> list[np.ndarray | None]:
    rows = []
    for r in range(len(jobs)):
      prompt = batch["input_ids"][r][batch["attention_mask"][r] == 1].tolist()
      rows.append(prompt + self._answer_prefix(out.tokens[r], int(out.lengths[r])))
    length = max(map(len, rows))
    ids = np.full((len(rows), length), self.processor.pad_token_id, np.int64)
    mask = np.zeros_like(ids)
    for r, row in enumerate(rows):
      ids[r, :len(row)], mask[r, :len(row)] = row, 1
    score = {"input_ids": ids, "attention_mask": mask}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
                "second_per_grid_ts"):
      if key in batch:
        score[key] = batch[key]
    logits = self.sampler.next_token_logits(score, self.letter_ids.reshape(-1))
    logits = logits.reshape(len(jobs), -1, self.letter_ids.shape[1])
    return [_restricted_probs(logits[r, :len(j.spec.letters)]) for r, j in enumerate(jobs)]

  # -- records ----------------------------------------------------------------------------------
  def _record(self, job: Job, full: str, out, r: int, verdict, probs) -> dict:
    spec, item = job.spec, job.item
    parsed = presets_lib.parse_answer(full, spec, self.preset)
    p_correct = None if probs is None else float(probs[spec.letters.index(spec.answer)])
    entropy = None if probs is None else float(-(probs * np.log(np.maximum(probs, 1e-30))).sum())
    return {
        "benchmark": item.benchmark, "item_id": item.id, "variant": spec.variant,
        "category": item.category, "question": spec.question, "options": list(spec.options),
        "letters": list(spec.letters), "answer": spec.answer, "prefill": spec.assistant_prefill,
        "inserted_caption": spec.caption, "inserted_think": spec.think, "target": spec.target,
        "output": out.texts[r], "finish_reason": out.finish_reasons[r],
        "num_tokens": int(out.lengths[r]), "parsed": parsed, "unparsed": parsed is None,
        "correct": parsed == spec.answer, "judge_letter": verdict.letter,
        "judge_raw": verdict.raw, "judge": verdict.judge, "judge_error": verdict.error,
        "judge_prompt_version": verdict.prompt_version,
        "consistent": None if verdict.letter is None or parsed is None
        else verdict.letter == parsed,
        "letter_probs": None if probs is None else [float(p) for p in probs],
        "p_correct": p_correct, "entropy": entropy, "model": self.model_name,
        "preset": self.preset.name, "seed": self.seed,
    }


def _judge_request(job: Job, full: str):
  from evals.judge import JudgeRequest, split_output  # noqa: PLC0415
  think, _ = split_output(full)
  return JudgeRequest(question=job.spec.question, options=list(job.spec.options),
                      letters=list(job.spec.letters), think=think or "")


def _letter_token_ids(tokenizer) -> np.ndarray:
  """[26, 2] token ids of "A".."Z" and " A".." Z" (single tokens in the Qwen vocabulary)."""
  out = []
  for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    ids = [tokenizer.encode(s, add_special_tokens=False) for s in (letter, " " + letter)]
    if any(len(i) != 1 for i in ids):
      raise ValueError(f"tokenizer does not encode {letter!r} / {' ' + letter!r} as one token")
    out.append([ids[0][0], ids[1][0]])
  return np.asarray(out, np.int32)


def _restricted_probs(logits: np.ndarray) -> np.ndarray:
  """Softmax over letters, each letter's spellings summed: logits [L, 2] -> probs [L]."""
  z = logits.astype(np.float64)
  per_letter = np.logaddexp(z[:, 0], z[:, 1])
  per_letter -= per_letter.max()
  p = np.exp(per_letter)
  return p / p.sum()
