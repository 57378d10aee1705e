"""Convert checkpoints between Hugging Face (safetensors) and orbax.

Examples:
  # HF -> orbax (e.g. to start GRPO from a released checkpoint, stored as bfloat16)
  python -m vlm_jax.convert hf-to-orbax --src ~/Qwen2.5-VL-7B-Instruct --dst ckpt/qwen7b --dtype bfloat16
  # orbax -> HF (e.g. to evaluate a trained policy with other tools); tokenizer files copied along
  python -m vlm_jax.convert orbax-to-hf --src ckpt/qwen7b --dst hf_out --copy-files-from ~/Qwen2.5-VL-7B-Instruct
  # a GRPO run's checkpoint (the latest, or --step N) -> HF, with tokenizer and preprocessor
  python -m vlm_jax.convert train-to-hf --src runs/sat_pixmo --step 500 --dst hf_step500

The whole model passes through host memory, on the CPU, whatever accelerators the machine has
(a 72B model fits no single one), and an orbax checkpoint saved from any mesh converts on one
device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

from vlm_jax import checkpoint, hf
from vlm_jax import sharding


def _shard_size(value: str) -> str:
  """argparse type: refuse a bad size before any checkpoint is read (hf.parse_size's words)."""
  try:
    hf.parse_size(value)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None
  return value


# float dtypes only: numpy casts to any dtype without a word (int8 truncates every weight), and
# float64 is float32 in a process without jax_enable_x64
DTYPES = ("float32", "bfloat16", "float16")


def _parse(argv):
  parser = argparse.ArgumentParser(
      prog="python -m vlm_jax.convert", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("direction", choices=["hf-to-orbax", "orbax-to-hf", "train-to-hf"])
  parser.add_argument("--step", type=int, default=None,
                      help="train-to-hf: checkpoint step (default: the latest)")
  parser.add_argument("--src", required=True, help="source checkpoint directory")
  parser.add_argument("--dst", required=True, help="destination directory")
  parser.add_argument("--dtype", default=None, choices=DTYPES,
                      help="cast parameters (float32, bfloat16, float16); default: keep "
                           "(train-to-hf: the run's compute dtype)")
  parser.add_argument("--copy-files-from", default=None,
                      help="orbax-to-hf, train-to-hf: copy tokenizer/preprocessor/generation "
                           "files from this directory (train-to-hf default: the run's starting "
                           "checkpoint if its model_config.json records one, else the Qwen "
                           "tokenizer and the default image preprocessor settings)")
  parser.add_argument("--max-shard-size", type=_shard_size, default=None,
                      help="orbax-to-hf, train-to-hf: shard size, e.g. 5GB (default) or 500MB")
  args = parser.parse_args(argv)
  # `--src=~/x` and a quoted "~/x" reach us unexpanded (the shell expands only a word's leading
  # ~): without this, --dst=~/out writes a folder named "~" in the working directory
  for name in ("src", "dst", "copy_files_from"):
    if getattr(args, name) is not None:
      setattr(args, name, os.path.expanduser(getattr(args, name)))
  # Flags a mode does not use are refused, not ignored: a silently dropped --step exports some
  # other checkpoint than the one asked for.
  unused = {"hf-to-orbax": ("step", "copy_files_from", "max_shard_size"),
            "orbax-to-hf": ("step",), "train-to-hf": ()}[args.direction]
  for name in unused:
    if getattr(args, name) is not None:
      parser.error(f"--{name.replace('_', '-')} does not apply to {args.direction}")
  if args.copy_files_from is not None:
    try:
      hf.check_extra_files(args.copy_files_from)
    except FileNotFoundError as e:
      parser.error(f"--copy-files-from: {e}")
  problem = _dst_problem(args.direction, args.src, args.dst) or _unwritable(args.dst)
  if problem:
    parser.error(f"--dst {args.dst}: {problem}")
  return args


def _unwritable(dst: str) -> str | None:
  """Why `dst` cannot be written (checked before minutes of reading the source), or None."""
  if os.path.exists(dst) and not os.path.isdir(dst):
    return "is a file, not a folder"
  existing = os.path.abspath(dst)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    return f"{existing} is a file, not a folder"
  if not os.access(existing, os.W_OK | os.X_OK):
    return f"{existing} is not writable"
  return None


def _dst_problem(direction: str, src: str, dst: str) -> str | None:
  """Why writing to `dst` would damage a checkpoint there, or None. Each direction writes a
  config.json, which describes the weights beside it: hf-to-orbax's over an HF checkpoint's, or
  an export's over an orbax checkpoint's, leaves weights whose config is another model's (or the
  same model's, minus the fields we do not keep). An earlier output of the same direction is
  replaced whole, as documented."""
  if not os.path.isdir(dst):
    return None
  if os.path.isdir(src) and os.path.samefile(src, dst):
    return "is the --src folder; write the conversion to another folder"
  if direction == "hf-to-orbax":
    weights = [n for n in os.listdir(dst) if n.endswith(".safetensors")
               or n == "model.safetensors.index.json"]
    if weights:
      return (f"holds an HF checkpoint ({sorted(weights)[0]}), whose config.json this would "
              f"replace; pick another folder")
  elif any(n == "params" or n.startswith("params-")  # save_params' params/ or params-<tag>/
           for n in os.listdir(dst) if os.path.isdir(os.path.join(dst, n))):
    return ("holds an orbax params checkpoint (params/), whose config.json this would replace; "
            "pick another folder")
  return None


def _run_compute_dtype(run_dir: str) -> str | None:
  """The dtype a training run computed in (its train_config.json `dtype`): its checkpoints
  hold float32 master weights, twice the size of the bfloat16 model the run trained and
  sampled; None (keep the stored dtype) for runs without that record."""
  path = os.path.join(run_dir, "train_config.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    try:
      dtype = json.load(f).get("dtype")
    except (json.JSONDecodeError, AttributeError) as e:
      raise ValueError(f"{path}: not a JSON object of TrainConfig fields ({e}); pass --dtype "
                       f"to export without it") from e
  if dtype:
    print(f"train-to-hf: exporting in {dtype}, the run's compute dtype (--dtype to choose)")
  return dtype


def main(argv: list[str] | None = None) -> int:
  args = _parse(argv)
  # the host CPU for every array made on the way (load_hf's, casts); restores name it themselves
  with jax.default_device(sharding.host_device()):
    return _convert(args)


def _convert(args) -> int:
  if args.direction == "hf-to-orbax":
    config, params = hf.load_hf(args.src, dtype=args.dtype)
    checkpoint.save_params(args.dst, params, config)
    print(f"wrote {args.dst}")
    return 0
  extra = args.copy_files_from
  if args.direction == "train-to-hf":
    # the starting checkpoint's files are checked before the weights are read (minutes for a
    # large model), not after
    source = checkpoint.training_source(args.src) if extra is None else None
    if source is not None:
      if not os.path.isdir(source):
        raise FileNotFoundError(f"{args.src} started from {source}, which is not on this "
                                f"machine: pass --copy-files-from with its tokenizer/preprocessor "
                                f"files")
      hf.check_extra_files(source)
    extra = extra or source
    dtype = args.dtype or _run_compute_dtype(args.src)
    config, params = checkpoint.load_training_params(args.src, args.step, dtype=dtype)
  else:
    config, params = checkpoint.load_params(args.src, dtype=args.dtype)
  hf.save_hf(params, config, args.dst, extra_files_from=extra,
             max_shard_size=args.max_shard_size or "5GB")
  if args.direction == "train-to-hf" and extra is None:
    # A run from a random preset trained with the Qwen tokenizer and default image settings
    # (rl.data.load_policy): write those, so evals.run and transformers can load the export.
    hf.write_default_processor_files(args.dst)
    print(f"{args.src} records no starting checkpoint: wrote the Qwen tokenizer and default "
          "preprocessor settings (pass --copy-files-from MODEL_DIR if it started from one)",
          file=sys.stderr)
  print(f"wrote {args.dst}")
  return 0


if __name__ == "__main__":
  from vlm_jax import cli
  sys.exit(cli.run(main, "python -m vlm_jax.convert"))
