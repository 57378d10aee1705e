"""Items on disk as one array_record file, read back with grain and sharded by process.

Record format (one record per item, no TensorFlow, no msgpack):
    4-byte big-endian header length | UTF-8 JSON header | image 0 bytes | image 1 bytes | ...
The header holds id, benchmark, question, options, answer, category, meta (list of pairs) and
image_sizes (byte length of each image), so images stay in their encoded PNG/JPEG form and are
not base64-inflated. Records are written with group_size 1 so any record can be read alone.

Sharding: process p of P gets the CONTIGUOUS block of records [p*N//P, (p+1)*N//P) in file order
(the same even split as grain's ShardOptions without drop_remainder); the blocks are disjoint and
their union is every record, with sizes differing by at most one.

grain and array_record are imported inside the functions: the accelerator image has neither, and
the pure loaders must import without them. A tensorflow_datasets builder over the same items is
in `tfds_builder.py`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path

from evals.schema import BadItem, Item

_HEADER_LEN = struct.Struct(">I")


def encode_item(item: Item) -> bytes:
  """One item as a record (see the module docstring for the layout)."""
  header = {"id": item.id, "benchmark": item.benchmark, "question": item.question,
            "options": list(item.options), "answer": item.answer, "category": item.category,
            "meta": [list(kv) for kv in item.meta], "image_sizes": [len(b) for b in item.images]}
  head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
  return _HEADER_LEN.pack(len(head)) + head + b"".join(item.images)


def decode_item(record: bytes) -> Item:
  """The inverse of `encode_item`; ValueError naming what is wrong for a corrupt record."""
  if len(record) < _HEADER_LEN.size:
    raise ValueError(f"item record of {len(record)} bytes is too short for a header")
  (n,) = _HEADER_LEN.unpack_from(record)
  try:
    header = json.loads(record[_HEADER_LEN.size:_HEADER_LEN.size + n].decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"item record header is not valid JSON ({e})") from e
  images, offset = [], _HEADER_LEN.size + n
  for size in header["image_sizes"]:
    images.append(bytes(record[offset:offset + size]))
    offset += size
  if offset != len(record):
    raise ValueError(f"item record {header.get('id')!r}: image sizes add up to {offset} bytes, "
                     f"record has {len(record)}")
  return Item(id=header["id"], benchmark=header["benchmark"], question=header["question"],
              options=tuple(header["options"]), answer=header["answer"], images=tuple(images),
              category=header["category"], meta=tuple(tuple(kv) for kv in header["meta"]))


def write_array_record(items: Iterable[Item], path) -> int:
  """Write `items` to the array_record file `path`; returns the number written.

  BadItems are refused (ValueError): filter them out first (e.g. `benchmarks.split_bad`).
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = ArrayRecordWriter(str(path), "group_size:1")
  count = 0
  try:
    for item in items:
      if not isinstance(item, Item):
        kind = "BadItem" if isinstance(item, BadItem) else type(item).__name__
        raise ValueError(f"write_array_record({path}): got a {kind} ({item!r}); only Items "
                         f"can be written, filter bad items first")
      writer.write(encode_item(item))
      count += 1
  finally:
    writer.close()
  return count


def shard_bounds(n: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, stop) of process `process_index`'s contiguous share of n records."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} must be in [0, process_count="
                     f"{process_count})")
  return process_index * n // process_count, (process_index + 1) * n // process_count


def open_items(path, process_index: int = 0, process_count: int = 1):
  """A `grain.MapDataset` of this process's Items from the array_record file `path`.

  Random access (`ds[i]`, `len(ds)`) and iteration both work; chain grain transformations
  (`.shuffle(seed)`, `.batch(...)`, `.to_iter_dataset()`) as usual.
  """
  import grain
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"array_record file {path} does not exist (write it with "
                            f"write_array_record)")
  source = grain.sources.ArrayRecordDataSource(str(path))
  start, stop = shard_bounds(len(source), process_index, process_count)
  return grain.MapDataset.source(source)[start:stop].map(decode_item)
