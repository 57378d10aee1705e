"""Items as a tensorflow_datasets dataset (array_record files), read back with grain, no TensorFlow.

tfds 4.9.10 builds and reads array_record datasets without TensorFlow as long as no feature
needs TF to encode: `tfds.features.Image` does (it calls tf.image.encode_png, which fails with
"No module named 'tensorflow'"), so images are stored as already-encoded bytes in a
`Sequence(Tensor(shape=(), dtype=object))` and decoded by the caller (`Item.pil_images`).
Meta is stored as two parallel string sequences (keys, values). Shuffling is disabled so the
records keep the items' order, and `open_tfds_items` shards them exactly like
`pipeline.open_items` (contiguous blocks, see `pipeline.shard_bounds`).

Layout written: `data_dir/<name>/1.0.0/<name>-<split>.array_record-00000-of-00001` plus tfds'
dataset_info.json / features.json. tensorflow_datasets and grain are imported lazily.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from evals.benchmarks.pipeline import shard_bounds
from evals.schema import Item

VERSION = "1.0.0"


def _features(tfds):
  import numpy as np
  text = tfds.features.Text
  return tfds.features.FeaturesDict({
      "id": text(), "benchmark": text(), "question": text(), "answer": text(),
      "category": text(), "options": tfds.features.Sequence(text()),
      "meta_keys": tfds.features.Sequence(text()), "meta_values": tfds.features.Sequence(text()),
      "images": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))})


def _example(item: Item) -> dict:
  return {"id": item.id, "benchmark": item.benchmark, "question": item.question,
          "answer": item.answer, "category": item.category, "options": list(item.options),
          "meta_keys": [k for k, _ in item.meta], "meta_values": [v for _, v in item.meta],
          "images": list(item.images)}


def _builder_class(tfds, name: str, items: list[Item], split: str):
  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=_features(tfds), disable_shuffling=True,
                                 description="vlm_jax evaluation items (evals.schema.Item)")

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples()}

  def _generate_examples(self):
    for i, item in enumerate(items):
      yield i, _example(item)

  def _quiet(self):
    # tfds prints "Downloading and preparing dataset ..." and "... downloaded and prepared":
    # nothing is downloaded here (the items are ours), and staging prints its own line
    pass

  body = {"name": name, "VERSION": tfds.core.Version(VERSION), "_info": _info,
          "_split_generators": _split_generators, "_generate_examples": _generate_examples,
          "_log_download_bytes": _quiet, "_log_download_done": _quiet}
  # Not registered: a throw-away class per call must not clash in tfds' global registry.
  with tfds.core.registered.skip_registration():
    return type("ItemsBuilder", (tfds.core.GeneratorBasedBuilder,), body)


def build_tfds(items: Iterable[Item], data_dir, name: str = "vlm_items",
               split: str = "test") -> Path:
  """Write `items` as a tfds array_record dataset; returns its directory (data_dir/name/1.0.0)."""
  import tensorflow_datasets as tfds
  items = list(items)
  bad = [x for x in items if not isinstance(x, Item)]
  if bad:
    raise ValueError(f"build_tfds: {len(bad)} entries are not Items (first: {bad[0]!r}); "
                     f"filter bad items first")
  target = Path(data_dir) / name / VERSION
  if target.exists():
    # tfds would silently reuse the old records ("Subsequent calls will reuse this data").
    raise FileExistsError(f"build_tfds: {target} already exists; remove it or use another "
                          f"data_dir/name")
  builder = _builder_class(tfds, name, items, split)(data_dir=str(data_dir),
                                                     file_format="array_record")
  builder.download_and_prepare()  # nothing is downloaded: the examples come from `items`
  return Path(builder.data_dir)


def _item(example: dict) -> Item:
  s = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
  return Item(id=s(example["id"]), benchmark=s(example["benchmark"]),
              question=s(example["question"]), options=tuple(s(o) for o in example["options"]),
              answer=s(example["answer"]), images=tuple(bytes(b) for b in example["images"]),
              category=s(example["category"]),
              meta=tuple(zip((s(k) for k in example["meta_keys"]),
                             (s(v) for v in example["meta_values"]))))


def open_tfds_items(dataset_dir, split: str = "test", process_index: int = 0,
                    process_count: int = 1):
  """A grain MapDataset of this process's Items from a dataset written by `build_tfds`."""
  import grain
  import tensorflow_datasets as tfds
  dataset_dir = Path(dataset_dir)
  if not (dataset_dir / "dataset_info.json").is_file():
    raise FileNotFoundError(f"{dataset_dir} is not a tfds dataset directory (no "
                            f"dataset_info.json); write it with build_tfds")
  source = tfds.builder_from_directory(str(dataset_dir)).as_data_source(split=split)
  start, stop = shard_bounds(len(source), process_index, process_count)
  return grain.MapDataset.source(source)[start:stop].map(_item)
