"""Host-side exchange between the processes of a multi-process (multi-host) JAX run.

Data readers are sharded by process (each reads only its share of records); these helpers give
every process the same global view of what was read, in process order, so all processes then run
the same jitted programs (SPMD). With one process every function is the identity, with no
collective, so single-host code pays nothing.
"""

from __future__ import annotations

import json
import struct

import jax
import numpy as np

_LEN = struct.Struct(">Q")


def gather_bytes(blob: bytes) -> list[bytes]:
  """Every process's `blob` (any lengths), in process order, on every process."""
  if jax.process_count() == 1:
    return [bytes(blob)]
  from jax.experimental import multihost_utils
  sizes = np.asarray(multihost_utils.process_allgather(np.array([len(blob)], np.int64)))
  sizes = sizes.reshape(-1)
  buf = np.zeros(max(int(sizes.max()), 1), np.uint8)
  buf[:len(blob)] = np.frombuffer(blob, np.uint8)
  table = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(sizes), -1)
  return [table[p, :sizes[p]].tobytes() for p in range(len(sizes))]


def broadcast_bytes(blob: bytes) -> bytes:
  """Process 0's `blob` on every process (the other processes' arguments are ignored)."""
  return gather_bytes(blob if jax.process_index() == 0 else b"")[0]


def gather_json(obj) -> list:
  """Every process's JSON-serialisable `obj`, in process order."""
  return [json.loads(b.decode("utf-8")) for b in gather_bytes(json.dumps(obj).encode("utf-8"))]


def pack(records: list[bytes]) -> bytes:
  """Length-prefixed concatenation of byte records (the inverse is `unpack`)."""
  return b"".join(_LEN.pack(len(r)) + r for r in records)


def unpack(blob: bytes) -> list[bytes]:
  out, offset = [], 0
  while offset < len(blob):
    if offset + _LEN.size > len(blob):
      raise ValueError(f"packed records: truncated length prefix at byte {offset}")
    (n,) = _LEN.unpack_from(blob, offset)
    offset += _LEN.size
    if offset + n > len(blob):
      raise ValueError(f"packed records: record of {n} bytes at byte {offset} runs past the end "
                       f"({len(blob)} bytes)")
    out.append(blob[offset:offset + n])
    offset += n
  return out


def add_distributed_args(parser) -> None:
  """The multi-host flags every CLI takes (`initialize_from_args` acts on them)."""
  from vlm_jax.cli import int_at_least as count
  parser.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize() first (multi-host TPU/GPU: every "
                           "worker runs the same command; orbax checkpoints need it)")
  parser.add_argument("--coordinator", default=None,
                      help="with --distributed off TPU: coordinator HOST:PORT (then also "
                           "--num-processes and --process-id)")
  parser.add_argument("--num-processes", type=count(1), default=None)
  parser.add_argument("--process-id", type=count(0), default=None)


def check_distributed_args(args) -> None:
  """A ValueError for flags that would be ignored or that jax.distributed would refuse late:
  --coordinator / --num-processes / --process-id without --distributed (the run would go on
  as one process), some of the three without the others, or a process id out of range."""
  given = [f"--{name.replace('_', '-')}" for name in ("coordinator", "num_processes", "process_id")
           if getattr(args, name) is not None]
  if given and not args.distributed:
    raise ValueError(f"{', '.join(given)} given without --distributed: add --distributed, or "
                     "drop them for a one-process run")
  if given and len(given) < 3:
    raise ValueError(f"{', '.join(given)} given without the rest of --coordinator HOST:PORT, "
                     "--num-processes N and --process-id I: give all three (or none, where "
                     "jax.distributed finds them itself, as on Cloud TPU)")
  if given and args.process_id >= args.num_processes:
    raise ValueError(f"--process-id {args.process_id} must be below --num-processes "
                     f"{args.num_processes}")


def initialize_from_args(args) -> None:
  """jax.distributed.initialize() when `--distributed` was given (before any mesh is built: a
  mesh spans the devices of every process), after `check_distributed_args`."""
  check_distributed_args(args)
  if args.distributed:
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
