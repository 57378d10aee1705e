"""One evaluation batch: prompts -> sampler -> answer parsing -> judge -> letter distribution.

The letter distribution (PAPER.md section 5) is read at the first answer-letter position: the
token right after the model's own `<answer>` (the tag the answer parser reads: after the think,
any case); when it never writes one, after a forced `<answer>` appended to its output. Letters
are scored as the sum of the probabilities of their token spellings ("A", " A", "(A", after
'>', '>\n', '>\n\n' or '>(', or merged as '>A'), restricted to the item's option letters and
renormalised.
"""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np

from evals import presets as presets_lib
from evals.answers import PARSE_VERSION, answer_tag
from evals.schema import Item
from evals.variants import PromptSpec
from vlm_jax.processor import pad_rows
from vlm_jax.sampler import SamplingParams

# the rules that place and read the letter distribution: v2 scores the tag the answer parser
# reads and the '>\n\n' opener and '(X' spellings (records of v1 and v2 never pool); v3 gives
# presets that answer with the option text (ViGoRL) none, and scores "<answer> (X)"
LETTER_VERSION = "letters-v3"
ANSWER_STEM = "<answer"  # the '>' is tokenised together with what follows it
_CUT_STEM = re.compile(r"<\s*answer\s*$", re.I)  # an output that ends inside its answer tag
_VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
                "second_per_grid_ts")


@dataclasses.dataclass
class Job:
  item: Item
  spec: PromptSpec
  images: list


class Engine:
  """Holds the model-side objects of a run; `run_batch(jobs)` returns result records."""

  def __init__(self, sampler, processor, preset, judge, max_new_tokens: int, model_name: str,
               seed: int = 0, temperature: float = 0.0, repetition_penalty: float = 1.0):
    self.sampler, self.processor, self.preset, self.judge = sampler, processor, preset, judge
    self.model_name, self.seed = model_name, seed
    self.sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                   seed=seed, stop_token_ids=processor.stop_token_ids,
                                   stop_strings=("</answer>",), logprobs=False,
                                   repetition_penalty=repetition_penalty)
    self.table = letter_table(processor.tokenizer)
    self.stem_ids = processor.tokenizer.encode(ANSWER_STEM, add_special_tokens=False)

  def run_batch(self, jobs: list[Job]) -> list[dict]:
    convs = [self.preset.messages(j.spec, len(j.images)) for j in jobs]
    batch = self.processor(convs, images=[im for j in jobs for im in j.images],
                           assistant_prefill=[j.spec.assistant_prefill for j in jobs])
    keys = [zlib.crc32(f"{j.item.key}/{j.spec.variant}".encode()) for j in jobs]
    out = self.sampler(batch, self.sampling, row_keys=keys)  # same samples in any batch
    fulls = [(j.spec.assistant_prefill or "") + t for j, t in zip(jobs, out.texts)]
    verdicts = self.judge.judge([_judge_request(j, f) for j, f in zip(jobs, fulls)])
    # a preset that answers with the option's text (ViGoRL) writes no letter at the answer
    # position: a letter distribution there would be the renormalised remainder of the
    # vocabulary (or follow the answer word's first letter, ">C" of "Cup"); none is reported
    letters = (self._letter_probs(batch, out, jobs) if self.preset.answer_style == "letter"
               else [None] * len(jobs))
    return [self._record(j, f, out, r, v, p)
            for r, (j, f, v, p) in enumerate(zip(jobs, fulls, verdicts, letters))]

  # -- letter distribution ------------------------------------------------------------------
  def _answer_prefix(self, tokens: np.ndarray, length: int, prefill: str = "") -> list[int] | None:
    """Generated tokens up to the one that completes `<answer` of the tag the answer parser
    reads (`evals.answers.split_output`: the first after the think, any case and spacing; a tag
    written inside the think is not it). The '>' is scored, since the Qwen tokenizer merges it
    with what follows: '>A', '>', '>\n'. Without such a tag in the output, all of it plus a
    forced `<answer` (an output cut off right after its own `<answer` is scored there). None
    when a merged token runs past the tag, or the tag is the prefill's."""
    stops = set(self.sampling.stop_token_ids)
    gen = [int(t) for t in tokens[:length] if int(t) not in stops]
    decode = self.processor.decode
    full = prefill + decode(gen)
    tag = answer_tag(full) or _CUT_STEM.search(full)
    if tag is None:
      return gen + list(self.stem_ids)
    end = tag.start() + tag.group().lower().index("answer") + len("answer") - len(prefill)
    if end <= 0:
      return None
    cut = full[len(prefill):len(prefill) + end]  # the output up to the end of the word
    lo, hi = 1, len(gen)  # smallest k whose text holds the cut (monotone in k)
    while lo < hi:
      mid = (lo + hi) // 2
      lo, hi = (lo, mid) if decode(gen[:mid]).startswith(cut) else (mid + 1, hi)
    return gen[:lo] if decode(gen[:lo]) == cut else None

  def _score(self, batch: dict, rows: list[list[int]], ids: np.ndarray) -> np.ndarray:
    tokens, mask = pad_rows(rows, self.processor.pad_token_id)
    score = {"input_ids": tokens, "attention_mask": mask}
    score.update({k: batch[k] for k in _VISION_KEYS if k in batch})
    return np.exp(self.sampler.next_token_logprobs(score, ids.reshape(-1))).reshape(
        len(rows), *ids.shape)

  def _letter_probs(self, batch: dict, out, jobs: list[Job]) -> list[tuple | None]:
    """(P(letter) over the item's letters, letter mass) per row, None without an answer
    position. P(letter) = p('>X') + sum over openers o of p(o) (q_o(X) + q_o(' X') + q_o('(X')):
    p a full-vocabulary probability after the `<answer` prefix, q_o after it plus the opener o
    ('>', '>\n', '>\n\n', '>(': the ways the Qwen tokenizer splits "<answer>X",
    "<answer> X", "<answer>\nX", "<answer>\n(X)", "<answer>\n\nX", "<answer>(X)"), plus
    p('>') q_>(' (') r(X), r after '> (' ("<answer> (X)", as the prompt lists its options),
    restricted to the item's letters and renormalised. The mass before renormalising says how
    much of the model's next-token probability those spellings hold: low when it answers some
    other way (a word, "**B**"), and its distribution is then a remainder."""
    prefixes = [self._answer_prefix(out.tokens[r], int(out.lengths[r]),
                                    jobs[r].spec.assistant_prefill or "")
                for r in range(len(jobs))]
    rows = [batch["input_ids"][r][batch["attention_mask"][r] == 1].tolist() + (p or [])
            for r, p in enumerate(prefixes)]
    t = self.table
    first = self._score(batch, rows, np.concatenate([t.openers, t.merged]))
    total = np.where(t.merged_ok[None], first[:, len(t.openers):], 0.0)
    for j, opener in enumerate(t.openers):
      seconds = t.seconds if j == 0 else t.seconds[:0]  # after '>' alone
      after = self._score(batch, [r + [int(opener)] for r in rows],
                          np.concatenate([t.plain.reshape(-1), seconds]))
      plain = after[:, :t.plain.size].reshape(len(rows), *t.plain.shape)
      total = total + first[:, j:j + 1] * np.where(t.plain_ok[None], plain, 0.0).sum(-1)
      for k, second in enumerate(seconds):  # '> (' then the bare letter
        then = self._score(batch, [r + [int(opener), int(second)] for r in rows], t.plain[:, 0])
        total = total + first[:, j:j + 1] * after[:, t.plain.size + k:t.plain.size + k + 1] * then
    out_probs = []
    for r, job in enumerate(jobs):
      p = total[r, :len(job.spec.letters)].astype(np.float64)  # H, P(correct) exact to p
      out_probs.append(None if prefixes[r] is None or p.sum() <= 0 else (p / p.sum(), p.sum()))
    return out_probs

  # -- records ----------------------------------------------------------------------------------
  def _record(self, job: Job, full: str, out, r: int, verdict, letters) -> dict:
    spec, item = job.spec, job.item
    probs, mass = (None, None) if letters is None else letters
    parsed = presets_lib.parse_answer(full, spec, self.preset)
    circular_of = dict(item.meta).get("circular_of")  # a CircularEval copy: its original's id
    p_correct = None if probs is None else float(probs[spec.letters.index(spec.answer)])
    entropy = None if probs is None else float(-(probs * np.log(np.maximum(probs, 1e-30))).sum())
    return {
        "benchmark": item.benchmark, "item_id": item.id, "variant": spec.variant,
        "item_hash": item.fingerprint(),
        "category": item.category, "question": spec.question, "options": list(spec.options),
        "letters": list(spec.letters), "answer": spec.answer, "prefill": spec.assistant_prefill,
        "inserted_caption": spec.caption, "inserted_think": spec.think, "target": spec.target,
        "output": out.texts[r], "finish_reason": out.finish_reasons[r],
        "num_tokens": int(out.lengths[r]), "parsed": parsed, "unparsed": parsed is None,
        "correct": parsed == spec.answer, "judge_letter": verdict.letter,
        "judge_raw": verdict.raw, "judge": verdict.judge, "judge_error": verdict.error,
        "judge_prompt_version": verdict.prompt_version, "parse_version": PARSE_VERSION,
        "letter_version": LETTER_VERSION,
        "consistent": None if verdict.letter is None or parsed is None
        else verdict.letter == parsed,
        "letter_probs": None if probs is None else [float(p) for p in probs],
        "letter_mass": None if mass is None else float(mass),
        "p_correct": p_correct, "entropy": entropy, "model": self.model_name,
        "preset": self.preset.name, "seed": self.seed,
        **({} if circular_of is None else {"circular_of": circular_of}),
    }


def _judge_request(job: Job, full: str):
  from evals.answers import split_output  # noqa: PLC0415
  from evals.judge import JudgeRequest  # noqa: PLC0415
  think, _ = split_output(full)
  return JudgeRequest(question=job.spec.question, options=list(job.spec.options),
                      letters=list(job.spec.letters), think=think or "")


@dataclasses.dataclass(frozen=True)
class LetterTable:
  """Token ids for scoring option letters A..Z after `<answer`."""
  openers: np.ndarray      # [k] '>' and, where single tokens, '>\n', '>\n\n', '>(' (a letter next)
  merged: np.ndarray       # [26] '>A'.. (0 where not a single token; see merged_ok)
  merged_ok: np.ndarray    # [26] bool
  plain: np.ndarray        # [26, 3] 'A', ' A', '(A' after an opener (0 where not a single token)
  plain_ok: np.ndarray     # [26, 3] bool ('A' and ' A' always)
  seconds: np.ndarray      # [j] ' (' where a single token: after '>', before a bare letter


OPENERS = (">", ">\n", ">\n\n", ">(")  # what may stand between `<answer` and a letter token
SPELLINGS = ("{}", " {}", "({}")  # a letter's tokens after an opener ('(A': "<answer>\n(A) x")
SECONDS = (" (",)  # between '>' and a bare letter: "<answer> (B) x" is '>' ' (' 'B' ...


def letter_table(tokenizer) -> LetterTable:
  """Each entry is a token whose text is exactly the opener or spelling: no token that only
  starts with a letter ('AB', '>An', "'m" after '>I') is counted for it."""
  def single(text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None

  letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
  plain = [[single(form.format(c)) for form in SPELLINGS] for c in letters]
  if any(i is None for row in plain for i in row[:2]) or single(">") is None:
    raise ValueError("tokenizer does not encode '>', the letters and ' '+letters as one token")
  merged = [single(">" + c) for c in letters]
  openers = [single(o) for o in OPENERS]
  seconds = [i for i in (single(s) for s in SECONDS) if i is not None]
  return LetterTable(openers=np.array([o for o in openers if o is not None], np.int32),
                     merged=np.array([m or 0 for m in merged], np.int32),
                     merged_ok=np.array([m is not None for m in merged]),
                     plain=np.array([[i or 0 for i in row] for row in plain], np.int32),
                     plain_ok=np.array([[i is not None for i in row] for row in plain]),
                     seconds=np.array(seconds, np.int32))
