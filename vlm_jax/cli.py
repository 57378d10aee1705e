"""The command-line entry points' error handling (`evals.run`, `rl.train`, `rl.sft`,
`vlm_jax.convert`, `vlm_jax.demo`).

A user's mistake (a bad flag or override value, a missing or corrupt file, a mesh that does not
fit the devices) raises ValueError, FileNotFoundError or KeyError with a message naming the
file, item or field. At the command line that message is what the user needs, so it is printed
as one line with the place it was raised, and the command exits with status 2 (argparse's
status for bad arguments); the traceback would bury it. VLM_JAX_TRACEBACK=1 re-raises instead,
for a bug that happens to raise one of these types. Tests call each CLI's `main` directly and
see the exception itself.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, KeyError)


def run(main: Callable[[], int | None], prog: str) -> int:
  """main() -> its exit status; a `USER_ERRORS` exception -> one line on stderr and status 2."""
  try:
    return main() or 0
  except USER_ERRORS as e:
    if os.environ.get("VLM_JAX_TRACEBACK"):
      raise
    print(f"{prog}: error: {describe(e)}", file=sys.stderr)
    return 2


def describe(e: BaseException) -> str:
  """'Type: message (at file:line)', the line being where the exception was raised."""
  message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
  frames = traceback.extract_tb(e.__traceback__)
  where = f" (at {_short(frames[-1].filename)}:{frames[-1].lineno}; VLM_JAX_TRACEBACK=1 " \
          f"shows the traceback)" if frames else ""
  return f"{type(e).__name__}: {message}{where}"


def _short(path: str) -> str:
  """A path relative to the repository when it is inside it (the usual case), else as is."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.relpath(path, root) if path.startswith(root + os.sep) else path


def int_at_least(low: int):
  """argparse type: an int >= low, so that e.g. --limit 0 stops at parsing rather than deep in
  a run (an empty split) and --batch-size 0 does not quietly become one batch."""
  def parse(text: str) -> int:
    import argparse
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
      raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value
  return parse


def local_dir(text: str) -> str:
  """argparse type of an output folder: a local (or mounted) path. A URL such as gs://bucket/x
  would otherwise become a local folder named "gs:" for some files while other readers (grain)
  went to the bucket itself; on Cloud TPU, mount the bucket (gcsfuse) or use Filestore."""
  import argparse
  import re
  if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
    raise argparse.ArgumentTypeError(
        f"{text!r} is a URL: give a local folder (mount a bucket with gcsfuse, or use a shared "
        "file system such as Filestore, so that every host sees the same path)")
  return text
