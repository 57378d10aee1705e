"""Per-item results as JSONL: appended and flushed one line per result, resumed on rerun.

A run killed at any point loses at most the line being written: on start, `ResultsFile` reads
the complete lines, drops a torn last line (rewriting the file without it, atomically), and
reports which (benchmark, item_id, variant) are done so the run skips them. No result is lost
or counted twice.
"""

from __future__ import annotations

import json
import os


def result_key(record: dict) -> tuple[str, str, str]:
  return record["benchmark"], str(record["item_id"]), record["variant"]


class ResultsFile:
  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.records = self._read_and_repair()
    self.done = {result_key(r) for r in self.records}

  def _read_and_repair(self) -> list[dict]:
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
        records.append(json.loads(line))
      except json.JSONDecodeError:
        if i != len(lines) - 1 and any(l.strip() for l in lines[i + 1:]):
          raise ValueError(f"{self.path}: line {i + 1} is corrupt (not the last line)") from None
        break  # a torn last line from a killed run
      good_bytes += len(line) + 1
    if good_bytes < len(raw):
      tmp = self.path + ".tmp"
      with open(tmp, "wb") as f:
        f.write(raw[:good_bytes])
      os.replace(tmp, self.path)
    return records

  def append(self, record: dict) -> None:
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
