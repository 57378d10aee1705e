"""Dependency-free TensorBoard scalar writer (no tensorboard, tensorflow or protobuf needed).

An event file is a sequence of TFRecords, each framed as
  uint64 len (little-endian) | uint32 masked_crc32c(len bytes) | data | uint32 masked_crc32c(data)
where masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32) and crc32c is CRC-32C
(Castagnoli, reflected polynomial 0x82F63B78). Each record's data is a hand-encoded protobuf
  Event{double wall_time=1; int64 step=2; string file_version=3; Summary summary=5;
        SessionLog session_log=7}
  Summary{repeated Value value=1}, Summary.Value{string tag=1; float simple_value=2},
  SessionLog{Status status=1} (START = 1).
The first record is the Event with file_version "brain.Event:2"; each scalar is then one Event
with one Summary.Value (values not finite in float32, or not real numbers, are skipped).
`session_start` writes a SessionLog START: TensorBoard takes a run's first one as its start and
each later one as a restart, dropping the events at or past that step that it read before it
(steps a killed run logged past its last checkpoint), as for TensorFlow's own writers. Files
are named like TensorFlow's, events.out.tfevents.{time}.{host}.{pid}.{counter}{suffix}.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import socket
import struct
import time

import numpy as np


def _table_entry(c: int) -> int:
  for _ in range(8):
    c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
  return c


_TABLE = [_table_entry(n) for n in range(256)]
_COUNTER = itertools.count()
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  n &= 0xFFFFFFFFFFFFFFFF  # int64 negatives encode as 10-byte two's complement
  out = bytearray()
  while n > 0x7F:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _bytes_field(field: int, payload: bytes) -> bytes:  # wire type 2: length-delimited
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, file_version: str | None = None, summary: bytes | None = None,
           session_log: bytes | None = None) -> bytes:
  msg = _varint(1 << 3 | 1) + struct.pack("<d", time.time())  # wall_time: fixed64 double
  msg += _varint(2 << 3 | 0) + _varint(step)                   # step: varint int64
  if file_version is not None:
    msg += _bytes_field(3, file_version.encode())
  if summary is not None:
    msg += _bytes_field(5, summary)
  if session_log is not None:
    msg += _bytes_field(7, session_log)
  return msg


def _scalar_value(tag: str, value: float) -> bytes:  # Summary.Value; simple_value: fixed32 float
  return _bytes_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)


def _as_finite_float(value) -> float | None:
  """float(value) for int/float/bool and numpy real scalars, finite in float32; else None."""
  if not isinstance(value, (numbers.Real, np.integer, np.floating, np.bool_)):
    return None
  value = float(value)  # bools become 0.0 / 1.0
  return value if math.isfinite(value) and abs(value) <= _FLOAT32_MAX else None


class SummaryWriter:
  """Writes scalar summaries to one new event file in `logdir`."""

  def __init__(self, logdir: str, filename_suffix: str = ""):
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
            f"{next(_COUNTER)}{filename_suffix}")
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, "xb")
    self._write(_event(0, file_version="brain.Event:2"))

  def _write(self, data: bytes):
    header = struct.pack("<Q", len(data))
    self._file.write(header + struct.pack("<I", masked_crc32c(header)) + data
                     + struct.pack("<I", masked_crc32c(data)))

  def session_start(self, step: int):
    """SessionLog START at `step`: TensorBoard discards every earlier event at a step >= it."""
    self._write(_event(int(step), session_log=_varint(1 << 3 | 0) + _varint(1)))

  def scalars(self, step: int, values: dict[str, float]):
    for tag, value in values.items():
      value = _as_finite_float(value)
      if value is not None:
        self._write(_event(int(step), summary=_bytes_field(1, _scalar_value(str(tag), value))))

  def flush(self):
    if not self._file.closed:
      self._file.flush()
      os.fsync(self._file.fileno())

  def close(self):
    if not self._file.closed:
      self.flush()
      self._file.close()

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc):
    self.close()
