import gc
import weakref

import jax.numpy as jnp
import numpy as np

from vlm_jax.derived import Derived


def test_kept_while_the_sources_are_the_same_arrays():
  d, calls = Derived(), []
  make = lambda tree: calls.append(1) or {k: v * 2 for k, v in tree.items()}
  src = {"a": jnp.ones(3), "b": np.zeros(2)}
  first = d.get("x", src, make)
  assert d.get("x", dict(src), make) is first and len(calls) == 1  # same leaves, new dict
  assert d.held("x") is first
  src2 = dict(src, b=np.ones(2))  # one new leaf
  second = d.get("x", src2, make)
  assert second is not first and len(calls) == 2
  np.testing.assert_array_equal(second["b"], 2 * np.ones(2))
  assert d.get("y", src, make) is not second and d.held("x") is second  # names are separate


def test_new_sources_replace_the_old_value():
  d = Derived()
  d.get("x", [jnp.arange(4.0)], lambda t: t[0] + 1)
  out = d.get("x", [jnp.arange(5.0)], lambda t: t[0] + 1)
  np.testing.assert_array_equal(out, np.arange(5.0) + 1)
  assert d.held("x") is out


def test_sources_are_weakly_held():
  d = Derived()
  src = [np.arange(6.0)]
  ref = weakref.ref(src[0])
  d.get("x", src, lambda t: t[0].sum())
  del src
  gc.collect()
  assert ref() is None  # the kept value does not keep its source alive
  assert d.get("x", [np.arange(6.0)], lambda t: -1.0) == -1.0  # a dead source: made anew
