"""Configs load, overrides coerce types, the sweep covers the study's grid."""

import os
import sys

import numpy as np
import pytest

from rl.config import apply_overrides, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_study_defaults_and_overrides():
  cfg = load_config(os.path.join(ROOT, "configs", "grpo_study.py"),
                    ["faithful=true", "lr=2e-6", "model=none", "steps=10"])
  assert (cfg.group_size, cfg.kl_coef, cfg.clip_low, cfg.max_new_tokens) == (8, 1e-2, 0.2, 1024)
  # rollout batch 128 prompts, global batch 64 (PAPER.md section 7): two updates per step, on
  # float32 masters under bfloat16 compute
  assert (cfg.prompts_per_step, cfg.prompts_per_update, cfg.updates_per_step) == (128, 64, 2)
  assert (cfg.dtype, cfg.param_dtype) == ("bfloat16", "float32")
  study = load_config(os.path.join(ROOT, "configs", "grpo_study.py"))
  assert (study.format_weight, study.accuracy_weight, study.lr, study.clip_high) == (
      0.1, 1.0, 1e-6, 0.2)
  assert (study.temperature, study.checkpoint_every, study.keep_every) == (1.0, 250, 250)
  assert apply_overrides(cfg, ["prompts_per_update=none"]).updates_per_step == 1
  assert cfg.faithful is True and cfg.lr == 2e-6 and cfg.model is None and cfg.steps == 10
  with pytest.raises(ValueError, match="bad override 'no_such_key=1': unknown key"):
    apply_overrides(cfg, ["no_such_key=1"])
  with pytest.raises(ValueError, match="unknown key 'group_sise' .did you mean 'group_size'"):
    apply_overrides(cfg, ["group_sise=4"])
  with pytest.raises(ValueError, match="'steps': not key=value"):
    apply_overrides(cfg, ["steps"])
  with pytest.raises(ValueError, match="true/false"):
    apply_overrides(cfg, ["faithful=maybe"])
  with pytest.raises(FileNotFoundError):
    load_config("configs/nope.py")
  for bad in ("logprob_sweep=tiles", "loss_agg=sum", "sft_answers=wrong"):
    with pytest.raises(ValueError, match=bad.split("=")[0]):
      apply_overrides(cfg, [bad])


def test_sweep_grid():
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  try:
    import sweep
  finally:
    sys.path.pop(0)
  runs = dict(sweep.runs())
  assert len(runs) == 3 * 2 * 3
  base = load_config(os.path.join(ROOT, "configs", "grpo_study.py"))
  for overrides in runs.values():
    apply_overrides(base, overrides)  # every run's overrides are valid
  # the printed commands parse with rl.train's CLI, into one folder per run; --mesh and
  # key=value given to the sweep reach every run, and the grid's own keys are its to set
  import shlex
  from rl.config import parse_cli
  lines = sweep.commands(["model=/ckpt/a b", "data_dir=/data"])
  outs = set()
  for line in lines:
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "rl.train"]
    cfg, mesh, out = parse_cli("rl.train", "", "runs/train", argv[3:])
    assert mesh is None and cfg.model == "/ckpt/a b" and cfg.data_dir == "/data"
    outs.add(out)
  assert len(outs) == len(lines) == 18
  assert "--mesh data=2,fsdp=8 " in sweep.commands(["--mesh", "data=2,fsdp=8"])[0]
  assert " --distributed " in sweep.commands(["--distributed"])[0]
  # a shared output root and the faithful runs' judge (the study's is an LLM)
  lines = sweep.commands(["--out-root", "/shared/runs/", "--judge", "http://j:8000/v1#Qwen3"])
  configs = [parse_cli("rl.train", "", "runs/train", shlex.split(line)[3:]) for line in lines]
  assert all(out.startswith("/shared/runs/") for _, _, out in configs)
  assert {c.judge for c, _, _ in configs if c.faithful} == {"http://j:8000/v1#Qwen3"}
  with pytest.raises(SystemExit):
    sweep.commands(["seed=3"])


def test_tpu_run_script_passes_each_argument_intact(tmp_path):
  """tpu_scripts/run.sh against a stub gcloud that runs --command as a worker would (sh -c)."""
  import shutil
  import subprocess
  if not all(shutil.which(x) for x in ("bash", "sh", "base64")):
    pytest.skip("needs bash, sh and base64")
  scripts = os.path.join(ROOT, "tpu_scripts")
  for name in ("create.sh", "install.sh", "run.sh"):
    subprocess.run(["bash", "-n", os.path.join(scripts, name)], check=True)
  home, bin_dir = tmp_path / "home", tmp_path / "bin"
  (home / "vlm_jax" / ".venv" / "bin").mkdir(parents=True)
  (home / "vlm_jax" / ".venv" / "bin" / "activate").write_text("")
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text('#!/bin/sh\nfor a; do cmd=$a; done\ncd "$HOME" && sh -c "$cmd"\n')
  (bin_dir / "gcloud").chmod(0o755)
  env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  args = ["a b", "it's", "$HOME", "x;y", "*", "~/ckpt"]
  run = subprocess.run(["bash", os.path.join(scripts, "run.sh"), "tpu", "zone", "printf",
                        "<%s>", *args], env=env, capture_output=True, text=True, check=True)
  want = "".join(f"<{a}>" for a in args[:-1]) + f"<{home}/ckpt>"
  assert run.stdout == want
  (log,) = (home / "vlm_jax" / "logs").iterdir()
  assert log.read_text() == want
  failed = subprocess.run(["bash", os.path.join(scripts, "run.sh"), "tpu", "zone", "sh", "-c",
                           "exit 3"], env=env, capture_output=True, text=True)
  assert failed.returncode == 3


def test_smoke_mode_keeps_the_runs_settings_at_the_smoke_runs_scale():
  from rl.config import SMOKE_FIELDS
  study = load_config(os.path.join(ROOT, "configs", "grpo_study.py"))
  small = load_config(os.path.join(ROOT, "configs", "smoke.py"))
  cfg = load_config(os.path.join(ROOT, "configs", "grpo_study.py:smoke"), ["faithful=true"])
  for field in type(cfg).__dataclass_fields__:
    want = getattr(small if field in SMOKE_FIELDS else study, field)
    if field == "prompts_per_update":  # the run's mini-batches per step, at the smoke batch
      want = small.prompts_per_step // study.minibatches
    assert getattr(cfg, field) == (True if field == "faithful" else want), field
  assert cfg.minibatches == study.minibatches == 2
  assert cfg.model is None and cfg.data == "synthetic" and cfg.lr == study.lr
  with pytest.raises(ValueError, match="unknown mode 'big'"):
    load_config(os.path.join(ROOT, "configs", "grpo_study.py:big"))
  with pytest.raises(ValueError, match="takes no mode"):
    load_config(os.path.join(ROOT, "configs", "smoke.py:smoke"))


@pytest.mark.parametrize("override,message", [
    ("steps=abc", "steps='abc': expected int"), ("lr=fast", "lr='fast': expected float"),
    ("dtype=bogus", "dtype='bogus'"), ("group_size=0", "group_size=0: must be at least 1"),
    ("prompts_per_step=0", "prompts_per_step=0"), ("data=synthetic,bogus", "unknown .'bogus'."),
    ("eval_benchmarks=bogus", "eval_benchmarks='bogus'"), ("eval_variants=base,nope", "nope"),
    ("preset=bogus", "preset='bogus'"), ("judge=/no/such/dir", "judge='/no/such/dir'"),
    ("lr=-1", "lr=-1.0: must be >= 0"), ("augment_prob=0.5", "augment_prob=0.5"),
    ("seed=-1", "seed=-1: must be >= 0"), ("clip_low=1", "clip_low=1.0: must be < 1"),
    ("param_dtype=float16", "param_dtype='float16'"),
    ("prompts_per_update=3", "prompts_per_update=3: must divide prompts_per_step=4"),
    ("prompts_per_update=8", "prompts_per_update=8: must divide"),
    ("prompts_per_update=0", "prompts_per_update=0: must divide"),
    ("temperature=0", "temperature=0: greedy rollouts .*group_size=4.* nothing is learned"),
])
def test_bad_values_name_the_field_when_the_config_is_built(override, message):
  base = load_config(os.path.join(ROOT, "configs", "smoke.py"))
  with pytest.raises(ValueError, match=message):
    apply_overrides(base, [override])


def test_training_sources_are_listed_among_the_known_data(monkeypatch, tmp_path):
  base = load_config(os.path.join(ROOT, "configs", "smoke.py"))
  with pytest.raises(ValueError, match="sat2, pixmo_count, geometry3k, .*synthetic"):
    apply_overrides(base, ["data=bogus"])
  assert apply_overrides(base, ["data=sat2,synthetic"]).data == "sat2,synthetic"
  monkeypatch.chdir(tmp_path)  # the repository's configs/ from another working directory
  assert load_config("configs/smoke.py") == base


def test_presets_are_spelled_one_way_and_sources_match_the_loaders():
  from rl import datasets
  from rl.config import TRAINING_SOURCES
  base = load_config(os.path.join(ROOT, "configs", "smoke.py"))
  assert apply_overrides(base, ["preset=R1"]).preset == "r1"
  assert apply_overrides(base, ["eval_variants=all"]).eval_variants == "all"
  assert sorted(TRAINING_SOURCES) == sorted(datasets.SOURCES)
  smoke = load_config(os.path.join(ROOT, "configs", "grpo_study.py:smoke"))
  assert smoke.eval_max_new_tokens == base.eval_max_new_tokens == 16


@pytest.mark.parametrize("warmup, first_lr", [(0, 0.5), (2, 0.0)])
def test_warmup_steps_0_trains_from_the_first_update(warmup, first_lr):
  import jax.numpy as jnp
  from rl.optimizer import make_optimizer
  config = apply_overrides(load_config(os.path.join(ROOT, "configs", "smoke.py")), [
      f"warmup_steps={warmup}", "lr=0.5", "weight_decay=0", "grad_clip=100"])
  params = {"text": {"w": jnp.zeros(3)}}
  opt = make_optimizer(config, params)
  updates, _ = opt.update({"text": {"w": jnp.ones(3)}}, opt.init(params), params)
  # Adam's first step moves each weight by lr (the normalised gradient is 1)
  assert float(jnp.abs(updates["text"]["w"]).max()) == pytest.approx(first_lr, rel=1e-3)


def test_weight_decay_leaves_biases_and_norm_scales_alone():
  import jax
  import jax.numpy as jnp
  from rl.optimizer import make_optimizer
  config = apply_overrides(load_config(os.path.join(ROOT, "configs", "smoke.py")), [
      "warmup_steps=0", "lr=0.1", "weight_decay=0.5", "grad_clip=100"])
  one = jnp.ones((2, 3))  # stacked layers: biases and scales are 2-D too
  params = {"text": {"layers": {"q": {"kernel": one, "bias": one}, "norm": {"scale": one}},
                     "embed": {"embedding": one}}}
  opt = make_optimizer(config, params)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(zero, opt.init(params), params)  # no gradient: decay alone moves
  moved = {"/".join(str(getattr(k, "key", k)) for k in path): float(jnp.abs(u).max())
           for path, u in jax.tree_util.tree_leaves_with_path(updates)}
  assert moved == {"text/layers/q/kernel": pytest.approx(0.05), "text/layers/q/bias": 0.0,
                   "text/layers/norm/scale": 0.0, "text/embed/embedding": pytest.approx(0.05)}


def test_warmup_counts_every_update_of_a_step():
  """warmup_steps are training steps: with 2 mini-batches x 2 epochs, 4 updates each."""
  import jax.numpy as jnp
  from rl.optimizer import make_optimizer
  config = apply_overrides(load_config(os.path.join(ROOT, "configs", "smoke.py")), [
      "warmup_steps=1", "lr=0.5", "weight_decay=0", "grad_clip=100", "prompts_per_update=2",
      "updates_per_batch=2"])
  assert config.updates_per_step == 4
  params = {"text": {"w": jnp.zeros(3)}}
  opt = make_optimizer(config, params)
  state, grad, lrs = opt.init(params), {"text": {"w": jnp.ones(3)}}, []
  for _ in range(5):  # (a constant gradient: each Adam step moves a weight by the lr)
    updates, state = opt.update(grad, state, params)
    lrs.append(float(jnp.abs(updates["text"]["w"]).max()))
  np.testing.assert_allclose(lrs, [0.0, 0.125, 0.25, 0.375, 0.5], rtol=1e-3, atol=1e-7)


def test_train_and_sft_take_the_multi_host_flags(monkeypatch):
  """--distributed (and --coordinator, --num-processes, --process-id off TPU) initialise
  jax.distributed before the mesh is built, as `evals.run` does: orbax checkpoints of a
  multi-host run need it. A bad config stops before any collective."""
  import jax
  from rl.config import parse_cli
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a: calls.append(a))
  config, mesh, out = parse_cli("python -m rl.train", "", "runs/train", [
      "--config", "configs/smoke.py", "--distributed", "--coordinator", "h:1234",
      "--num-processes", "2", "--process-id", "1", "--out", "o", "steps=3"])
  assert calls == [("h:1234", 2, 1)] and config.steps == 3 and mesh is None and out == "o"
  parse_cli("python -m rl.sft", "", "runs/sft", ["--config", "configs/smoke.py"])
  assert len(calls) == 1  # without --distributed: no initialise
  with pytest.raises(ValueError):
    parse_cli("python -m rl.train", "", "runs/train",
              ["--config", "configs/smoke.py", "--distributed", "steps=-1"])
  assert len(calls) == 1
  with pytest.raises(SystemExit):  # a bucket URL is no folder every host writes to
    parse_cli("python -m rl.train", "", "runs/train",
              ["--config", "configs/smoke.py", "--out", "gs://bucket/run"])
