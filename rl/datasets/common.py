"""What every training-data loader shares: the `BadExample` record, row conversion, locating a
release's files, and building choice / number `Example`s.

Choice examples follow the evaluation loaders' rules (`evals/benchmarks/common.py`): options are
lettered A, B, ... in emitted order with "(A) " / "A. " prefixes stripped, and the answer (a
letter, or the text of an option) is normalised to a letter. On top of those, training data
rejects duplicate option texts (the key would be ambiguous). Number examples need a plain decimal
answer ("3", "-2", "12.5"), the only form `rl.rewards.parse_number` reads back exactly.
A row that cannot be used becomes a `BadExample` with the reason; loaders never raise for one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from evals.benchmarks import common as bench_common
from evals.benchmarks.common import ItemError, is_missing, make_item, shuffle_options, text
from evals.benchmarks.files import read_rows
from evals.benchmarks.images import image_from_cell
from evals.schema import BadItem
from rl.examples import Example

PLAIN_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


@dataclasses.dataclass(frozen=True)
class BadExample:
  """A training row a loader could not use: reported by id and counted, never fatal."""
  source: str
  id: str
  reason: str


def convert_rows(source: str, rows: Iterable[tuple[str, dict]],
                 convert: Callable[[str, dict], Example]) -> Iterator[Example | BadExample]:
  """`convert(id, row)` per row; ItemErrors and repeated ids become BadExamples."""
  for x in bench_common.convert_rows(source, rows, convert):
    yield BadExample(x.benchmark, x.id, x.reason) if isinstance(x, BadItem) else x


def first_layout(root: Path, layouts: Sequence[Sequence[str]], source: str,
                 how: str) -> list[Path]:
  """Files of the first layout (a list of glob patterns under `root`) that matches any file."""
  for patterns in layouts:
    found = [p for pattern in patterns for p in sorted(root.glob(pattern)) if p.is_file()]
    if found:
      return found
  tried = "; ".join(" + ".join(patterns) for patterns in layouts)
  raise FileNotFoundError(f"{source}: no annotation file under {root} (looked for: {tried}). "
                          f"{how}")


def as_list(value, what: str) -> list:
  """A list cell (list or tuple; None counts as empty); ItemError for anything else."""
  if value is None:
    return []
  if not isinstance(value, (list, tuple)):
    raise ItemError(f"{what} is not a list: {value!r}")
  return list(value)


def images_of(value, what: str, resolve=None) -> list[bytes]:
  """Checked image bytes of a cell holding one image or a list of them, in order.

  Each image is an HF Image struct ({"bytes", "path"}), raw bytes, or a path `resolve` locates.
  """
  cells = list(value) if isinstance(value, (list, tuple)) else [value]
  if not cells:
    raise ItemError(f"no images ({what})")
  return [image_from_cell(c, f"{what} image {i}", resolve) for i, c in enumerate(cells)]


def choice_example(source: str, example_id: str, question, options: Sequence, answer,
                   images: Sequence[bytes], category="", shuffle_seed: int | None = None
                   ) -> Example:
  """A multiple-choice Example; options reordered by a per-id seeded shuffle if a seed is given.

  Raises ItemError (no/one option, empty option, duplicate options, empty question, answer not
  a letter or option text).
  """
  item = make_item(source, example_id, question, options, answer, images, category)
  folded = [" ".join(o.lower().split()) for o in item.options]
  if len(set(folded)) < len(folded):
    raise ItemError(f"duplicate option texts among {list(item.options)}")
  opts, letter = list(item.options), item.answer
  if shuffle_seed is not None:
    opts, letter = shuffle_options(item.options, item.answer_index, f"{source}/{example_id}",
                                   shuffle_seed)
  return Example(id=example_id, source=source, question=item.question, answer=letter,
                 options=tuple(opts), images=item.images, kind="choice",
                 category=item.category)


def number_example(source: str, example_id: str, question, answer, images: Sequence[bytes],
                   category="") -> Example:
  """An open numeric Example; ItemError unless the answer is a plain decimal number."""
  question, answer = text(question), text(answer)
  if not question:
    raise ItemError("empty question")
  if not PLAIN_NUMBER.match(answer):
    raise ItemError(f"answer {answer!r} is not a plain number (a number example needs digits "
                    f"such as '3' or '12.5')")
  if not images:
    raise ItemError("no image")
  return Example(id=example_id, source=source, question=question, answer=answer,
                 images=tuple(images), kind="number", category=text(category))


def split_bad(results) -> tuple[list[Example], list[BadExample]]:
  """(examples, bad rows) of a loader's output, in order."""
  good, bad = [], []
  for x in results:
    (bad if isinstance(x, BadExample) else good).append(x)
  return good, bad


def numbered_rows(files: Sequence[Path], prefix: str) -> Iterator[tuple[str, dict]]:
  """(id, row) over the rows of `files` (parquet / jsonl / json list) in order: the row's `id`
  when it has one, else "{prefix}_{index}" with the index running over all files."""
  i = 0
  for path in files:
    for row in read_rows(path):
      if not isinstance(row, dict):
        raise ValueError(f"{path}: row {i} is not an object")
      given = row.get("id")
      yield (text(given) if not is_missing(given) else f"{prefix}_{i}"), row
      i += 1
