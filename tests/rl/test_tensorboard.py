"""TensorBoard event writer: TFRecord framing, CRC32C, protobuf encoding, checked by an
independent reader (and by TensorBoard's own EventAccumulator when it is installed)."""

import glob
import json
import os
import struct

import numpy as np
import pytest

from rl import tensorboard
from rl.tensorboard import SummaryWriter


def ref_crc32c(data: bytes) -> int:  # bitwise, no table: independent of the module's
  crc = 0xFFFFFFFF
  for b in data:
    crc ^= b
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
  return crc ^ 0xFFFFFFFF


def ref_masked(data: bytes) -> int:
  crc = ref_crc32c(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32


def read_records(path: str) -> list[bytes]:
  with open(path, "rb") as f:
    buf = f.read()
  records, pos = [], 0
  while pos < len(buf):
    header = buf[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", buf[pos + 8:pos + 12])[0] == ref_masked(header)
    data = buf[pos + 12:pos + 12 + length]
    assert len(data) == length
    assert struct.unpack("<I", buf[pos + 12 + length:pos + 16 + length])[0] == ref_masked(data)
    records.append(data)
    pos += 16 + length
  return records


def parse_proto(data: bytes) -> list[tuple[int, int, object]]:
  """(field, wire type, value) triples: varint -> int, fixed64/32 -> raw bytes, len -> bytes."""
  def varint(pos):
    n = shift = 0
    while True:
      b = data[pos]
      n |= (b & 0x7F) << shift
      pos, shift = pos + 1, shift + 7
      if not b & 0x80:
        return n, pos

  fields, pos = [], 0
  while pos < len(data):
    key, pos = varint(pos)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = varint(pos)
    elif wire == 1:
      value, pos = data[pos:pos + 8], pos + 8
    elif wire == 5:
      value, pos = data[pos:pos + 4], pos + 4
    elif wire == 2:
      n, pos = varint(pos)
      value, pos = data[pos:pos + n], pos + n
    else:
      raise AssertionError(f"unexpected wire type {wire}")
    fields.append((field, wire, value))
  assert pos == len(data)
  return fields


def decode_event(data: bytes) -> dict:
  event = {"step": 0, "scalars": []}
  for field, wire, value in parse_proto(data):
    if field == 1:
      assert wire == 1
      event["wall_time"] = struct.unpack("<d", value)[0]
    elif field == 2:
      assert wire == 0
      event["step"] = value - 2**64 if value >= 2**63 else value
    elif field == 3:
      assert wire == 2
      event["file_version"] = value.decode()
    elif field == 7:  # (6 is the deprecated log_message)
      assert wire == 2 and parse_proto(value) == [(1, 0, 1)]  # SessionLog{status: START}
      event["session_start"] = True
    elif field == 5:
      assert wire == 2
      for sfield, swire, svalue in parse_proto(value):
        assert (sfield, swire) == (1, 2)
        v = dict((f, (w, x)) for f, w, x in parse_proto(svalue))
        assert v[1][0] == 2 and v[2][0] == 5
        event["scalars"].append((v[1][1].decode(), struct.unpack("<f", v[2][1])[0]))
    else:
      raise AssertionError(f"unexpected Event field {field}")
  return event


def read_events(path: str) -> list[dict]:
  return [decode_event(r) for r in read_records(path)]


def read_scalars(path: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of an event file, through the independent reader above."""
  out: dict[str, dict[int, float]] = {}
  for event in read_events(path):
    for tag, value in event["scalars"]:
      out.setdefault(tag, {})[event["step"]] = value
  return out


def f32(x: float) -> float:
  return float(np.float32(x))


def test_reference_crc32c_vector():
  assert ref_crc32c(b"123456789") == 0xE3069283
  assert tensorboard.crc32c(b"123456789") == 0xE3069283
  data = bytes(range(256)) * 3
  assert tensorboard.crc32c(data) == ref_crc32c(data)
  assert tensorboard.masked_crc32c(data) == ref_masked(data)


def write_run(logdir: str) -> tuple[str, dict]:
  expected = {}
  with SummaryWriter(logdir) as writer:
    for step in (0, 1, 5, 300):
      values = {"loss": 1.0 / (step + 3), "reward/accuracy": step * 0.1, "lr": 3e-6}
      writer.scalars(step, values)
      expected[step] = values
  return writer.path, expected


def test_roundtrip_with_independent_reader(tmp_path):
  logdir = str(tmp_path / "new" / "tb")  # created on demand
  path, expected = write_run(logdir)
  assert os.path.dirname(path) == logdir
  assert os.path.basename(path).startswith("events.out.tfevents.")
  events = read_events(path)
  assert events[0]["file_version"] == "brain.Event:2" and events[0]["scalars"] == []
  got = {}
  for event in events[1:]:
    assert "file_version" not in event and len(event["scalars"]) == 1
    assert event["wall_time"] == pytest.approx(events[0]["wall_time"], abs=60)
    tag, value = event["scalars"][0]
    got.setdefault(event["step"], {})[tag] = value
  assert got == {step: {k: f32(v) for k, v in vals.items()} for step, vals in expected.items()}
  assert len(events) == 1 + 4 * 3


def test_skips_non_finite_and_non_numeric(tmp_path):
  with SummaryWriter(str(tmp_path), filename_suffix=".v2") as writer:
    writer.scalars(-2**40, {"neg_step": 1})  # int64 step encodes as 10-byte varint
    writer.scalars(7, {
        "nan": float("nan"), "inf": float("inf"), "ninf": -np.inf, "f32_overflow": 1e39,
        "str": "1.0", "none": None, "list": [1.0], "array": np.ones(3), "complex": 1j,
        "np_nan": np.float32("nan"),
        "int": 3, "bool": True, "false": False, "np_f32": np.float32(0.25), "np_i64": np.int64(9),
        "np_bool": np.bool_(True), "big": 1e30,
    })
  assert writer.path.endswith(".v2")
  events = read_events(writer.path)
  assert events[1]["step"] == -2**40 and events[1]["scalars"] == [("neg_step", 1.0)]
  assert {e["step"] for e in events[2:]} == {7}
  assert [s for e in events[2:] for s in e["scalars"]] == [
      ("int", 3.0), ("bool", 1.0), ("false", 0.0), ("np_f32", 0.25), ("np_i64", 9.0),
      ("np_bool", 1.0), ("big", f32(1e30))]


def test_two_writers_in_one_logdir_use_distinct_files(tmp_path):
  with SummaryWriter(str(tmp_path)) as a, SummaryWriter(str(tmp_path)) as b:
    a.scalars(1, {"x": 1.0})
    b.scalars(1, {"x": 2.0})
  assert a.path != b.path
  assert sorted(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == sorted([a.path, b.path])
  assert read_events(a.path)[1]["scalars"] == [("x", 1.0)]
  assert read_events(b.path)[1]["scalars"] == [("x", 2.0)]


def test_flush_makes_records_visible_before_close(tmp_path):
  writer = SummaryWriter(str(tmp_path))
  writer.scalars(4, {"y": 0.5})
  writer.flush()
  events = read_events(writer.path)
  assert events[-1]["step"] == 4 and events[-1]["scalars"] == [("y", 0.5)]
  writer.close()
  writer.close()  # idempotent


def test_tensorboard_event_accumulator_reads_file(tmp_path):
  pytest.importorskip("tensorboard")
  from tensorboard.backend.event_processing import event_accumulator
  _, expected = write_run(str(tmp_path))
  acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
  acc.Reload()
  assert sorted(acc.Tags()["scalars"]) == ["loss", "lr", "reward/accuracy"]
  for tag in ("loss", "lr", "reward/accuracy"):
    got = [(e.step, e.value) for e in acc.Scalars(tag)]
    assert got == [(step, pytest.approx(f32(vals[tag]), rel=1e-7))
                   for step, vals in expected.items()]


def test_a_resumed_metrics_log_starts_its_event_file_with_a_session_start(tmp_path):
  """A killed run logged step 3 past its last checkpoint (2); the resumed run's file begins with
  SessionLog START at step 3, which makes TensorBoard drop the first file's step 3 (a restart:
  the first run's file began with the run's first START)."""
  from rl.checkpoints import MetricsLog
  tb, path = str(tmp_path / "tb"), str(tmp_path / "metrics.jsonl")
  first = MetricsLog(path, 0, tensorboard_dir=tb)
  for step in (1, 2, 3):
    first.write({"step": step, "loss": float(step)})
  first.close()
  files_before = set(os.listdir(tb))
  resumed = MetricsLog(path, 2, tensorboard_dir=tb)
  resumed.write({"step": 3, "loss": 30.0})
  resumed.close()
  (new,) = set(os.listdir(tb)) - files_before
  events = read_events(os.path.join(tb, new))
  assert events[1] == {**events[1], "step": 3, "session_start": True}
  (old,) = files_before
  assert read_events(os.path.join(tb, old))[1] == {
      **read_events(os.path.join(tb, old))[1], "step": 1, "session_start": True}
  with open(path) as f:
    assert [json.loads(line)["loss"] for line in f] == [1.0, 2.0, 30.0]
  idle = MetricsLog(path, 3, tensorboard_dir=tb)  # a rerun with nothing left to train
  idle.close()
  assert len(os.listdir(tb)) == 2  # no empty event file


def test_tensorboard_drops_the_steps_a_resumed_run_logs_again(tmp_path):
  pytest.importorskip("tensorboard")
  from tensorboard.backend.event_processing import event_accumulator
  from rl.checkpoints import MetricsLog
  tb, path = str(tmp_path / "tb"), str(tmp_path / "metrics.jsonl")
  first = MetricsLog(path, 0, tensorboard_dir=tb)
  for step in (1, 2, 3):
    first.write({"step": step, "loss": float(step)})
  first.close()
  resumed = MetricsLog(path, 2, tensorboard_dir=tb)  # killed after logging 3, checkpoint 2
  for step in (3, 4):
    resumed.write({"step": step, "loss": 10.0 * step})
  resumed.close()
  acc = event_accumulator.EventAccumulator(tb, size_guidance={"scalars": 0})
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 2.0), (3, 30.0),
                                                               (4, 40.0)]
