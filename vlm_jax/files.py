"""Atomic file writes: a file is either its old contents or its complete new contents.

Results, settings, metrics logs, checkpoints' config files and safetensors shards are written to
a temporary file beside the target and renamed over it only after a complete, synced write, so a
run killed mid-write (preemption, Ctrl-C, a full disk) never leaves a torn file where a resumed
run would read it.
"""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: str | None = "utf-8"):
  """`with atomic_write(path) as f: ...`: f is a temporary file in path's folder (made if
  missing), synced and renamed to path when the block ends; on an exception it is removed and
  path keeps what it held. mode "w" (text, `encoding`) or "wb"."""
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  # beside the target (same file system: the rename is atomic), named per process; open() gives
  # the permissions the umask allows, as a plain write would (mkstemp's would be 0600)
  tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
  try:
    with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
