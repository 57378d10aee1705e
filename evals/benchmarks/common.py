"""Shared rules every benchmark loader follows: options, answers, shuffling, bad items.

Conventions (the same for all benchmarks, so scores are comparable):
  * Options are lettered A, B, C, ... in the order the loader emits them. Prefixes such as
    "(A) " or "A. " are stripped from option texts; the "(A)" form whenever its letter is the
    option's position, the "A." / "A)" / "A:" forms only when every option of the item carries
    them (so an option text like "A. Lincoln" among unprefixed options survives).
  * An answer is normalised to a letter. Accepted: "A", "(A)", "A.", "A)", "A:", the option
    text (case and whitespace insensitive), or "A. text" / "(A) text" where the text must agree
    with option A.
  * A row a loader cannot use becomes a `BadItem` with the reason (`ItemError` carries it);
    loaders never raise for one bad row. Missing files/folders raise FileNotFoundError instead.
  * Deterministic shuffles (V*, What'sUp, ...) draw a permutation from a `random.Random` seeded
    by sha256(f"{seed}:{key}"), so an item's order depends only on its key and the seed, never
    on iteration order or numpy/Python hash randomisation.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from evals.schema import LETTERS, BadItem, Item


class ItemError(Exception):
  """Why one row cannot become an `Item`; turned into a `BadItem` by `convert_rows`."""


# pandas' default NA strings: VLMEvalKit reads its TSVs with pandas, so an option cell holding
# one of these is dropped there; we drop it too to present the same options as the reference.
NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def is_missing(value) -> bool:
  """None, a float NaN, or a string pandas would read as NA."""
  if value is None:
    return True
  if isinstance(value, float):
    return math.isnan(value)
  return isinstance(value, str) and value.strip() in NA_STRINGS


def text(value) -> str:
  """A cell as stripped text ("" for missing values)."""
  return "" if is_missing(value) else str(value).strip()


_PAREN_PREFIX = re.compile(r"^\(([A-Z])\)\s*(.*)$", re.S)
_PLAIN_PREFIX = re.compile(r"^([A-Z])[.):]\s*(.*)$", re.S)
_BARE_LETTER = re.compile(r"^\(?([A-Z])\)?[.):]?$")


def strip_prefixes(options: Sequence[str]) -> list[str]:
  """Drop "(A) " / "A. " style prefixes that repeat the option's own letter."""
  out = []
  for i, opt in enumerate(options):
    m = _PAREN_PREFIX.match(opt)
    out.append(m.group(2).strip() if m and m.group(1) == LETTERS[i] else opt)
  plain = [_PLAIN_PREFIX.match(o) for o in out]
  if out and all(m and m.group(1) == LETTERS[i] for i, m in enumerate(plain)):
    out = [m.group(2).strip() for m in plain]
  return out


def _fold(s: str) -> str:
  return " ".join(s.lower().split()).rstrip(".")


def _index_of_text(answer: str, options: Sequence[str]) -> int | None:
  folded = [_fold(o) for o in options]
  return folded.index(_fold(answer)) if _fold(answer) in folded else None


def normalize_answer(raw, options: Sequence[str]) -> str:
  """The answer as a letter of `options` (already prefix-stripped); ItemError otherwise."""
  answer = text(raw)
  if not answer:
    raise ItemError("no answer given")
  span = f"{LETTERS[0]}-{LETTERS[len(options) - 1]}"
  bare = _BARE_LETTER.match(answer)
  if bare:
    letter = bare.group(1)
    if LETTERS.index(letter) >= len(options):
      raise ItemError(f"answer {answer!r} is outside the options {span}")
    return letter
  found = _index_of_text(answer, options)
  if found is not None:
    return LETTERS[found]
  return _letter_with_text(answer, options, span)


def _letter_with_text(answer: str, options: Sequence[str], span: str) -> str:
  """Answers like "B. right" or "(B) right": the letter must exist and agree with the text."""
  m = _PAREN_PREFIX.match(answer) or _PLAIN_PREFIX.match(answer)
  if not m:
    raise ItemError(f"answer {answer!r} is neither a letter {span} nor one of the option texts")
  letter, said = m.group(1), m.group(2).strip()
  idx = LETTERS.index(letter)
  if idx >= len(options):
    raise ItemError(f"answer {answer!r} is outside the options {span}")
  if said and _fold(said) != _fold(options[idx]):
    raise ItemError(f"answer {answer!r} disagrees with option {letter} ({options[idx]!r})")
  return letter


_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[\).:]\s*(.*?)\s*$")


def parse_embedded_options(question: str) -> tuple[str, list[str], str]:
  """Split "stem\\nA. x\\nB. y\\ntrailer" into (stem, [x, y], trailer).

  Options are the first run of lines lettered A, B, C, ... in sequence; lines after the run
  (e.g. "Answer with the option's letter ...") are the trailer. No run: (question, [], "").
  """
  lines = question.split("\n")
  for start, line in enumerate(lines):
    m = _OPTION_LINE.match(line)
    if m and m.group(1) == "A":
      options, end = _option_run(lines, start)
      stem = "\n".join(lines[:start]).strip()
      return stem, options, "\n".join(lines[end:]).strip()
  return question.strip(), [], ""


def _option_run(lines: list[str], start: int) -> tuple[list[str], int]:
  options = []
  for end in range(start, len(lines)):
    m = _OPTION_LINE.match(lines[end])
    if not m or m.group(1) != LETTERS[len(options)]:
      return options, end
    options.append(m.group(2))
  return options, len(lines)


def seeded_permutation(key: str, n: int, seed: int) -> list[int]:
  """A permutation of range(n) fixed by (seed, key); see the module docstring."""
  digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
  order = list(range(n))
  random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
  return order


def shuffle_options(options: Sequence[str], answer_index: int, key: str,
                    seed: int) -> tuple[list[str], str]:
  """Options reordered by `seeded_permutation`, and the key's new letter."""
  order = seeded_permutation(key, len(options), seed)
  return [options[i] for i in order], LETTERS[order.index(answer_index)]


def make_item(benchmark: str, item_id: str, question: str, options: Sequence[str], answer,
              images: Sequence[bytes] = (), category: str = "",
              meta: Iterable[tuple[str, str]] = ()) -> Item:
  """Validate and normalise one item; raises ItemError with the reason on bad input."""
  options = strip_prefixes([text(o) for o in options])
  if not options:
    raise ItemError("no options")
  if len(options) < 2:
    raise ItemError(f"only one option ({options[0]!r})")
  if any(not o for o in options):
    raise ItemError(f"empty option text among {options}")
  if not text(question):
    raise ItemError("empty question")
  letter = normalize_answer(answer, options)
  key = LETTERS.index(letter)
  twins = [LETTERS[i] for i, o in enumerate(options)
           if i != key and _fold(o) == _fold(options[key])]
  if twins:  # a "wrong" option would be the key in other words: perturbations would lie
    raise ItemError(f"option {', '.join(twins)} repeats the answer's text {options[key]!r}")
  return Item(id=item_id, benchmark=benchmark, question=text(question), options=tuple(options),
              answer=letter, images=tuple(images), category=text(category),
              meta=tuple((str(k), text(v)) for k, v in meta))


def convert_rows(benchmark: str, rows: Iterable[tuple[str, dict]],
                 convert: Callable[[str, dict], Item]) -> Iterator[Item | BadItem]:
  """Apply `convert(id, row)` to each row; ItemErrors, rows whose fields have the wrong type
  or shape (a string or null where a record belongs, a number for the options, a per-item file
  that is not valid UTF-8 JSON) and repeated ids become BadItems."""
  seen = set()
  for item_id, row in rows:
    if item_id in seen:
      yield BadItem(benchmark, item_id, "duplicate id (an earlier row has the same id)")
      continue
    seen.add(item_id)
    try:
      yield convert(item_id, row)
    except ItemError as e:
      yield BadItem(benchmark, item_id, str(e))
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
      yield BadItem(benchmark, item_id, f"malformed row ({type(e).__name__}: {e})")


def row_id(row, make_id: Callable[[dict], str], fallback: str) -> str:
  """make_id(row) for a record, else `fallback`: a row that is no JSON object, or whose id
  fields have the wrong type, still gets an id, and `convert_rows` reports it as bad."""
  if isinstance(row, dict):
    try:
      return make_id(row) or fallback
    except (TypeError, AttributeError, ValueError):
      pass
  return fallback
