"""Arrays derived from params (the greedy screen's tables, per-layer weight copies), made on
first use and kept while the arrays they were made from are the same objects.

Sources are held by weak reference, so kept arrays never keep old params alive, and new params
(a training step's, or assigned to `Sampler.params`) get new derived arrays. An array changed in
place (host numpy params) is not noticed: assign new arrays instead.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import jax


class Derived:
  """name -> (weak references to the source leaves, the derived value)."""

  def __init__(self):
    self._held: dict[str, tuple[list, Any]] = {}

  def get(self, name: str, sources, make: Callable[[Any], Any]):
    """`make(sources)`, or the value kept under `name` while its sources are the same arrays."""
    leaves = jax.tree.leaves(sources)
    held = self._held.get(name)
    if held is not None and len(held[0]) == len(leaves) and all(
        ref() is x for ref, x in zip(held[0], leaves)):
      return held[1]
    self._held.pop(name, None)  # the old value goes before the new one is made
    value = make(sources)
    self._held[name] = ([weakref.ref(x) for x in leaves], value)
    return value

  def held(self, name: str):
    """The value kept under `name`, or None."""
    held = self._held.get(name)
    return None if held is None else held[1]
