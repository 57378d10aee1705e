"""Scenes of coloured shapes for the synthetic benchmark: sampling, drawing, PNG encoding.

Geometry conventions: pixel coordinates, x to the right, y DOWN (so "above" means a smaller y).
Every shape fits inside the circle of radius `r` around its centre (circle: that circle;
square: side 1.4 r; triangle: equilateral, vertices on the circle), and sampled shapes keep
those circles apart by a gap, so shapes never touch and each centre pixel shows its own colour.
Draws come from a stdlib `random.Random`, so a scene depends only on its RNG seed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random

COLORS = {  # name -> RGB; far apart so no two are confused by a model or by a test
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (245, 245, 245)
GAP = 6  # pixels between the bounding circles of two shapes


@dataclasses.dataclass(frozen=True)
class Shape:
  kind: str    # one of SHAPES
  color: str   # a key of COLORS
  x: int       # centre, pixels from the left
  y: int       # centre, pixels from the top
  r: int       # bounding-circle radius, pixels

  @property
  def name(self) -> str:
    return f"{self.color} {self.kind}"


def radius_range(size: tuple[int, int]) -> tuple[int, int]:
  base = min(size)
  return max(3, round(0.06 * base)), max(4, round(0.10 * base))


def place(rng: random.Random, specs: list[tuple[str, str]], size: tuple[int, int],
          tries: int = 200) -> list[Shape] | None:
  """Shapes for (kind, color) specs at random non-touching spots; None if they do not fit."""
  lo, hi = radius_range(size)
  shapes: list[Shape] = []
  for kind, color in specs:
    for _ in range(tries):
      r = rng.randint(lo, hi)
      x, y = rng.randint(r, size[0] - 1 - r), rng.randint(r, size[1] - 1 - r)
      if all(math.hypot(x - s.x, y - s.y) > r + s.r + GAP for s in shapes):
        shapes.append(Shape(kind, color, x, y, r))
        break
    else:
      return None
  return shapes


def distinct_specs(rng: random.Random, n: int) -> list[tuple[str, str]]:
  """n (kind, color) pairs, no pair twice, so "the red circle" names exactly one shape."""
  pairs = [(k, c) for k in SHAPES for c in COLORS]
  return rng.sample(pairs, n)


def draw(shapes: list[Shape], size: tuple[int, int]) -> bytes:
  """The scene as PNG bytes (flat colours, no antialiasing: small files, exact pixels)."""
  from PIL import Image, ImageDraw
  img = Image.new("RGB", size, BACKGROUND)
  pen = ImageDraw.Draw(img)
  for s in shapes:
    fill = COLORS[s.color]
    if s.kind == "circle":
      pen.ellipse([s.x - s.r, s.y - s.r, s.x + s.r, s.y + s.r], fill=fill)
    elif s.kind == "square":
      h = 0.7 * s.r
      pen.rectangle([s.x - h, s.y - h, s.x + h, s.y + h], fill=fill)
    else:
      pen.polygon(_triangle(s), fill=fill)
  out = io.BytesIO()
  img.save(out, format="PNG", optimize=True)
  return out.getvalue()


def _triangle(s: Shape) -> list[tuple[float, float]]:
  # Equilateral, apex up, vertices on the bounding circle: the centre is inside it.
  angles = (-90, 30, 150)
  return [(s.x + s.r * math.cos(math.radians(a)), s.y + s.r * math.sin(math.radians(a)))
          for a in angles]


def scene_json(shapes: list[Shape]) -> str:
  """The scene as compact JSON (stored in item meta so checks can recompute answers)."""
  return json.dumps([dataclasses.asdict(s) for s in shapes], separators=(",", ":"))


def scene_from_json(value: str) -> list[Shape]:
  return [Shape(**d) for d in json.loads(value)]
