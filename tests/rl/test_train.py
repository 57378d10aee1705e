"""The GRPO loop: smoke run on a 2x4 FSDP/TP mesh; SIGTERM + resume reproduces an
uninterrupted run exactly."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from rl import train
from rl.config import apply_overrides, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
TIMING = ("step_time", "tokens_per_s")


def _metrics(out):
  with open(os.path.join(out, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.fixture
def random_advantages(monkeypatch):
  """Advantages drawn per step (seeded by the step, so a resumed run draws the same): the random
  tiny model never earns a reward, and with every advantage 0 only the KL term, numerical noise
  at first, would move the policy."""
  from rl import rollout
  real = rollout.collect

  def collect(sampler, processor, preset, examples, step, *args, **kwargs):
    ro = real(sampler, processor, preset, examples, step, *args, **kwargs)
    ro.advantages = np.random.RandomState(step).randn(len(ro.lengths)).astype(np.float32)
    return ro

  monkeypatch.setattr(rollout, "collect", collect)


def _record_updates(monkeypatch) -> list:
  """Per optimizer update: the (weight, old given, ratio_mean) of each `_grad` call before it."""
  updates, calls = [], []
  real_grad, real_apply = train._grad, train.apply_updates

  def grad(*args, **kwargs):
    (loss, aux), g = real_grad(*args, **kwargs)
    calls.append((float(args[7]), args[4] is not None, float(aux["ratio_mean"])))
    return (loss, aux), g

  def apply(*args):
    updates.append(list(calls))
    calls.clear()
    return real_apply(*args)

  monkeypatch.setattr(train, "_grad", grad)
  monkeypatch.setattr(train, "apply_updates", apply)
  return updates


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_smoke_on_a_mesh(tmp_path):
  assert train.main(["--config", SMOKE, "--mesh", "2x4", "--out", str(tmp_path),
                     "steps=2", "checkpoint_every=1", "eval_every=2", "eval_items=2",
                     "eval_max_new_tokens=8"]) == 0
  rows = _metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    for key in ("loss", "kl", "clip_frac", "grad_norm", "reward/format", "reward/accuracy",
                "reward/total", "accuracy", "consistency", "response_length", "entropy",
                "sampler_logp_diff"):
      assert np.isfinite(r[key]), key
    # one update per step: "old" is the current log-probs under stop_gradient, the ratio is 1
    assert r["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and r["clip_frac"] == 0.0
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  from vlm_jax import convert, hf
  assert convert.main(["train-to-hf", "--src", str(tmp_path), "--dst", str(tmp_path / "hf")]) == 0
  _, exported = hf.load_hf(str(tmp_path / "hf"))
  assert exported["text"]["embed"]["embedding"].shape[0] == 151936
  assert "eval/wrong_think/accuracy" in rows[1] and "eval/base/letter_entropy" in rows[1]
  assert np.isfinite(rows[1]["eval/base/letter_entropy"])
  with open(tmp_path / "eval" / "step_2.jsonl") as f:
    assert len(f.readlines()) == 2 * 3  # 2 items x 3 variants
  from tests.rl.test_tensorboard import read_scalars
  (events,) = os.listdir(tmp_path / "tensorboard")
  scalars = read_scalars(str(tmp_path / "tensorboard" / events))
  for step, row in zip((1, 2), rows):
    for key in ("loss", "reward/accuracy", "grad_norm", "eval/base/accuracy"):
      if key in row:
        assert scalars[key][step] == pytest.approx(row[key], rel=1e-6), key


def test_sigterm_then_resume_equals_uninterrupted(tmp_path, monkeypatch, capsys,
                                                  random_advantages):
  """... with two mini-batches per step (prompts_per_update=2 of 4): an update each, its
  micro-batches' loss weights summing to 1, the "old" log-probs recomputed before the first."""
  config = apply_overrides(load_config(SMOKE), ["steps=3", "checkpoint_every=100", "lr=1e-2",
                                                "kl_coef=0.1", "prompts_per_update=2"])
  updates = _record_updates(monkeypatch)
  full = train.train(config, out=str(tmp_path / "full"))
  assert len(updates) == 3 * 2
  for i, calls in enumerate(updates):
    assert sum(w for w, _, _ in calls) == pytest.approx(1.0, rel=1e-6)
    assert all(old for _, old, _ in calls)  # off-policy: recomputed old log-probs
    ratios = [r for _, _, r in calls]
    if i % 2 == 0:  # the step's first update: old is the current policy (same forward)
      np.testing.assert_allclose(ratios, 1.0, atol=1e-5)
    elif i > 1:  # the second: the policy moved since the rollout (update 0 had lr 0: warmup)
      assert max(abs(r - 1.0) for r in ratios) > 1e-4, ratios
  real_step = train.Trainer.train_step

  def preempted(self):
    metrics = real_step(self)
    if self.step == 2:
      os.kill(os.getpid(), signal.SIGTERM)  # TPU preemption notice
    return metrics

  monkeypatch.setattr(train.Trainer, "train_step", preempted)
  part = train.train(config, out=str(tmp_path / "resumed"))
  assert part.step == 2
  monkeypatch.setattr(train.Trainer, "train_step", real_step)
  resumed = train.train(config, out=str(tmp_path / "resumed"))
  assert resumed.step == 3
  jax.tree.map(np.testing.assert_array_equal, resumed.params, full.params)
  assert _metrics(str(tmp_path / "resumed")) == _metrics(str(tmp_path / "full"))
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       full.params, full.ref_params)
  assert max(jax.tree.leaves(moved)) > 0  # the test is not vacuous: params did change
  # another model or dtype is refused before anything is restored or overwritten; other
  # changed settings are listed (here with nothing left to train)
  out = str(tmp_path / "resumed")
  with open(os.path.join(out, "model_config.json")) as f:
    saved = f.read()
  for change, line in (("param_dtype=bfloat16", "\n  dtype: 'float32' before, 'bfloat16' now"),
                       ("model_preset=small", "\n  text_config.hidden_size: ")):
    with pytest.raises(ValueError, match="another model or dtype") as refused:
      train.train(apply_overrides(config, [change]), out=out)
    assert line in str(refused.value) and "{" not in str(refused.value)  # leaves, not dicts
  with open(os.path.join(out, "model_config.json")) as f:
    assert f.read() == saved  # the checkpoints still export
  capsys.readouterr()
  # the compute dtype may change (the checkpoints hold float32 masters)
  assert train.train(apply_overrides(config, ["lr=0.5", "dtype=bfloat16"]), out=out).step == 3
  err = capsys.readouterr().err
  assert "changed settings: dtype 'float32' -> 'bfloat16', lr 0.01 -> 0.5" in err
  assert "nothing to train" in err


def test_bf16_compute_updates_every_float32_master_weight(tmp_path, monkeypatch,
                                                          random_advantages):
  """dtype=bfloat16 at the study's lr 1e-6: one update changes essentially every trained
  weight (pure bfloat16 params lost ~98% of such updates to rounding). With it: one update per
  step is on-policy (ratio exactly 1; the sampler's bfloat16 log-probs differ from the training
  forward's by a logged gap), kl_coef=0 holds and scores no reference, and freeze_vision leaves
  the vision tower as it was."""
  config = apply_overrides(load_config(SMOKE), [
      "dtype=bfloat16", "lr=1e-6", "warmup_steps=0", "kl_coef=0", "freeze_vision=true",
      "prompts_per_step=2", "group_size=2", "max_new_tokens=4", "steps=1"])
  scored = []
  monkeypatch.setattr(train, "_score", lambda *a: scored.append(a))
  trainer = train.Trainer(config, None, str(tmp_path))
  assert trainer.ref_params is None
  start = jax.tree.map(np.asarray, trainer.params)
  metrics = trainer.train_step()
  assert jax.tree.leaves(trainer.params)[0].dtype == np.float32
  assert not scored and "kl" not in metrics
  assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and metrics["clip_frac"] == 0.0
  assert 0 < metrics["sampler_logp_diff"] < 0.1 and metrics["grad_norm"] > 0
  jax.tree.map(np.testing.assert_array_equal, trainer.params["vision"], start["vision"])
  # every weight but the embeddings of tokens the batch never saw (no gradient)
  text = {k: v for k, v in trainer.params["text"].items() if k != "embed"}
  pairs = list(zip(jax.tree.leaves(text), jax.tree.leaves(
      {k: v for k, v in start["text"].items() if k != "embed"})))
  moved = sum(int(np.sum(np.asarray(a) != b)) for a, b in pairs) / sum(b.size for _, b in pairs)
  assert moved > 0.99, moved


@pytest.mark.parametrize("poison,at_step", [("gradient", 1), ("loss", 0)])
def test_a_non_finite_step_raises_and_keeps_the_last_good_state(tmp_path, monkeypatch, poison,
                                                                 at_step):
  """No checkpoint is due (checkpoint_every=100), yet the state the failing step started from
  is saved before the error propagates, and the bad update never reaches the params."""
  import jax.numpy as jnp
  config = apply_overrides(load_config(SMOKE), [f"steps={at_step + 1}", "checkpoint_every=100"])
  real_grad, real_step, seen = train._grad, train.Trainer.train_step, {}

  def step(self):
    if self.step == at_step:
      seen["params"] = jax.tree.map(np.asarray, self.params)
    return real_step(self)

  def grad(*args, **kwargs):
    (loss, aux), g = real_grad(*args, **kwargs)
    if "params" in seen:
      if poison == "gradient":  # the loss stays finite: only the norm check can catch it
        g = jax.tree.map(lambda x: x * jnp.nan, g)
      else:
        loss = loss * jnp.nan
    return (loss, aux), g

  monkeypatch.setattr(train.Trainer, "train_step", step)
  monkeypatch.setattr(train, "_grad", grad)
  out = str(tmp_path / "run")
  with pytest.raises(FloatingPointError, match=f"step {at_step + 1}: {poison}.* is nan"):
    train.train(config, out=out)
  monkeypatch.undo()
  assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [str(at_step)]
  resumed = train.train(apply_overrides(config, [f"steps={at_step}"]), out=out)
  assert resumed.step == at_step and resumed.data.step == at_step
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed.params),
               seen["params"])
  assert [r["step"] for r in _metrics(out)] == list(range(1, at_step + 1))


def test_a_local_model_directory_is_the_judge_of_the_faithful_reward(tmp_path, monkeypatch):
  """judge=DIR (a Qwen3 checkpoint with its tokenizer, as the study's Qwen3 judge): its replies
  decide the consistency verdicts in the reward."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from evals import llm_judge
  from tests.vlm_jax.hf_models import save_tiny_qwen3_chat
  judge_dir = save_tiny_qwen3_chat(str(tmp_path / "qwen3"))
  real, asked = llm_judge.local_generate_fn, []

  def counted(path, mesh=None, dtype="bfloat16"):
    generate = real(path, mesh, dtype)

    def fn(message_lists, max_new_tokens):
      replies = generate(message_lists, max_new_tokens)
      asked.append((path, len(message_lists), replies))
      return replies
    return fn

  monkeypatch.setattr(llm_judge, "local_generate_fn", counted)
  config = apply_overrides(load_config(SMOKE), ["steps=1", "checkpoint_every=100",
                                                f"judge={judge_dir}", "faithful=true"])
  trainer = train.train(config, out=str(tmp_path / "run"))
  assert trainer.judge.name == "llm:qwen3"
  assert asked and all(path == judge_dir and n > 0 for path, n, _ in asked)
  assert all(isinstance(r, str) for _, _, replies in asked for r in replies)
  (row,) = _metrics(str(tmp_path / "run"))
  assert row["reward/consistent"] == 0.0  # random replies name no letter: never consistent
  assert row["reward/total"] == 0.0       # ... and the faithful reward multiplies by that


def test_process_0_judge_hands_out_its_verdicts_whole():
  """Every process gets process 0's verdicts (an http judge asked once, rewards that agree):
  the verdicts survive the byte broadcast field for field."""
  from evals.judge import JudgeRequest, RuleJudge
  requests = [JudgeRequest("Which?", ["red", "blue"], ["A", "B"], "so the answer is B"),
              JudgeRequest("Which?", ["red", "blue"], ["A", "B"], None)]
  want = RuleJudge().judge(requests)
  assert train._Process0Judge(RuleJudge()).judge(requests) == want
  assert want[0].letter == "B"


def test_missing_training_data_stops_the_run_before_the_model_loads(tmp_path, monkeypatch):
  from rl import data

  def no_model(*args, **kwargs):
    raise AssertionError("the model loaded before the data was found")

  monkeypatch.setattr(data, "load_policy", no_model)
  config = apply_overrides(load_config(SMOKE), ["data=sat2", f"data_dir={tmp_path / 'none'}"])
  with pytest.raises(FileNotFoundError, match="sat2"):
    train.train(config, out=str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")  # no empty OUT/checkpoints left behind
  (tmp_path / "kept").mkdir()
  with pytest.raises(FileNotFoundError, match="sat2"):
    train.train(config, out=str(tmp_path / "kept"))
  assert os.listdir(tmp_path / "kept") == []  # a folder the user made stays


def test_evaluation_runs_after_the_checkpoint_and_its_data_is_found_first(tmp_path,
                                                                         monkeypatch):
  """An evaluation that fails (or is killed) loses no training: the step's checkpoint is made
  before it; and an evaluation benchmark with no data stops the run before its first step."""
  empty = tmp_path / "data"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="cv_bench"):
    train.main(["--config", SMOKE, "--out", str(tmp_path / "a"), "eval_every=1",
                "eval_benchmarks=cv_bench", f"data_dir={empty}"])
  assert not os.path.exists(tmp_path / "a")
  from rl import periodic_eval

  def broken(trainer, step):
    raise RuntimeError("evaluation failed")

  monkeypatch.setattr(periodic_eval, "run_eval", broken)
  with pytest.raises(RuntimeError, match="evaluation failed"):
    train.main(["--config", SMOKE, "--out", str(tmp_path / "b"), "steps=2",
                "checkpoint_every=1", "eval_every=1"])
  assert os.listdir(tmp_path / "b" / "checkpoints") == ["1"]
