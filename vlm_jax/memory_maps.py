"""A guard against running out of memory mappings in a long-running process.

XLA CPU keeps each compiled program's code in memory mappings of its own: ~700 for this repo's
bench sampler (prefill + decode), 250-350 per further decode variant. Linux allows a process
65530 mappings by default (`vm.max_map_count`); past that the next compile crashes inside XLA
(segfault or abort; the test suite did, ~90 programs in). A sweep that meets many shape
buckets can get there, so the sampler calls `relieve()` before each call: near the limit it
drops JAX's compiled programs (they recompile on their next use) instead of crashing. It looks
at the mappings only after something was compiled (counted through `jax.monitoring`), as
reading them costs ~1 ms per 1000.
"""

from __future__ import annotations

import gc
import warnings

FRACTION = 0.8  # of the limit, where the compiled programs are dropped
_MAX_MAP_COUNT = "/proc/sys/vm/max_map_count"
_SELF_MAPS = "/proc/self/maps"


def usage() -> tuple[int, int] | None:
  """(mappings of this process, the system's limit), or None where /proc does not say."""
  try:
    with open(_MAX_MAP_COUNT) as f:
      limit = int(f.read())
    with open(_SELF_MAPS, "rb") as f:
      count = sum(1 for _ in f)
  except (OSError, ValueError):
    return None
  return count, limit


_COMPILES = {"seen": 0, "checked": -1}  # backend compiles in this process; count at last check
_LISTENING = {"on": False}


def _count_compiles(event: str, duration: float, **kwargs) -> None:
  if event == "/jax/core/compile/backend_compile_duration":
    _COMPILES["seen"] += 1


def _compiled_since_last_check() -> bool:
  """Reading /proc/self/maps costs ~1 ms per 1000 mappings, and mappings grow with compiles:
  count the process's compiles (a jax.monitoring listener) and look only after new ones."""
  if not _LISTENING["on"]:
    import jax  # noqa: PLC0415
    try:
      jax.monitoring.register_event_duration_secs_listener(_count_compiles)
      _LISTENING["on"] = True
    except AttributeError:  # no such listener in this jax: look every time
      return True
  if _COMPILES["seen"] == _COMPILES["checked"]:
    return False
  _COMPILES["checked"] = _COMPILES["seen"]
  return True


def relieve(fraction: float = FRACTION) -> bool:
  """Drops JAX's caches of compiled programs when this process holds more than `fraction` of
  the mappings it may hold (looked at only when something was compiled since the last look).
  Returns whether it dropped them."""
  if not _compiled_since_last_check():
    return False
  now = usage()
  if now is None or now[0] <= fraction * now[1]:
    return False
  import jax  # noqa: PLC0415
  warnings.warn(f"this process holds {now[0]} of the {now[1]} memory mappings Linux allows it "
                f"(vm.max_map_count), mostly compiled XLA programs: dropping JAX's compiled "
                "programs (they recompile when used again). Raise vm.max_map_count to keep them.",
                stacklevel=3)
  jax.clear_caches()
  gc.collect()
  return True
