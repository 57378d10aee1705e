"""The training prompt stream: deterministic order, staged once, sharded by process, state
checkpointable."""

import collections
import os

import numpy as np
import pytest

from evals.benchmarks.synthetic import synthetic_items
from rl import data, pipeline
from rl.config import TrainConfig
from rl.examples import Example

CONFIG = TrainConfig(synthetic_n=10, prompts_per_step=4, seed=3)


def _examples():
  return [Example.from_item(i) for i in synthetic_items(10, seed=3)]


def test_record_round_trip_keeps_every_field():
  for e in _examples()[:3] + [Example(id="7", source="pixmo_count", question="How many?",
                                      answer="4", kind="number", images=(b"\x89PNG..",))]:
    assert pipeline.decode_example(pipeline.encode_example(e)) == e
  record = pipeline.encode_example(_examples()[0])
  with pytest.raises(ValueError, match="image sizes"):
    pipeline.decode_example(record[:-3])


def test_each_epoch_is_a_permutation_and_the_order_is_seeded():
  idx = np.concatenate([pipeline.step_indices(s, 4, 10, seed=3) for s in range(5)])  # 2 epochs
  assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:20]) == list(range(10))
  assert not np.array_equal(idx[:10], idx[10:20])
  assert not np.array_equal(idx, np.concatenate(
      [pipeline.step_indices(s, 4, 10, seed=4) for s in range(5)]))


def test_staged_grain_stream_equals_in_memory_and_is_reused(tmp_path):
  pytest.importorskip("grain")
  staged = pipeline.PromptStream(_examples, CONFIG, cache_dir=str(tmp_path))
  memory = pipeline.PromptStream(_examples, CONFIG)
  assert [f for f in os.listdir(tmp_path) if f.endswith(".array_record")]
  for step in range(4):
    assert staged.batch(step) == memory.batch(step) == data.items_for_step(
        _examples(), step, CONFIG)

  def must_not_load():
    raise AssertionError("staged data must be reused, not loaded again")
  again = pipeline.PromptStream(must_not_load, CONFIG, cache_dir=str(tmp_path))
  assert again.batch(2) == staged.batch(2)


def test_a_source_changed_in_place_is_staged_again(tmp_path):
  """The staged file is named by the sources' files (sizes, modification times), as the eval
  cache is: data replaced under the same folder is read again, not served stale; the
  checkpointed fingerprint (the config's) stays, so a copy of the data on a new machine still
  resumes."""
  import dataclasses
  pytest.importorskip("grain")
  folder = tmp_path / "data" / "synthetic"
  folder.mkdir(parents=True)
  (folder / "notes.txt").write_text("v1")
  config = dataclasses.replace(CONFIG, data_dir=str(tmp_path / "data"))
  first = pipeline.PromptStream(_examples, config, cache_dir=str(tmp_path / "cache"))
  loads = []

  def fewer():
    loads.append(1)
    return _examples()[:8]
  same = pipeline.PromptStream(fewer, config, cache_dir=str(tmp_path / "cache"))
  assert not loads and same.num_items == 10
  (folder / "notes.txt").write_text("version 2")
  changed = pipeline.PromptStream(fewer, config, cache_dir=str(tmp_path / "cache"))
  assert loads and changed.num_items == 8
  assert changed.fingerprint == first.fingerprint == pipeline.cache_key(config)
  assert len(os.listdir(tmp_path / "cache")) == 2


def test_processes_read_disjoint_shares_that_make_up_the_step(tmp_path):
  shares = [pipeline.PromptStream(_examples, CONFIG, process_index=p, process_count=3)
            for p in range(3)]
  whole = pipeline.PromptStream(_examples, CONFIG)
  for step in range(3):
    parts = [s.local_examples(step) for s in shares]
    assert [len(p) for p in parts] == [1, 1, 2]
    assert sum(parts, []) == whole.batch(step)


def test_state_round_trip_and_mismatch_errors():
  stream = pipeline.PromptStream(_examples, CONFIG)
  next(stream), next(stream)
  state = stream.get_state()
  assert state["step"] == 2
  fresh = pipeline.PromptStream(_examples, CONFIG)
  fresh.set_state(state)
  assert next(fresh) == next(stream)
  other = pipeline.PromptStream(_examples, TrainConfig(synthetic_n=10, prompts_per_step=4,
                                                       seed=5))
  with pytest.raises(ValueError, match="seed"):
    other.set_state(state)


def test_step_indices_draw_one_permutation_per_epoch(monkeypatch):
  def reference(step, p, n, seed):  # the definition: position k of the endless stream
    return [np.random.default_rng([seed, k // n]).permutation(n)[k % n]
            for k in range(step * p, (step + 1) * p)]
  for step, p, n in ((0, 4, 10), (2, 4, 10), (7, 3, 5), (1, 16, 16)):
    assert pipeline.step_indices(step, p, n, 3).tolist() == reference(step, p, n, 3)
  calls = []
  rng = np.random.default_rng
  monkeypatch.setattr(np.random, "default_rng", lambda s: calls.append(s) or rng(s))
  pipeline.step_indices(1, 128, 200, seed=0)  # positions 128..255: epochs 0 and 1
  assert len(calls) == 2  # not one 200-long permutation per prompt (0.9 s a step at 190K)


def test_a_prompt_met_twice_in_a_step_samples_two_groups():
  """A step across an epoch boundary can hold one example twice: its copies get different
  sampler keys (the first keeps the key it has alone), so they are not one group twice."""
  import zlib
  from rl import rollout
  a, b = (Example(id=i, source="sat", question="?", answer="A", options=("x", "y"))
          for i in ("1", "2"))
  keys = rollout.row_keys([a, b, a])
  assert keys[0] == zlib.crc32(b"sat/1") == rollout.row_keys([a])[0]
  assert keys[1] == zlib.crc32(b"sat/2") and len(set(keys)) == 3
  steps = [pipeline.step_indices(s, 5, 7, seed=0) for s in range(7)]
  assert any(len(set(idx)) < len(idx) for idx in steps)  # such steps do occur


def test_number_prompts_get_the_presets_system_prompt():
  from evals import presets
  from rl import rollout
  e = Example(id="7", source="pixmo_count", question="How many?", answer="4", kind="number",
              images=(b"png",))
  for name in ("vlaa_thinker", "qwen2_5_vl_instruct"):
    preset = presets.get_preset(name)
    messages, _, target = rollout._prompt(e, 0, preset, CONFIG, None)
    assert [m["role"] for m in messages] == ["system"] * bool(preset.system) + ["user"]
    assert target.kind == "number" and target.answer == "4"


def test_number_prompts_are_augmented_at_the_studys_rates():
  """PAPER section 7: every training prompt, counting ones too, gets each augmentation with
  probability 0.1; the texts assert the answer (correct_*) or a nearby wrong number, the
  reward still scores the true count, and the draw repeats for the same step."""
  from evals import presets
  from rl import augment, rollout
  preset = presets.get_preset("qwen2_5_vl_instruct")
  cfg = augment.AugmentConfig(seed=2)
  seen = collections.Counter()
  for i in range(1500):
    e = Example(id=str(i), source="pixmo_count", question="How many dogs are in the image?",
                answer=str(i % 7), kind="number", images=(b"png",), category="count")
    messages, spec, target = rollout._prompt(e, 3, preset, CONFIG, cfg)
    assert (messages, spec) == rollout._prompt(e, 3, preset, CONFIG, cfg)[:2]
    assert target.answer == e.answer and target.kind == "number"
    seen[spec.variant] += 1
    text = messages[-1]["content"][-1]["text"]
    if spec.variant.endswith("caption"):
      assert text.startswith(f"There are {spec.target} dogs in the image.\n")
    if spec.variant.endswith("think"):
      assert spec.assistant_prefill.startswith("<think>Let me count the dogs one by one.")
      assert f"There are {spec.target} dogs." in spec.assistant_prefill
    if spec.variant.startswith("correct"):
      assert spec.target == e.answer
    elif spec.variant.startswith("wrong"):
      assert spec.target != e.answer and abs(int(spec.target) - int(e.answer)) <= 2
      assert int(spec.target) >= 0
  for name in augment.AUGMENTATIONS:
    assert abs(seen[name] / 1500 - 0.1) < 0.03, seen
  assert abs(seen["base"] / 1500 - 0.6) < 0.05
  # geometry-style decimals: a wrong value at the answer's precision
  assert augment.wrong_number("12.5", "g/1", 0) != "12.5"
  assert len(augment.wrong_number("12.5", "g/1", 0).split(".")[1]) == 1
  for answer in ("-3", "-1", "0", "1"):  # geometry answers may be negative; counts stay >= 0
    wrong = [int(augment.wrong_number(answer, f"g/{k}", 0)) for k in range(30)]
    assert int(answer) not in wrong and (int(answer) < 0 or min(wrong) >= 0)
  spec = augment.augment_number("Find x.", "3", "g/2", "", 0, augment.AugmentConfig(
      probs=(0, 0, 0, 1.0)))
  assert spec.variant == "wrong_caption" and spec.question.startswith(
      "The answer to this question is ")


def test_data_limits_take_a_fixed_subset_of_a_source():
  import dataclasses
  full = data.load_items(dataclasses.replace(CONFIG, synthetic_n=40))
  limited = dataclasses.replace(CONFIG, synthetic_n=40, data_limits="synthetic:10")
  some = data.load_items(limited)
  assert len(some) == 10 and [e.id for e in some] == [e.id for e in full if e in some]
  assert [e.id for e in data.load_items(limited)] == [e.id for e in some]  # the same subset
  assert pipeline.cache_key(limited) != pipeline.cache_key(dataclasses.replace(limited,
                                                                               data_limits=""))
  assert len(data.load_items(dataclasses.replace(limited, data_limits="synthetic:99"))) == 40
  for bad, message in (("sat2:5", "'sat2' is not one of data="),
                       ("synthetic:0", "want source:rows"), ("synthetic", "want source:rows"),
                       ("synthetic:²", "want source:rows")):
    with pytest.raises(ValueError, match=message):
      dataclasses.replace(CONFIG, data_limits=bad)
