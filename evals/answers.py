"""Reading a model output: its think and answer parts, and the option letter a text names.

`split_output` splits `<think> ... </think><answer> X </answer>` (with the deviations models
make); `parse_letter` reads the option letter of a short answer (or a judge's reply); the letter
and option-text matchers (`cue_letters`, `LETTER_MENTION`, `option_regex`, `negated`, ...) are
shared with the rule judge (`evals.judge`). Nothing here guesses: no match, or two conflicting
matches, give None. PARSE_VERSION names these rules; results parsed by other rules never pool
(`evals.run`'s run settings).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

# the answer parsing rules (`parse_letter`): v2 reads hedges ("C or D") and lists of options as
# no answer, and "(b)", "C (left)", full-width and \text{} letters as letters; v3 reads CJK
# punctuation ("B。", "【B】") as its ASCII forms and "答案"/"选项" ("answer"/"option") as
# label prefixes, and LLM judges' JSON replies and "the reasoning concludes B" (`evals.judge`);
# v4 reads an answer whose first line is a label alone ("B\n\nThe blue cube is closer.") as
# that label (`evals.presets.parse_answer`)
PARSE_VERSION = "parse-v4"


# ----------------------------------------------------------------------------------------------
# Splitting a model output

def _tag(name: str, closing: bool = False) -> re.Pattern:
  return re.compile(r"<\s*" + (r"/\s*" if closing else "") + name + r"\s*>", re.I)


THINK_OPEN, THINK_CLOSE = _tag("think"), _tag("think", closing=True)  # any case, spacing
_ANSWER_OPEN, _ANSWER_CLOSE = _tag("answer"), _tag("answer", closing=True)


def split_output(text: str | None) -> tuple[str | None, str | None]:
  """(think, answer) of a model output `<think> ... </think><answer> X </answer>`, stripped.

  Tolerated deviations:
    * no opening `<think>` before the first `</think>`: the think was prefilled by the prompt and
      the output starts mid-think, so the think is everything before `</think>`;
    * no `</think>`: the think runs up to `<answer>`, or to the end of the text;
    * no think tags at all: text before `<answer>` (or all of it) is the think, since untagged
      prose before an answer is reasoning;
    * `<answer>` without `</answer>` (truncated, or the stop string was cut off): the answer runs
      to the end. No `<answer>` after the think (Vision-R1 may omit it): answer None.
  Empty parts are None.
  """
  if not text:
    return None, None
  start, end, after = _think_span(text)
  think = text[start:end].strip() or None
  return think, _answer_after(text, after)


def _think_span(text: str) -> tuple[int, int, int]:
  """(think start, think end, where the answer search starts)."""
  first_open, first_close = THINK_OPEN.search(text), THINK_CLOSE.search(text)
  if first_open and (first_close is None or first_open.start() < first_close.start()):
    start = first_open.end()
    close = THINK_CLOSE.search(text, start)
  else:
    start, close = 0, first_close  # prefilled think (or untagged output)
  if close:
    return start, close.start(), close.end()
  answer = _ANSWER_OPEN.search(text, start)
  end = answer.start() if answer else len(text)
  return start, end, end


def answer_tag(text: str):
  """The `<answer>` tag `split_output` reads its answer after (a `re.Match`), or None."""
  return _ANSWER_OPEN.search(text, _think_span(text)[2])


def _answer_after(text: str, pos: int) -> str | None:
  opening = _ANSWER_OPEN.search(text, pos)
  if not opening:
    return None
  closing = _ANSWER_CLOSE.search(text, opening.end())
  answer = text[opening.end(): closing.start() if closing else len(text)].strip()
  return answer or None


# ----------------------------------------------------------------------------------------------
# Matching letters and option texts
#
# A letter counts only as a token of its own ("B", "(B)", "B.", "option B", "**B**"); "A" and "I"
# are also English words, so bare "A"/"I" followed by a word count only when that word is a
# connective ("A because ...", "A is ..."): "the answer is a red car" is not option A.

_CONNECTIVES = frozenset(
    "because since as and or but is was seems would should must here in for with which that so "
    "then given based according option choice".split())
_LETTER_AT = re.compile(
    r"\s*(?P<prefix>(?i:option|choice|letter)\s*)?(?P<open>\*\*|[(\[{])?\s*(?P<letter>[A-Z])"
    r"(?![\w'-])\s*(?P<close>\*\*|[)\]}])?")
LETTER_MENTION = re.compile(
    r"(?P<prefix>(?i:option|choice)\s*)?(?P<open>[(\[])?(?<![\w'-])(?P<letter>[A-Z])(?![\w'-])"
    r"(?P<close>[)\]])?")
_NEGATED_AFTER = re.compile(
    r"\s*(?:is|are|was|seems|must\s+be|would\s+be)?\s*(?:not|wrong|incorrect|false|unlikely|"
    r"ruled\s+out|eliminated|excluded)\b", re.I)
_NEGATED_BEFORE = re.compile(
    r"(?:\bnot|\bisn't|\bnor|\brather\s+than|\binstead\s+of|\bexcept|\bexclude|\brule\s+out)"
    r"\s*(?:option\s*|choice\s*)?[(\[]?\s*$", re.I)
_ARTICLE = re.compile(r"\s*(?:(?:the|a|an)\s+)?", re.I)


def normalize(text: str) -> str:
  """Lower case, punctuation to spaces, one space between words, no leading article."""
  words = re.sub(r"[\W_]+", " ", text.lower()).split()
  if len(words) > 1 and words[0] in ("the", "a", "an"):
    words = words[1:]
  return " ".join(words)


def option_regex(option: str) -> re.Pattern | None:
  """An option's words with any punctuation/space between them, as whole words."""
  words = normalize(option).split()
  if not words:
    return None
  body = r"[\W_]+".join(re.escape(w) for w in words)
  return re.compile(r"(?<![^\W_])" + body + r"(?![^\W_])", re.I)


def is_word_not_letter(m: re.Match, text: str) -> bool:
  """Bare "A"/"I" followed by a non-connective word: the English word, not the option."""
  if m["letter"] not in "AI" or m["prefix"] or m["open"]:
    return False
  # From the letter itself: _LETTER_AT's pattern also eats the whitespace after it.
  follow = re.match(r"\s+([A-Za-z]+)", text[m.end("close") if m["close"] else m.end("letter"):])
  return bool(follow) and follow[1].lower() not in _CONNECTIVES


def negated(text: str, start: int, end: int) -> bool:
  return bool(_NEGATED_AFTER.match(text, end) or _NEGATED_BEFORE.search(text[:start]))


def _letter_at(text: str, pos: int, letters: Sequence[str]) -> str | None:
  """The option letter written at `pos` (after a cue), or None."""
  m = _LETTER_AT.match(text, pos)
  if not m or m["letter"] not in letters or is_word_not_letter(m, text):
    return None
  if negated(text, m.start("letter"), m.end()):
    return None
  return m["letter"]


def _option_at(text: str, pos: int, letters: Sequence[str], options: Sequence[str]) -> str | None:
  """The letter of the option whose text starts at `pos` (longest wins: "left" < "left side")."""
  pos = _ARTICLE.match(text, pos).end()
  best, best_len, tie = None, 0, False
  for letter, option in zip(letters, options):
    pattern = option_regex(option)
    m = pattern.match(text, pos) if pattern else None
    if not m or m.end() - pos < best_len:
      continue
    tie = m.end() - pos == best_len and letter != best
    best, best_len = letter, m.end() - pos
  if tie or best is None or negated(text, pos, pos + best_len):
    return None
  return best


def _target_at(text, pos, letters, options, allow_text: bool) -> str | None:
  letter = _letter_at(text, pos, letters)
  if letter is None and allow_text:
    letter = _option_at(text, pos, letters, options)
  return letter


# Conclusion cues: (pattern, whether option *text* may follow). Only explicit answer phrases may
# be followed by option text; "so"/"I think" are followed by any clause ("so the dog is left"),
# where an option word would be a false conclusion, so they take letters only.
_ADVERB = r"(?:(?:most\s+)?likely|probably|definitely|clearly|indeed|actually)?\s*"
_CUES = (
    (re.compile(r"\b(?:answer|(?:correct|right|best|final|only|likely)\s+(?:option|choice))\s*"
                r"(?:(?:is|was|would\s+be|should\s+be|must\s+be|will\s+be|seems\s+to\s+be|"
                r"appears\s+to\s+be)\b\s*[:\-]?|[:=])\s*" + _ADVERB, re.I), True),
    (re.compile(r"\b(?:I(?:'ll|\s+will|'d|\s+would|\s+shall)?\s+(?:go\s+with|choose|pick|select|"
                r"opt\s+for|settle\s+on)|going\s+with)\b", re.I), True),
    (re.compile(r"\b(?:so|thus|therefore|hence|consequently|actually)\b\s*,?\s*"
                r"(?:it(?:'s|\s+is|\s+must\s+be)\s+)?", re.I), False),
    (re.compile(r"\bI\s+(?:think|believe|guess)\b\s*(?:it(?:'s|\s+is)\b)?", re.I), False),
    (re.compile(r"\\boxed\{"), False),
)
# "B is correct", "(C) is the best answer", "option A is the right choice".
_POSTFIX_CUE = re.compile(
    r"(?P<prefix>(?i:option|choice)\s*)?(?P<open>[(\[])?(?<![\w'-])(?P<letter>[A-Z])(?![\w'-])"
    r"[)\]]?\s+(?i:is|seems\s+to\s+be|must\s+be|should\s+be|would\s+be)\s+(?i:the\s+)?"
    r"(?i:correct\b|(?:right|best|most\s+likely)\s+(?:answer|option|choice)\b)")


def cue_letters(text: str, letters: Sequence[str],
                options: Sequence[str]) -> list[tuple[int, str]]:
  """(position, letter) of every conclusion cue in `text` ("the answer is B", "B is correct")."""
  found = []
  for pattern, allow_text in _CUES:
    for m in pattern.finditer(text):
      letter = _target_at(text, m.end(), letters, options, allow_text)
      if letter:
        found.append((m.end(), letter))
  for m in _POSTFIX_CUE.finditer(text):
    if m["letter"] in letters:
      found.append((m.start("letter"), m["letter"]))
  return found


def _exact_options(text: str, letters: Sequence[str], options: Sequence[str]) -> set[str]:
  norm = normalize(text)
  return {l for l, o in zip(letters, options) if norm and normalize(o) == norm}


# ----------------------------------------------------------------------------------------------
# Parsing an answer or a judge reply

# CJK punctuation that NFKC leaves as is (it maps the full-width "（B）", "B：" itself)
_CJK_PUNCT = str.maketrans({"\u3002": ".", "\u3001": ",", "\u3010": "[", "\u3011": "]",
                            "\u300c": "\"", "\u300d": "\"", "\u300e": "\"", "\u300f": "\"",
                            "\u300a": "\"", "\u300b": "\""})
_DECORATION = re.compile(r"^[\s*_`\"'>#]+|[\s*_`\"']+$")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
# A letter label, optionally followed by text: "B", "(B)", "Option B", "B) the red one",
# "(B) the red one", "C (left)", "C, the left one". An unbracketed letter needs a delimiter
# before text ("A red car" is prose). Lower case counts in brackets, before ")" or after a
# prefix ("(b)", "b)", "option b"), where it cannot be the article "a".
_LABEL = re.compile(
    r"^(?P<prefix>(?:(?i:option|choice|answer|letter)|(?:答案|选项)(?:是|为)?)\s*[:\-]?\s*)?"
    r"(?:[(\[]\s*(?P<b>[A-Za-z])\s*[)\]]\s*[.:\-]?|(?P<u>[A-Za-z])\s*(?P<delim>[.:,)\-]|(?=\())?)"
    r"(?:\s*(?P<rest>\S.*))?$", re.S)


def _label_letters(body: str, letters, options) -> set[str]:
  """The label's letter, plus the option its trailing text names (so a contradiction shows)."""
  m = _LABEL.match(body)
  letter = m and (m["b"] or m["u"])
  if not letter or (m["u"] and m["u"].islower() and not m["prefix"] and m["delim"] != ")"):
    return set()
  letter = letter.upper()
  if letter not in letters or (m["u"] and m["rest"] and m["delim"] is None):
    return set()
  return {letter} | (_exact_options(m["rest"], letters, options) if m["rest"] else set())


def _letter_mentions(body: str, letters, options) -> set[str]:
  """Every option letter the text names as a letter token ("C", "(D)", "option B"), not negated,
  not the word "A"/"I" and not inside an option's own text ("B) point A" names B only): a hedge
  ("(C) and (D)", "C or D") or a list of options names more than one."""
  spans = [m.span() for option in options if (pattern := option_regex(option))
           for m in pattern.finditer(body)]
  return {m["letter"] for m in LETTER_MENTION.finditer(body)
          if m["letter"] in letters and not is_word_not_letter(m, body)
          and not any(s <= m.start("letter") < e for s, e in spans)
          and not negated(body, m.start(), m.end())}


def parse_letter(text: str | None, letters: Sequence[str], options: Sequence[str]) -> str | None:
  """The option letter a short answer names, or None if none or more than one.

  Accepted: a letter label ("B", "(B)", "(b)", "B.", "**B**", "Option B", "\\boxed{\\text{B}}"),
  a label followed by its option text ("B) the red one", "C (left)"), an option's exact text
  (case/space/punctuation-insensitive, leading article ignored: ViGoRL answers with option
  text), and conclusion phrases ("Answer: B", "the answer is B", "the correct option is the red
  one"). Full-width characters and CJK punctuation ("B。", "【B】") are read as their ASCII
  forms, and "答案"/"选项" ("answer"/"option", "答案是B") as label prefixes. Every rule that
  fires adds a candidate, and so does every other letter the answer names
  (`_letter_mentions`); two different letters (a hedge such as "(C) and (D)" or "C or D", a
  list of options, a label contradicting its text, "answer: A ... answer: B", two options with
  the same text) give None. A letter named as ruled out ("C, not D") is not a candidate.
  """
  if text is None:
    return None
  body = _LATEX_TEXT.sub(r"\1", unicodedata.normalize("NFKC", text).translate(_CJK_PUNCT))
  body = _DECORATION.sub("", _ANSWER_CLOSE.sub("", _ANSWER_OPEN.sub("", body))).rstrip(".")
  if not body:
    return None
  found = _exact_options(body, letters, options)
  if len(body) == 1 and body.upper() in letters:  # a lone lower-case letter: no article risk
    found.add(body.upper())
  found |= _label_letters(body, letters, options)
  found |= {letter for _, letter in cue_letters(body, letters, options)}
  if found:
    found |= _letter_mentions(body, letters, options)
  return found.pop() if len(found) == 1 else None
