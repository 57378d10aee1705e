"""Reading a release's annotation files (TSV/CSV, parquet, JSON, JSONL) from a local folder.

Nothing here downloads: a missing folder or file raises FileNotFoundError naming the path and
saying where the release is obtained. pyarrow is imported only when a parquet file is read.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


def require_dir(root, benchmark: str, how: str) -> Path:
  """`root` as a Path if it is a folder; FileNotFoundError with instructions otherwise."""
  if root is None:
    raise FileNotFoundError(f"{benchmark}: no data folder given. {how}")
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"{benchmark}: data folder {root} does not exist. {how}")
  return root


def find_first(root: Path, names: Sequence[str], benchmark: str, how: str,
               recursive: bool = True) -> list[Path]:
  """Files for the first of `names` (exact names or glob patterns) that matches anything.

  Searched in `root`, then (if `recursive`) anywhere below it; sorted for a stable order.
  """
  for name in names:
    found = sorted(root.glob(name)) or (sorted(root.rglob(name)) if recursive else [])
    found = [p for p in found if p.is_file()]
    if found:
      return found
  raise FileNotFoundError(f"{benchmark}: none of {list(names)} found under {root}. {how}")


def _allow_huge_fields():
  # VLMEvalKit TSVs hold whole base64 images in one cell, far above csv's 128 KiB default.
  csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_table_rows(path: Path) -> list[dict]:
  """Rows of a .tsv/.csv file as dicts of strings (header row gives the keys)."""
  _allow_huge_fields()
  delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
  try:
    with path.open(newline="", encoding="utf-8-sig") as f:
      return [dict(row) for row in csv.DictReader(f, delimiter=delimiter)]
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e})") from e


def iter_parquet_rows(path: Path, batch_size: int = 64) -> Iterator[dict]:
  """Rows of a parquet file, streamed in batches (image columns can be hundreds of MB)."""
  import pyarrow.parquet as pq
  for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
    yield from batch.to_pylist()


def read_json(path: Path):
  try:
    with path.open(encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e})") from e


def iter_jsonl(path: Path) -> Iterator[dict]:
  """Objects of a JSON-lines file; blank lines skipped; bad JSON raises naming the line."""
  with path.open(encoding="utf-8", errors="surrogateescape") as f:
    for lineno, line in enumerate(f, 1):
      if line.strip():
        try:
          line.encode("utf-8")
        except UnicodeEncodeError as e:
          raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e})") from e
        try:
          yield json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e


def read_rows(path: Path) -> Iterator[dict]:
  """Rows of any supported annotation file, chosen by suffix."""
  suffix = path.suffix.lower()
  if suffix in (".tsv", ".csv"):
    return iter(read_table_rows(path))
  if suffix == ".parquet":
    return iter_parquet_rows(path)
  if suffix == ".jsonl":
    return iter_jsonl(path)
  if suffix == ".json":
    data = read_json(path)
    if not isinstance(data, list):
      raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return iter(data)
  raise ValueError(f"{path}: unsupported annotation format {suffix!r}")


def first_key(row: dict, keys: Sequence[str], default=None):
  """The value of the first of `keys` present in `row` (releases name fields differently)."""
  for key in keys:
    if key in row:
      return row[key]
  return default


def choose_file(root: Path, preferred: Sequence[str], benchmark: str, how: str,
                file: str | None = None) -> Path:
  """One annotation file: `file` (relative to root) if given, else the first of `preferred`.

  A pattern matching several files is ambiguous (e.g. two TSV variants side by side): that
  raises ValueError listing them, asking for `file=`, rather than silently picking one.
  """
  if file is not None:
    path = root / file
    if not path.is_file():
      raise FileNotFoundError(f"{benchmark}: file {path} does not exist. {how}")
    return path
  found = find_first(root, preferred, benchmark, how)
  if len(found) > 1:
    names = ", ".join(str(p.relative_to(root)) for p in found)
    raise ValueError(f"{benchmark}: several candidate files under {root} ({names}); "
                     f"pass file=<one of them>")
  return found[0]
