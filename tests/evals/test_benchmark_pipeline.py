"""Staged items: the array_record file read with grain and sharded by process
(`evals.benchmarks.pipeline`), and the tfds builder over it, neither needing TensorFlow."""

import json

import pytest

from evals.benchmarks import pipeline, synthetic
from evals.schema import BadItem, Item


def _pipeline_items():
  items = synthetic.synthetic_items(5, seed=2)
  odd = Item(id="é/7", benchmark="toy", question="Two images?\nYes.", options=("a", "b"),
             answer="B", images=(b"\x89PNG fake", b"\xff\xd8 fake jpeg"), category="",
             meta=(("k", "v\tw"),))
  return items + [odd]


@pytest.mark.parametrize("count", [1, 2, 4])
def test_array_record_grain_round_trip_sharded(tmp_path, count):
  pytest.importorskip("grain", reason="grain not installed (the accelerator image lacks it)")
  pytest.importorskip("array_record", reason="array_record not installed")
  items = _pipeline_items()
  path = tmp_path / "items.array_record"
  assert pipeline.write_array_record(items, path) == len(items)
  shares = [list(pipeline.open_items(path, p, count)) for p in range(count)]
  ids = [[x.id for x in share] for share in shares]
  assert sum(shares, []) == items  # contiguous blocks in file order: union = input
  assert len({i for share in ids for i in share}) == len(items)  # disjoint
  assert max(map(len, shares)) - min(map(len, shares)) <= 1
  ds = pipeline.open_items(path, 1 % count, count)
  assert ds[0] == shares[1 % count][0]  # random access


def test_pipeline_rejects_bad_input(tmp_path):
  pytest.importorskip("array_record", reason="array_record not installed")
  with pytest.raises(ValueError, match="BadItem"):
    pipeline.write_array_record([BadItem("b", "1", "no options")], tmp_path / "x.array_record")
  with pytest.raises(ValueError, match="process_index 2"):
    pipeline.shard_bounds(10, 2, 2)
  with pytest.raises(FileNotFoundError, match="write_array_record"):
    pipeline.open_items(tmp_path / "none.array_record")
  with pytest.raises(ValueError, match="image sizes add up"):
    pipeline.decode_item(pipeline.encode_item(_pipeline_items()[-1]) + b"x")


def test_tfds_builder_round_trip_without_tensorflow(tmp_path, capsys):
  pytest.importorskip("grain", reason="grain not installed (the accelerator image lacks it)")
  pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets not installed")
  from evals.benchmarks import tfds_builder
  items = _pipeline_items()
  directory = tfds_builder.build_tfds(items, tmp_path)
  assert "ownload" not in capsys.readouterr().out  # tfds' "Downloading and preparing ..."
  shares = [list(tfds_builder.open_tfds_items(directory, process_index=p, process_count=2))
            for p in range(2)]
  assert sum(shares, []) == items and json.loads((directory / "dataset_info.json").read_text())
  with pytest.raises(FileExistsError):
    tfds_builder.build_tfds(items, tmp_path)
