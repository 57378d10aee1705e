"""Per-item results as JSONL: appended and flushed one line per result, resumed on rerun.

A run killed at any point loses at most the line being written: on start, `ResultsFile` reads
the complete lines, drops a torn last line (rewriting the file without it, atomically), and
reports which (benchmark, item_id, variant) are done so the run skips them. No result is lost
or counted twice.

The resume key holds no model or sampling settings: OUT/run_settings.json records them on the
first run, and a rerun with other settings is refused (`check_settings`).

One writer at a time: the writer holds an exclusive lock on `<path>.lock` from before it reads
the file until it exits, so a second run started into the same OUT stops at once, instead of
"repairing" a line the first is writing (losing the first's later results) or duplicating them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys

from vlm_jax.files import atomic_write


def result_key(record: dict) -> tuple[str, str, str]:
  return record["benchmark"], str(record["item_id"]), record["variant"]


class ResultsFile:
  """The results of OUT. writer=False (processes other than 0 of a multi-process run): read
  only, no lock and no repair, since process 0 alone writes OUT."""

  def __init__(self, path: str, writer: bool = True):
    self.path, self.writer = path, writer
    self._lock = _lock(path + ".lock") if writer else None
    if writer:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    numbered = self._read_and_repair()
    self.records = [r for _, r in numbered]
    self.done = set()
    for lineno, r in numbered:
      if not isinstance(r, dict) or any(k not in r for k in ("benchmark", "item_id", "variant")):
        raise ValueError(f"{self.path}: line {lineno} is not a result record (a JSON object "
                         f"with benchmark, item_id and variant)")
      if result_key(r) in self.done:
        raise ValueError(f"{self.path}: line {lineno} repeats result {result_key(r)} of an "
                         f"earlier line; remove one of them")
      self.done.add(result_key(r))

  def _read_and_repair(self) -> list[tuple[int, dict]]:
    """(line number, record) of every complete line; a torn last line is cut off the file."""
    if not os.path.exists(self.path):
      return []
    with open(self.path, "rb") as f:
      raw = f.read()
    lines = raw.split(b"\n")
    records, good_bytes = [], 0
    for i, line in enumerate(lines):
      if i == len(lines) - 1 and line.strip():
        break  # no trailing newline: the kill came mid-line (even if the JSON parses)
      if not line.strip():
        good_bytes += len(line) + (1 if i < len(lines) - 1 else 0)
        continue
      try:
        records.append((i + 1, json.loads(line)))
      except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        if i != len(lines) - 1 and any(l.strip() for l in lines[i + 1:]):
          raise ValueError(f"{self.path}: line {i + 1} is corrupt (not the last line)") from None
        break  # a torn last line from a killed run
      good_bytes += len(line) + 1
    if good_bytes < len(raw) and self.writer:
      with atomic_write(self.path, "wb") as f:
        f.write(raw[:good_bytes])
    return records

  def append(self, record: dict) -> None:
    if not self.writer:
      raise ValueError(f"{self.path} was opened read-only (not the writer process)")
    key = result_key(record)
    if key in self.done:
      raise ValueError(f"result {key} is already in {self.path}")
    line = json.dumps(record, ensure_ascii=False, sort_keys=True)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(line + "\n")
      f.flush()
      os.fsync(f.fileno())
    self.records.append(record)
    self.done.add(key)


def _lock(path: str):
  """An open file holding an exclusive lock on `path` (released when the process ends or closes
  the file); a ValueError naming the holder when another process holds it. Where the file
  system has no locks (some network mounts), no lock: one run at a time is then the user's
  care."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  f = open(path, "a+", encoding="utf-8")
  try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # POSIX: per process, so a process may
    # reopen its own results (tests, a second `main` in one process) without locking itself out
  except OSError as e:
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      return f  # no locking here (ENOLCK, EOPNOTSUPP, ...)
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise ValueError(f"{path} is held by {holder}: another run is writing into "
                     f"{os.path.dirname(os.path.abspath(path))}; wait for it to end, or pick "
                     f"another --out") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
  f.flush()
  return f


# ---------------------------------------------------------------- bad items
BAD_ITEMS_FILE = "bad_items.jsonl"


def read_bad_items(path: str) -> list[dict] | None:
  """OUT/bad_items.jsonl's entries ({benchmark, id, reason}; a torn line is skipped), None
  without the file."""
  if not os.path.isfile(path):
    return None
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(entry, dict):
        out.append(entry)
  return out


# ---------------------------------------------------------------- run settings
SETTINGS_FILE = "run_settings.json"


def check_settings(out: str, settings: dict, have_results: bool,
                   legacy: dict | None = None) -> str:
  """Ties OUT to the settings that change a result record, since the resume key (benchmark,
  item, variant) does not hold them: a rerun with another model or temperature would otherwise
  count the old records as its own. Called by the writer process only, before the model loads.

  Writes OUT/run_settings.json (atomically) when it is missing (a first run, or an OUT from a
  version that did not write it: warned), or when OUT holds no results yet (nothing to mix).
  legacy: for settings that older versions did not record, the value those versions implied
  (the answer-parsing rules they had); results recorded without the setting are compared with
  it. Returns '' when this run may go on, else an error naming each differing setting."""
  path = os.path.join(out, SETTINGS_FILE)
  old = None
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      return f"cannot read {path}: {e}; pick a new --out, or delete the file to re-record it"
  elif have_results:
    print(f"warning: {path} is missing (OUT written by an older version); resuming, and recording "
          f"this run's settings there: make sure they are the ones its results were made with",
          file=sys.stderr)
  if have_results:
    before = {**(legacy or {}), **(old or {})}
    diffs = [f"  {k}: {before[k]!r} before, {settings[k]!r} now"
             for k in sorted(settings) if k in before and before[k] != settings[k]]
    if diffs:
      return (f"{out} holds results made with other settings ({path}), which this run would "
              f"resume as its own:\n" + "\n".join(diffs) +
              "\nPick a new --out for these settings (or rerun with the old ones to resume).")
    if old is not None and all(k in old for k in settings):
      return ""
    settings = {**settings, **(old or {})}  # a setting this version adds: recorded from now on
  _write_json(path, settings)
  return ""


def _write_json(path: str, obj) -> None:
  with atomic_write(path) as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
