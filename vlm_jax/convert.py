"""Convert checkpoints between Hugging Face (safetensors) and orbax.

Examples:
  # HF -> orbax (e.g. to start GRPO from a released checkpoint, stored as bfloat16)
  python -m vlm_jax.convert hf-to-orbax --src ~/Qwen2.5-VL-7B-Instruct --dst ckpt/qwen7b --dtype bfloat16
  # orbax -> HF (e.g. to evaluate a trained policy with other tools); tokenizer files copied along
  python -m vlm_jax.convert orbax-to-hf --src ckpt/qwen7b --dst hf_out --copy-files-from ~/Qwen2.5-VL-7B-Instruct
  # a GRPO run's checkpoint (the latest, or --step N) -> HF
  python -m vlm_jax.convert train-to-hf --src runs/sat_pixmo --step 500 --dst hf_step500
"""

from __future__ import annotations

import argparse
import sys

from vlm_jax import checkpoint, hf


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m vlm_jax.convert", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("direction", choices=["hf-to-orbax", "orbax-to-hf", "train-to-hf"])
  parser.add_argument("--step", type=int, default=None, help="train-to-hf: checkpoint step")
  parser.add_argument("--src", required=True, help="source checkpoint directory")
  parser.add_argument("--dst", required=True, help="destination directory")
  parser.add_argument("--dtype", default=None,
                      help="cast parameters (float32, bfloat16, float16); default: keep")
  parser.add_argument("--copy-files-from", default=None,
                      help="orbax-to-hf: copy tokenizer/preprocessor/generation files from here")
  parser.add_argument("--max-shard-size", default="5GB", help="orbax-to-hf: shard size")
  args = parser.parse_args(argv)
  if args.direction == "hf-to-orbax":
    config, params = hf.load_hf(args.src, dtype=args.dtype)
    checkpoint.save_params(args.dst, params, config)
  else:
    if args.direction == "train-to-hf":
      config, params = checkpoint.load_training_params(args.src, args.step, dtype=args.dtype)
    else:
      config, params = checkpoint.load_params(args.src, dtype=args.dtype)
    hf.save_hf(params, config, args.dst, extra_files_from=args.copy_files_from,
               max_shard_size=args.max_shard_size)
  print(f"wrote {args.dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
