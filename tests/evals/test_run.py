"""`python -m evals.run` end to end on a tiny random model: every benchmark format, every
variant, rule judge, on a 2x4 mesh of fake CPU devices; then kill-and-resume."""

import csv
import json
import os

import jax
import numpy as np
import pytest

from evals import run
from evals.engine import Engine

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
REAL = ["cv_bench", "threedsr_bench", "mmbench", "mme_realworld_lite", "vstar_bench", "whatsup",
        "spatial_mm_obj", "spatial_mm_multihop"]
COMMON = ["--max-new-tokens", "8", "--dtype", "float32", "--batch-size", "8"]
SOME_VARIANTS = ["base", "wrong_think", "stop_think", "wrong_caption", "abstain"]


def _records(out):
  with open(os.path.join(out, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_end_to_end_on_a_mesh(tmp_path):
  out = str(tmp_path / "out")
  # the variants of each kind of prompt change: none, an open and a closed think prefill, an
  # inserted caption, an added option (the other four run in test_kill_and_resume and
  # test_scanned_decode_gives_the_same_records)
  argv = ["--benchmarks", ",".join(["synthetic"] + REAL), "--data-dir", FIXTURES,
          "--variants", ",".join(SOME_VARIANTS), "--judge", "rule", "--mesh", "2x4",
          "--out", out, "--limit", "1", "--synthetic-n", "2"] + COMMON
  assert run.main(argv) == 0
  records = _records(out)
  keys = [(r["benchmark"], r["item_id"], r["variant"]) for r in records]
  assert len(keys) == len(set(keys)) == 9 * len(SOME_VARIANTS)
  assert {r["benchmark"] for r in records} == {"synthetic", *REAL}
  for r in records:
    assert r["letters"] == [chr(65 + i) for i in range(len(r["options"]))]
    assert r["correct"] == (r["parsed"] == r["answer"])
    np.testing.assert_allclose(sum(r["letter_probs"]), 1.0, atol=1e-6)
    assert r["p_correct"] == r["letter_probs"][r["letters"].index(r["answer"])]
    if r["variant"] in ("wrong_caption", "wrong_caption_disclaimer"):
      assert r["question"].startswith(r["inserted_caption"]) and r["target"] != r["answer"]
  # summary.csv recomputed independently from the JSONL
  with open(os.path.join(out, "summary.csv")) as f:
    rows = {(row["benchmark"], row["variant"], row["metric"]): row for row in csv.DictReader(f)}
  for bench in {r["benchmark"] for r in records}:
    for variant in SOME_VARIANTS:
      sel = [r for r in records if r["benchmark"] == bench and r["variant"] == variant]
      acc = np.mean([r["correct"] for r in sel])
      unparsed = np.mean([r["parsed"] is None for r in sel])
      entropy = np.mean([-sum(p * np.log(p) for p in r["letter_probs"] if p > 0) for r in sel])
      p_correct = np.mean([r["p_correct"] for r in sel])
      for metric, want in (("accuracy", acc), ("unparsed_rate", unparsed),
                           ("mean_entropy", entropy), ("mean_p_correct", p_correct)):
        np.testing.assert_allclose(float(rows[bench, variant, metric]["value"]), want, atol=1e-9)
  for name in ("summary.md", "accuracy_by_variant.png", "quadrants.png", "reliability_base.png",
               "p_base_hist.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  # --limit 1 reads no further than each release's first good item: the fixtures' broken rows
  # come later (their reports are checked in test_run_multiprocess, without a limit)
  with open(os.path.join(out, "bad_items.jsonl")) as f:
    assert [json.loads(line) for line in f] == []


def test_kill_and_resume(tmp_path, monkeypatch):
  out = str(tmp_path / "out")
  argv = ["--benchmarks", "synthetic", "--synthetic-n", "3", "--variants",
          "wrong_think_but,wrong_caption_disclaimer,correct_think", "--out", out] + COMMON[:4] + [
              "--batch-size", "2"]
  real_run_batch = Engine.run_batch
  calls = {"n": 0}

  def dying(self, jobs):
    calls["n"] += 1
    if calls["n"] == 3:
      raise KeyboardInterrupt  # killed mid-run
    return real_run_batch(self, jobs)

  monkeypatch.setattr(Engine, "run_batch", dying)
  with pytest.raises(KeyboardInterrupt):
    run.main(argv)
  first = _records(out)
  assert len(first) == 4  # two batches of two were written before the kill
  with open(os.path.join(out, "results.jsonl"), "a") as f:
    f.write('{"benchmark": "synthetic", "item_id": "0')  # a torn line from the kill
  monkeypatch.setattr(Engine, "run_batch", real_run_batch)
  assert run.main(argv) == 0
  final = _records(out)
  keys = [(r["benchmark"], r["item_id"], r["variant"]) for r in final]
  assert len(keys) == len(set(keys)) == 9
  assert final[:4] == first  # nothing already written was lost or redone
  assert {r["item_hash"] for r in final if r["item_id"] == "00001"} != {None}
  # results made from other data (a replaced file: here a stored fingerprint that no longer
  # matches) are refused on resume, not pooled with new ones; records from before
  # fingerprints resume as they are
  path = os.path.join(out, "results.jsonl")
  for hashes, fails in ((["0" * 16], True), ([], False)):
    with open(path, "w") as f:
      for r in final:
        r = {k: v for k, v in r.items() if k != "item_hash"}
        if hashes and r["item_id"] == "00001":
          r["item_hash"] = hashes[0]
        f.write(json.dumps(r) + "\n")
    if fails:
      with pytest.raises(ValueError, match="results for synthetic/00001 were made from other data"):
        run.main(argv)
    else:
      assert run.main(argv) == 0
  # a resume after the variant texts changed (edited templates: another wording of the same
  # perturbation) is refused too, and so is one with another repetition penalty
  from evals import variants
  monkeypatch.setitem(variants.TemplateTexts.THINKS, "default", "Reworded. {statement}.")
  with pytest.raises(ValueError, match="the wrong_think_but prompt of synthetic/00000 differs"):
    run.main(argv)
  monkeypatch.undo()
  with pytest.raises(ValueError, match="repetition_penalty: 1.0 before, 1.05 now"):
    run.main(argv + ["--repetition-penalty", "1.05"])


def test_images_the_processor_rejects_become_bad_items():
  from PIL import Image
  from vlm_jax.images import ImageProcessorConfig
  reason = run._usable(None, [Image.new("RGB", (6000, 28))], ImageProcessorConfig())
  assert "aspect ratio" in reason
  assert run._usable(None, [Image.new("RGB", (64, 48))], ImageProcessorConfig()) is None


def test_scanned_decode_gives_the_same_records(tmp_path):
  """--scanned-decode (stacked weights, no per-layer copy) changes memory, not results."""
  outs = []
  for flag in ([], ["--scanned-decode"]):
    out = str(tmp_path / f"out{len(outs)}")
    assert run.main(["--benchmarks", "synthetic", "--variants", "base,correct_caption",
                     "--out", out, "--limit", "3", "--synthetic-n", "3"] + COMMON + flag) == 0
    outs.append([{k: v for k, v in r.items() if "time" not in k} for r in _records(out)])
  assert len(outs[0]) == 6 and any(r["output"] for r in outs[0])
  assert outs[0] == outs[1]


def test_circular_runs_the_copies_and_scores_every_rotation(tmp_path):
  """--circular: MMBench's CircularEval copies run as items of their own (records name their
  original) and summary.csv gets circular_accuracy over the questions; without copies in the
  chosen benchmarks the flag is refused before anything loads."""
  from tests.evals.make_fixtures import b64, put_table
  cols = ("index", "question", "A", "B", "C", "answer", "category", "image")
  rows = [("1", "Which colour?", "red", "green", "blue", "A", "attribute", b64("red")),
          ("2", "Which shape?", "circle", "square", "star", "C", "shape", b64("cyan")),
          ("1000001", "Which colour?", "green", "blue", "red", "C", "attribute", "1"),
          ("2000001", "Which colour?", "blue", "red", "green", "B", "attribute", "1"),
          ("1000002", "Which shape?", "square", "star", "circle", "B", "shape", "2"),
          ("2000002", "Which shape?", "star", "circle", "square", "A", "shape", "2")]
  put_table(tmp_path / "data/mmbench/MMBench_DEV_EN.tsv", [dict(zip(cols, r)) for r in rows],
            "\t")
  out = str(tmp_path / "out")
  argv = ["--benchmarks", "mmbench", "--data-dir", str(tmp_path / "data"), "--variants", "base",
          "--out", out] + COMMON
  assert run.main(argv + ["--circular"]) == 0
  records = _records(out)
  assert {r["item_id"]: r.get("circular_of") for r in records} == {
      "1": None, "2": None, "1000001": "1", "2000001": "1", "1000002": "2", "2000002": "2"}
  with open(os.path.join(out, "summary.csv")) as f:
    rows = {(r["benchmark"], r["variant"], r["metric"]): r for r in csv.DictReader(f)}
  circular = rows[("mmbench", "base", "circular_accuracy")]
  assert circular["n"] == "2"
  want = np.mean([all(r["correct"] for r in records if r["item_id"] == q or r.get("circular_of") == q)
                  for q in ("1", "2")])
  assert float(circular["value"]) == want
  assert rows[("mmbench", "base", "accuracy")]["n"] == "2"  # the originals
  with pytest.raises(ValueError, match="--circular: none of --benchmarks synthetic"):
    run.main(["--benchmarks", "synthetic", "--circular", "--out", str(tmp_path / "x")])


def test_text_generator_writes_the_captions_and_a_finished_rerun_loads_nothing(tmp_path,
                                                                               monkeypatch):
  """--text-generator DIR (a local chat model) writes the wrong captions; a rerun with nothing
  left to run loads neither it nor the evaluated model."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from evals import llm_judge, variants
  from tests.vlm_jax.hf_models import save_tiny_qwen3_chat
  generator = save_tiny_qwen3_chat(str(tmp_path / "qwen3"))
  real, loaded = llm_judge.local_generate_fn, []

  def counted(path, mesh=None, dtype="bfloat16"):
    loaded.append(path)
    return real(path, mesh, dtype)

  monkeypatch.setattr(llm_judge, "local_generate_fn", counted)
  # a random model's reply: random text, or nothing (the template then stands in)
  asked = []
  real_ask = variants.LLMTexts._ask

  def ask(self, item, option, kind):
    text = real_ask(self, item, option, kind)
    asked.append(text)
    return text

  monkeypatch.setattr(variants.LLMTexts, "_ask", ask)
  out = str(tmp_path / "out")
  argv = ["--benchmarks", "synthetic", "--synthetic-n", "2", "--variants", "base,wrong_caption",
          "--text-generator", generator, "--out", out] + COMMON
  assert run.main(argv) == 0
  assert loaded == [generator] and len(asked) == 2
  records = _records(out)
  captions = [r["inserted_caption"] for r in records if r["variant"] == "wrong_caption"]
  assert captions == asked and all(captions)
  assert all(r["question"].startswith(r["inserted_caption"]) for r in records
             if r["variant"] == "wrong_caption")
  monkeypatch.setattr(run, "_load_model", lambda *a: pytest.fail("the model loaded"))
  assert run.main(argv) == 0
  assert loaded == [generator] and _records(out) == records
