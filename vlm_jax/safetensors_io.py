"""Minimal safetensors reader/writer on numpy (bfloat16 through ml_dtypes), memory-mapped.

Format: 8-byte little-endian header length N, N bytes of JSON
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw bytes.
Own code rather than the `safetensors` package so loading needs no torch, reads lazily (a tensor,
or later one shard of it, at a time) and handles bfloat16 without a framework.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct

import ml_dtypes
import numpy as np

from vlm_jax.files import atomic_write

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsFile:
  """Lazy view of one .safetensors file: `keys()`, `shape(k)`, `get(k)` -> numpy array.

  The header is validated against the file's size when opened, so a truncated or foreign file
  fails here with its path named, not later inside numpy (`buffer is smaller than requested
  size`) or mmap (`cannot fit 'int' into an index-sized integer`), possibly in a sharded load's
  callback where the file is no longer in sight.
  """

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      head = f.read(8)
      if len(head) != 8:
        raise ValueError(f"{path}: not a safetensors file ({size} bytes, fewer than the 8 of "
                         "the header length)")
      (n,) = struct.unpack("<Q", head)
      if n > size - 8:
        raise ValueError(f"{path}: not a safetensors file, or truncated (header length {n} but "
                         f"the file has {size} bytes)")
      try:
        self.header = json.loads(f.read(n))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file (header is not JSON: {e})") from e
    if not isinstance(self.header, dict):
      raise ValueError(f"{path}: not a safetensors file (header is a JSON "
                       f"{type(self.header).__name__}, not an object)")
    self.metadata = self.header.pop("__metadata__", {}) or {}
    self._data_start = 8 + n
    for key, info in self.header.items():
      self._check_entry(key, info, size)
    self._mmap = None

  def _check_entry(self, key: str, info, size: int) -> None:
    """Raise unless `key`'s entry is well formed and its bytes lie inside the file."""
    def bad(what):
      return ValueError(f"{self.path}: corrupt safetensors header: tensor {key!r} {what}")
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
      raise bad(f"entry {info!r:.100} lacks dtype, shape or data_offsets")
    shape, offsets = info["shape"], info["data_offsets"]
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if not isinstance(shape, list) or not all(is_int(d) for d in shape):
      raise bad(f"has shape {shape!r}, not a list of non-negative ints")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets)
        or offsets[0] > offsets[1]):
      raise bad(f"has data_offsets {offsets!r}, not [begin, end] with 0 <= begin <= end")
    begin, end = self._data_start + offsets[0], self._data_start + offsets[1]
    if end > size:
      raise ValueError(f"{self.path}: truncated safetensors: tensor {key!r} needs bytes "
                       f"[{begin}, {end}) but the file has {size} bytes")
    if info["dtype"] in _DTYPES:  # unknown dtypes are refused by `get`, should one be read
      want = math.prod(shape) * np.dtype(_DTYPES[info["dtype"]]).itemsize
      if offsets[1] - offsets[0] != want:
        raise bad(f"spans {offsets[1] - offsets[0]} bytes, but shape {shape} of "
                  f"{info['dtype']} needs {want}")

  def keys(self) -> list[str]:
    return list(self.header)

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self.header[key]["shape"])

  def get(self, key: str) -> np.ndarray:
    info = self.header[key]
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{self.path}: tensor {key} has unsupported dtype {info['dtype']}")
    if self._mmap is None:
      with open(self.path, "rb") as f:
        self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    begin, _ = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]])
    count = math.prod(info["shape"])  # sizes were checked against the file in __init__
    arr = np.frombuffer(self._mmap, dtype, count, self._data_start + begin)
    return arr.reshape(info["shape"])


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
  """Write `tensors` to `path` atomically (a temp file renamed into place)."""
  header, offset = {}, 0
  arrays = {}
  for name in sorted(tensors):
    arr = np.ascontiguousarray(tensors[name])
    if arr.dtype not in _NAMES:
      raise ValueError(f"tensor {name}: dtype {arr.dtype} cannot be stored in safetensors")
    arrays[name] = arr
    header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                    "data_offsets": [offset, offset + arr.nbytes]}
    offset += arr.nbytes
  header["__metadata__"] = dict(metadata or {"format": "pt"})
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # align the data section
  with atomic_write(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name in sorted(arrays):
      f.write(arrays[name].tobytes())
