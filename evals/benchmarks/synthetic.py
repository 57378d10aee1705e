"""A procedurally generated benchmark of coloured shapes; needs no files, deterministic.

Item i of `synthetic_items(n, seed)` is drawn from its own RNG, seeded by
sha256(f"synthetic:{seed}:{i}"), so it is the same whatever `n` is. Categories cycle with i
(item i has category CATEGORIES[i % 5]):
  left_right   "Is the red circle to the left or to the right of the blue square?" (left, right)
  above_below  "Is the red circle above or below the blue square?"                  (above, below)
  count        "How many red shapes / circles are there in the image?"  4 numbers, ascending
  color        "What color is the circle?"                      4 colour names, shuffled
  shape        "What shape is the green object?"                (circle, square, triangle)
Relations are read from the drawn centres (see synthetic_scene for the geometry); a pair is only
asked about when it differs by at least 12% of the image along the asked axis and more along
that axis than the other, so the answer is unambiguous.

Meta (all strings), to template captions and reasoning later without re-deriving anything:
  scene                JSON list of the drawn shapes {kind, color, x, y, r}
  subject, object      "red circle", "blue square" (relations); subject for color/shape items
                       is "circle" / "green object"; count items have target ("red shapes")
  relation             the true relation phrase ("to the left of", "above", ...)
  attribute, value     the asked attribute and its true value (color/shape/count items)
  count                the true count (count items)
  option_A, ...        the value each option stands for (same as its text)
  statement_A, ...     a sentence asserting that option ("The red circle is to the left of the
                       blue square."); statement = the true one
  seed, index          how the item was generated
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterator

from evals.benchmarks.synthetic_scene import (COLORS, SHAPES, Shape, distinct_specs, draw, place,
                                              scene_json)
from evals.schema import LETTERS, Item

NAME = "synthetic"
CATEGORIES = ("left_right", "above_below", "count", "color", "shape")
MIN_SEPARATION = 0.12  # fraction of the image size along the asked axis


@dataclasses.dataclass
class Question:
  text: str
  options: list[str]
  answer: int                      # index into options
  statements: list[str]            # one sentence per option asserting it
  facts: list[tuple[str, str]]     # subject / relation / object / count ...


def _rng(seed: int, index: int) -> random.Random:
  digest = hashlib.sha256(f"synthetic:{seed}:{index}".encode()).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


def _relation(rng, size, axis: int) -> tuple[list[Shape], Question] | None:
  shapes = place(rng, distinct_specs(rng, rng.randint(2, 4)), size)
  if shapes is None:
    return None
  pairs = [(a, b) for a in shapes for b in shapes if a is not b and _clear(a, b, axis, size)]
  if not pairs:
    return None
  a, b = rng.choice(pairs)
  words = ("left", "right") if axis == 0 else ("above", "below")
  phrases = {"left": "to the left of", "right": "to the right of", "above": "above",
             "below": "below"}
  first = (a.x, a.y)[axis] < (b.x, b.y)[axis]  # left / above (y grows downwards)
  truth = words[0] if first else words[1]
  text = (f"Is the {a.name} to the left or to the right of the {b.name}?" if axis == 0 else
          f"Is the {a.name} above or below the {b.name}?")
  statements = [f"The {a.name} is {phrases[w]} the {b.name}." for w in words]
  facts = [("subject", a.name), ("relation", phrases[truth]), ("object", b.name)]
  return shapes, Question(text, list(words), words.index(truth), statements, facts)


def _clear(a: Shape, b: Shape, axis: int, size) -> bool:
  d = abs((a.x, a.y)[axis] - (b.x, b.y)[axis])
  other = abs((a.x, a.y)[1 - axis] - (b.x, b.y)[1 - axis])
  return d >= MIN_SEPARATION * size[axis] and d > other


def _count(rng, size) -> tuple[list[Shape], Question] | None:
  by_color, k, m = rng.random() < 0.5, rng.randint(1, 4), rng.randint(0, 3)
  if by_color:
    target = rng.choice(list(COLORS))
    specs = [(rng.choice(SHAPES), target) for _ in range(k)]
    specs += [(rng.choice(SHAPES), rng.choice([c for c in COLORS if c != target]))
              for _ in range(m)]
    one, many = f"{target} shape", f"{target} shapes"
  else:
    target = rng.choice(SHAPES)
    specs = [(target, rng.choice(list(COLORS))) for _ in range(k)]
    specs += [(rng.choice([s for s in SHAPES if s != target]), rng.choice(list(COLORS)))
              for _ in range(m)]
    one, many = target, f"{target}s"
  rng.shuffle(specs)  # targets must not always be placed (and listed) first
  shapes = place(rng, specs, size)
  if shapes is None:
    return None
  options = sorted(rng.sample([v for v in range(1, 8) if v != k], 3) + [k])
  statements = [f"There {'is' if v == 1 else 'are'} {v} {one if v == 1 else many} in the image."
                for v in options]
  facts = [("target", many), ("attribute", "color" if by_color else "shape"), ("count", str(k)),
           ("value", str(k))]
  return shapes, Question(f"How many {many} are there in the image?", [str(v) for v in options],
                          options.index(k), statements, facts)


def _color(rng, size) -> tuple[list[Shape], Question] | None:
  kinds = rng.sample(SHAPES, rng.randint(1, 3))  # distinct kinds: "the circle" is unique
  shapes = place(rng, [(k, rng.choice(list(COLORS))) for k in kinds], size)
  if shapes is None:
    return None
  t = rng.choice(shapes)
  options = rng.sample([c for c in COLORS if c != t.color], 3) + [t.color]
  rng.shuffle(options)
  statements = [f"The {t.kind} is {c}." for c in options]
  facts = [("subject", t.kind), ("attribute", "color"), ("value", t.color)]
  return shapes, Question(f"What color is the {t.kind}?", options, options.index(t.color),
                          statements, facts)


def _shape(rng, size) -> tuple[list[Shape], Question] | None:
  colors = rng.sample(list(COLORS), rng.randint(1, 3))  # distinct colours: "the green object"
  shapes = place(rng, [(rng.choice(SHAPES), c) for c in colors], size)
  if shapes is None:
    return None
  t = rng.choice(shapes)
  options = list(SHAPES)
  statements = [f"The {t.color} object is a {k}." for k in options]
  facts = [("subject", f"{t.color} object"), ("attribute", "shape"), ("value", t.kind)]
  return shapes, Question(f"What shape is the {t.color} object?", options, options.index(t.kind),
                          statements, facts)


GENERATORS = {"left_right": lambda rng, size: _relation(rng, size, 0),
              "above_below": lambda rng, size: _relation(rng, size, 1),
              "count": _count, "color": _color, "shape": _shape}


def synthetic_item(index: int, seed: int = 0, image_size: tuple[int, int] = (224, 224)) -> Item:
  """Item `index` of the synthetic benchmark for `seed` (see the module docstring)."""
  category = CATEGORIES[index % len(CATEGORIES)]
  rng = _rng(seed, index)
  for _ in range(1000):  # rejection sampling: most draws succeed at once
    made = GENERATORS[category](rng, tuple(image_size))
    if made is not None:
      break
  else:
    raise ValueError(f"synthetic: cannot place a {category} scene in an image of {image_size}")
  shapes, q = made
  letters = LETTERS[: len(q.options)]
  meta = [("scene", scene_json(shapes)), *q.facts, ("statement", q.statements[q.answer])]
  meta += [(f"option_{l}", o) for l, o in zip(letters, q.options)]
  meta += [(f"statement_{l}", s) for l, s in zip(letters, q.statements)]
  meta += [("seed", str(seed)), ("index", str(index))]
  return Item(id=f"{index:05d}", benchmark=NAME, question=q.text, options=tuple(q.options),
              answer=letters[q.answer], images=(draw(shapes, tuple(image_size)),),
              category=category, meta=tuple(meta))


def synthetic_items(n: int, seed: int = 0, image_size: tuple[int, int] = (224, 224)) -> list[Item]:
  """The first `n` synthetic items for `seed`."""
  return [synthetic_item(i, seed, image_size) for i in range(n)]


def load(root=None, n: int = 100, seed: int = 0,
         image_size: tuple[int, int] = (224, 224)) -> Iterator[Item]:
  """Registry entry point; `root` is ignored (nothing is read from disk)."""
  for i in range(n):
    yield synthetic_item(i, seed, image_size)
