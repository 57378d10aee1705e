"""`python -m vlm_jax.convert`: a training run exported to a complete HF dir (weights, tokenizer,
preprocessor) that the processor loads; flags a mode does not use, and bad values, refused."""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

import vlm_jax
from vlm_jax import checkpoint, config_json, convert, hf, sharding
from vlm_jax import processor as proc_lib
from tests.multiprocess import ROOT


def small_config():
  """The tiny preset with a 1000-token vocabulary (special tokens moved inside it): the same
  layer structure, a fraction of the bytes to write and restore."""
  base = vlm_jax.get_config("tiny")
  return dataclasses.replace(base, text=dataclasses.replace(base.text, vocab_size=1000),
                             image_token_id=990, video_token_id=991, vision_start_token_id=992,
                             vision_end_token_id=993, bos_token_id=1, eos_token_id=2)


def make_run_dir(path, config, steps, source=None):
  """An `rl.train` output folder as train() leaves it (model_config.json, checkpoints/N written
  by the real `rl.checkpoints.Manager`), without training: step N's params are N * a random
  init. `source`, if given, is recorded as the run's starting checkpoint."""
  import optax
  from rl import checkpoints
  os.makedirs(path, exist_ok=True)
  hf_config = config_json.to_hf(config, dtype="float32")
  if source:
    hf_config["_name_or_path"] = source
  with open(os.path.join(path, "model_config.json"), "w") as f:
    json.dump(hf_config, f)
  base = vlm_jax.init_params(config, jax.random.key(0))
  manager = checkpoints.Manager(os.path.join(path, "checkpoints"))
  for step in steps:
    params = jax.tree.map(lambda x: step * x, base)
    manager.save(types.SimpleNamespace(
        params=params, opt_state=optax.adam(1e-3).init(params), step=step,
        data=types.SimpleNamespace(get_state=lambda step=step: {"step": step})))
  manager.close()
  return base


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("run"))
  return path, make_run_dir(path, small_config(), steps=(1, 2))


def test_train_to_hf_writes_a_dir_the_processor_loads(run_dir, tmp_path, caplog, capsys):
  run, base = run_dir
  out = str(tmp_path / "hf")
  with caplog.at_level(logging.WARNING):
    assert convert.main(["train-to-hf", "--src", run, "--dst", out, "--step", "1"]) == 0
  # orbax's look for step metadata inside the item dir is not reported (see checkpoint.py)
  assert "_CHECKPOINT_METADATA" not in caplog.text
  assert "records no starting checkpoint" in capsys.readouterr().err
  processor = proc_lib.Processor.from_dir(out)  # what evals.run --model OUT loads
  assert processor.image_config == proc_lib.ImageProcessorConfig()
  assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
  assert os.path.isfile(os.path.join(out, "chat_template.jinja"))
  _, params = vlm_jax.load_hf(out)
  jax.tree.map(np.testing.assert_array_equal, params, base)  # step 1: 1 * base
  # as a released folder: generate's stop ids, and the tokenizer's own template takes images
  with open(os.path.join(out, "generation_config.json")) as f:
    assert json.load(f)["eos_token_id"] == [151645, 151643]
  with open(os.path.join(out, "tokenizer_config.json")) as f:
    template = json.load(f)["chat_template"]
  assert template == Path(proc_lib.CHAT_TEMPLATE_PATH).read_text() and "image" in template


def test_train_to_hf_takes_files_from_the_recorded_source_or_the_flag(tmp_path,
                                                                      monkeypatch):
  source, other = tmp_path / "source", tmp_path / "other"
  for d, max_pixels in ((source, 50176), (other, 100352)):
    d.mkdir()
    (d / "preprocessor_config.json").write_text(json.dumps(
        proc_lib.ImageProcessorConfig(max_pixels=max_pixels).to_dict()))
  run = str(tmp_path / "run")
  make_run_dir(run, small_config(), steps=(1,), source=str(source))
  assert convert.main(["train-to-hf", "--src", run, "--dst", str(tmp_path / "a")]) == 0
  assert proc_lib.ImageProcessorConfig.from_dir(tmp_path / "a").max_pixels == 50176
  assert not (tmp_path / "a" / "tokenizer.json").exists()  # the source's files, no others
  assert convert.main(["train-to-hf", "--src", run, "--dst", str(tmp_path / "b"),
                       "--copy-files-from", str(other)]) == 0
  assert proc_lib.ImageProcessorConfig.from_dir(tmp_path / "b").max_pixels == 100352
  # a re-export replaces the earlier one's side files whole: a stale processor_config.json
  # (read before preprocessor_config.json) or generation_config.json does not survive it
  (tmp_path / "a" / "processor_config.json").write_text(json.dumps(
      {"image_processor": proc_lib.ImageProcessorConfig(max_pixels=12544).to_dict()}))
  (tmp_path / "a" / "generation_config.json").write_text("{}")
  assert convert.main(["train-to-hf", "--src", run, "--dst", str(tmp_path / "a"),
                       "--copy-files-from", str(other)]) == 0
  assert sorted(os.listdir(tmp_path / "a")) == ["config.json", "model.safetensors",
                                                "preprocessor_config.json"]
  assert proc_lib.ImageProcessorConfig.from_dir(tmp_path / "a").max_pixels == 100352
  # a recorded source missing on this machine, or without the files, is named, not replaced by
  # the defaults, before any weights are read (was: after restoring the whole checkpoint)
  monkeypatch.setattr(checkpoint, "load_training_params",
                      lambda *a, **k: pytest.fail("weights read before the source was checked"))
  (source / "preprocessor_config.json").unlink()
  with pytest.raises(FileNotFoundError, match="has none of the tokenizer/preprocessor files"):
    convert.main(["train-to-hf", "--src", run, "--dst", str(tmp_path / "c")])
  source.rename(tmp_path / "moved")
  with pytest.raises(FileNotFoundError, match=f"started from {source}, which is not on this"):
    convert.main(["train-to-hf", "--src", run, "--dst", str(tmp_path / "c")])
  assert not (tmp_path / "c").exists()


def test_train_to_hf_exports_in_the_runs_compute_dtype(tmp_path):
  # the run's checkpoints hold float32 masters; it trained and sampled in bfloat16
  run = str(tmp_path / "run")
  make_run_dir(run, small_config(), steps=(1,))
  with open(os.path.join(run, "train_config.json"), "w") as f:
    json.dump({"dtype": "bfloat16", "param_dtype": "float32"}, f)
  for flags, want in (([], "bfloat16"), (["--dtype", "float32"], "float32")):
    out = str(tmp_path / want)
    assert convert.main(["train-to-hf", "--src", run, "--dst", out] + flags) == 0
    _, params = vlm_jax.load_hf(out, dtype=None)  # as stored
    assert {str(x.dtype) for x in jax.tree.leaves(params)} == {want}


@pytest.mark.parametrize("argv, message", [
    (["hf-to-orbax", "--step", "3"], "--step does not apply to hf-to-orbax"),
    (["orbax-to-hf", "--step", "3"], "--step does not apply to orbax-to-hf"),
    (["hf-to-orbax", "--max-shard-size", "1GB"], "--max-shard-size does not apply"),
    (["orbax-to-hf", "--max-shard-size", "banana"],
     "--max-shard-size: expected e.g. 5GB or 500MB, got 'banana'"),
    (["orbax-to-hf", "--copy-files-from", "/nonexistent"], "/nonexistent: no such directory"),
    (["train-to-hf", "--copy-files-from", "/nonexistent"], "/nonexistent: no such directory"),
    (["train-to-hf", "--copy-files-from", "EMPTY"], "has none of the tokenizer"),
])
def test_cli_refuses_unused_flags_and_bad_values(argv, message, tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
  with pytest.raises(SystemExit) as exit_:  # before any checkpoint is read: --src is not there
    convert.main(argv + ["--src", str(tmp_path / "nope"), "--dst", str(tmp_path / "out")])
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err


def test_help_lists_copy_files_from_for_both_exports(capsys):
  with pytest.raises(SystemExit):
    convert.main(["--help"])
  assert "orbax-to-hf, train-to-hf: copy tokenizer" in " ".join(capsys.readouterr().out.split())


def test_a_dst_that_cannot_be_written_is_named_before_the_source_is_read(tmp_path, capsys):
  (tmp_path / "file").write_text("x")
  argv = ["train-to-hf", "--src", str(tmp_path / "never_read")]
  for dst, message in ((tmp_path / "file", "is a file, not a folder"),
                       (tmp_path / "file" / "sub", "file is a file, not a folder")):
    with pytest.raises(SystemExit):
      convert.main(argv + ["--dst", str(dst)])
    assert message in capsys.readouterr().err
  if os.geteuid() != 0:  # root writes anywhere
    (tmp_path / "locked").mkdir(mode=0o555)
    with pytest.raises(SystemExit):
      convert.main(argv + ["--dst", str(tmp_path / "locked" / "out")])
    assert "locked is not writable" in capsys.readouterr().err


def test_a_killed_saves_leftovers_are_removed_by_the_next(tmp_path):
  """The staged files of a save killed before its commit, and the temporary file of the shard
  it was writing, go with the next save into that folder."""
  config = small_config()
  params = vlm_jax.init_params(config, jax.random.key(0))
  out = tmp_path / "hf"
  out.mkdir()
  for name in (".staged-model.safetensors", "..staged-model.safetensors.123.tmp",
               ".staged-config.json"):
    (out / name).write_bytes(b"partial")
  hf.save_hf(params, config, str(out))
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]


def test_save_hf_refuses_a_missing_extra_files_dir(tmp_path):
  config = small_config()
  params = vlm_jax.init_params(config, jax.random.key(0))
  with pytest.raises(FileNotFoundError, match="/nonexistent: no such directory"):
    hf.save_hf(params, config, str(tmp_path / "out"), extra_files_from="/nonexistent")
  assert not (tmp_path / "out").exists()  # refused before any weights were written


def test_host_device_is_a_cpu():
  assert sharding.host_device().platform == "cpu"
  assert sharding.host_device() in jax.local_devices(backend="cpu")


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 (fake) devices")
def test_every_conversion_runs_on_the_host_device(run_dir, tmp_path, monkeypatch):
  """All three directions hold the model on `sharding.host_device()` (the CPU: a 72B model
  fits no single accelerator), not on the default device. Here the host is played by fake CPU
  device 1, which nothing would use otherwise."""
  host = jax.devices()[1]
  monkeypatch.setattr(sharding, "host_device", lambda: host)
  seen = []

  def spy(real, params_at):
    def save(*args, **kwargs):
      seen.append({d for x in jax.tree.leaves(args[params_at]) for d in x.devices()})
      return real(*args, **kwargs)
    return save

  monkeypatch.setattr(checkpoint, "save_params", spy(checkpoint.save_params, 1))
  monkeypatch.setattr(hf, "save_hf", spy(hf.save_hf, 0))
  config = small_config()
  hf.save_hf(vlm_jax.init_params(config, jax.random.key(0)), config, str(tmp_path / "src"))
  seen.clear()
  run, _ = run_dir
  for argv in (["hf-to-orbax", "--src", str(tmp_path / "src"), "--dst", str(tmp_path / "ck")],
               ["orbax-to-hf", "--src", str(tmp_path / "ck"), "--dst", str(tmp_path / "hf")],
               ["train-to-hf", "--src", run, "--dst", str(tmp_path / "run_hf")]):
    assert convert.main(argv) == 0
  assert seen == [{host}] * 3


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_orbax_params_saved_from_a_mesh_convert_on_one_device(tmp_path):
  """Params sharded over 8 devices, saved with save_params: restored onto one CPU device, in
  this process and in a process that has only 1 device (orbax's "Topology mismatch" before),
  and exported there by orbax-to-hf."""
  config = small_config()
  mesh = sharding.parse_mesh("fsdp=2,tensor=4")
  params = sharding.shard_params(vlm_jax.init_params(config, jax.random.key(0)), config, mesh)
  ckpt = str(tmp_path / "ckpt")
  checkpoint.save_params(ckpt, params, config)
  loaded_config, loaded = checkpoint.load_params(ckpt)
  assert loaded_config == config
  host = jax.sharding.SingleDeviceSharding(sharding.host_device())
  assert all(x.sharding == host for x in jax.tree.leaves(loaded))
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)  # one CPU device
  out = str(tmp_path / "hf")
  done = subprocess.run([sys.executable, "-m", "vlm_jax.convert", "orbax-to-hf", "--src", ckpt,
                         "--dst", out], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  _, exported = vlm_jax.load_hf(out)
  jax.tree.map(np.testing.assert_array_equal, exported, params)


@pytest.mark.parametrize("dtype", ["int8", "bf16", "float64"])
def test_dtype_must_be_a_float_dtype_jax_keeps(dtype, tmp_path, capsys):
  # int8 was a checkpoint of truncated weights, float64 a float32 one, bf16 a TypeError traceback
  with pytest.raises(SystemExit) as exit_:
    convert.main(["hf-to-orbax", "--src", str(tmp_path), "--dst", str(tmp_path / "out"),
                  "--dtype", dtype])
  assert exit_.value.code == 2
  assert f"argument --dtype: invalid choice: '{dtype}'" in capsys.readouterr().err


def test_paths_expand_a_tilde_the_shell_left(tmp_path, monkeypatch):
  # `--src=~/x` and a quoted "~/x" reach argv as is; --dst=~/out made a folder named "~"
  config = small_config()
  checkpoint.save_params(str(tmp_path / "ckpt"), vlm_jax.init_params(config, jax.random.key(0)),
                         config)
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  assert convert.main(["orbax-to-hf", "--src=~/ckpt", "--dst", "~/out"]) == 0
  assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "~").exists()


def test_dst_holding_a_checkpoint_of_the_other_format_is_refused(tmp_path, capsys):
  """hf-to-orbax into an HF checkpoint replaced its config.json (the weights there then no
  longer loaded, or lost the fields we do not keep); an export into an orbax checkpoint did the
  same to that one; --dst == --src was either."""
  config = small_config()
  params = vlm_jax.init_params(config, jax.random.key(0))
  hf_dir, ckpt = str(tmp_path / "hf"), str(tmp_path / "ckpt")
  hf.save_hf(params, config, hf_dir)
  checkpoint.save_params(ckpt, params, config)
  configs = lambda: {p: Path(p, "config.json").read_text() for p in (hf_dir, ckpt)}
  before = configs()
  for argv, message in (
      (["hf-to-orbax", "--src", ckpt, "--dst", hf_dir], "holds an HF checkpoint"),
      (["hf-to-orbax", "--src", hf_dir, "--dst", hf_dir], "is the --src folder"),
      (["orbax-to-hf", "--src", hf_dir, "--dst", ckpt], "holds an orbax params checkpoint"),
      (["orbax-to-hf", "--src", ckpt, "--dst", ckpt + "/"], "is the --src folder")):
    with pytest.raises(SystemExit):
      convert.main(argv)
    assert message in capsys.readouterr().err
  assert configs() == before
  # an earlier output of the same direction is replaced, as before
  assert convert.main(["hf-to-orbax", "--src", hf_dir, "--dst", ckpt]) == 0
  assert convert.main(["orbax-to-hf", "--src", ckpt, "--dst", hf_dir]) == 0
  with pytest.raises(SystemExit):  # the replaced checkpoint (params-<tag>/) is still refused
    convert.main(["orbax-to-hf", "--src", hf_dir, "--dst", ckpt])
  assert "holds an orbax params checkpoint" in capsys.readouterr().err


def test_save_params_over_a_checkpoint_killed_midway_keeps_the_old_one(tmp_path, monkeypatch):
  """orbax's force=True deleted the earlier params/ before writing the new tree: a save killed
  in between lost the checkpoint. Now the new tree goes beside it and config.json commits."""
  import orbax.checkpoint as ocp
  a = small_config()
  b = dataclasses.replace(a, text=dataclasses.replace(a.text, num_layers=3))
  pa, pb = vlm_jax.init_params(a, jax.random.key(0)), vlm_jax.init_params(b, jax.random.key(1))
  ckpt = str(tmp_path / "ckpt")
  checkpoint.save_params(ckpt, pa, a)

  def killed(*args, **kwargs):
    raise KeyboardInterrupt
  with monkeypatch.context() as m:
    m.setattr(ocp.StandardCheckpointHandler, "async_save", killed)
    with pytest.raises(KeyboardInterrupt):
      checkpoint.save_params(ckpt, pb, b)
  config, params = checkpoint.load_params(ckpt)
  assert config == a
  jax.tree.map(np.testing.assert_array_equal, params, pa)
  # the next save replaces it (another model: its config.json and tree go together), and
  # leaves one tree behind
  checkpoint.save_params(ckpt, pb, b)
  config, params = checkpoint.load_params(ckpt)
  assert config == b
  jax.tree.map(np.testing.assert_array_equal, params, pb)
  assert len([n for n in os.listdir(ckpt) if n.startswith("params")]) == 1


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_orbax_params_saved_on_one_device_restore_onto_a_mesh(tmp_path):
  # load_params(shardings=...) failed: orbax's metadata object is no dict, the shardings are
  config = small_config()
  params = vlm_jax.init_params(config, jax.random.key(0))
  checkpoint.save_params(str(tmp_path / "ckpt"), params, config)
  mesh = sharding.parse_mesh("fsdp=2,tensor=4")
  shardings = sharding.param_shardings(config, mesh)
  _, loaded = checkpoint.load_params(str(tmp_path / "ckpt"), shardings=shardings)
  jax.tree.map(lambda x, s: x.sharding == s or pytest.fail(f"{x.sharding} != {s}"),
               loaded, shardings)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


# orbax leaves the reads of the other arrays unfinished when one fails: noise at collection
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_train_to_hf_names_a_damaged_checkpoint_and_the_others(tmp_path, capsys, monkeypatch):
  """A latest checkpoint copied in part was orbax's FileNotFoundError naming a _METADATA file, or
  a TensorStore exception (a traceback): now one line with the step and the steps to pick."""
  import glob
  from vlm_jax import cli
  monkeypatch.delenv("VLM_JAX_TRACEBACK", raising=False)
  run = str(tmp_path / "run")
  base = make_run_dir(run, small_config(), steps=(1, 2))
  state = os.path.join(run, "checkpoints", "2", "state")
  for path in glob.glob(os.path.join(state, "ocdbt.process_0", "d", "*")):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  argv = ["train-to-hf", "--src", run, "--dst", str(tmp_path / "out")]
  assert cli.run(lambda: convert.main(argv), "convert") == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert (f"ValueError: checkpoint {os.path.join(run, 'checkpoints', '2')} (step 2) could not "
          "be read: it is incomplete or corrupt") in line
  assert "other checkpoints are steps [1] (--step N to export one)" in line
  os.remove(os.path.join(state, "_METADATA"))
  with pytest.raises(ValueError, match=r"\(step 2\) could not be read"):
    convert.main(argv)
  assert convert.main(argv + ["--step", "1"]) == 0
  _, params = vlm_jax.load_hf(str(tmp_path / "out"))
  jax.tree.map(np.testing.assert_array_equal, params, base)


def test_train_to_hf_names_a_corrupt_run_file(tmp_path):
  run = str(tmp_path / "run")
  make_run_dir(run, small_config(), steps=(1,))
  argv = ["train-to-hf", "--src", run, "--dst", str(tmp_path / "out")]
  with open(os.path.join(run, "train_config.json"), "w") as f:
    f.write('{"dtype": ')  # torn
  with pytest.raises(ValueError, match="train_config.json: not a JSON object"):
    convert.main(argv)
  assert convert.main(argv + ["--dtype", "float32"]) == 0
  with open(os.path.join(run, "model_config.json"), "w") as f:
    f.write("{")
  with pytest.raises(ValueError, match="model_config.json: invalid JSON"):
    convert.main(argv)
