"""Per-device memory of the parameters and AdamW moments of the real presets on a mesh, from
the shards `sharding.param_shardings` gives (no arrays are made; any machine runs it).

  python bench/param_memory.py [--presets 3b,7b,32b,72b] [--meshes "4x4;fsdp=16;data=2,fsdp=8"]

Columns: bfloat16 parameters per device (what `load_hf(mesh=)` checks against a device's free
memory); float32 AdamW moments (mu + nu, 8 bytes a parameter) sharded like their parameters
(`rl.optimizer.init_state`), and the same moments replicated on every device, as a plain
`jax.jit(opt.init)` left them before session 19.
"""

from __future__ import annotations

import argparse


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--presets", default="3b,7b,32b,72b")
  parser.add_argument("--meshes", default="4x4;2x8;8x2;fsdp=16;data=2,fsdp=8",
                      help="';'-separated mesh specs")
  args = parser.parse_args(argv)
  from vlm_jax import config as config_lib, device_memory, sharding
  gib = lambda n: f"{n / 2**30:.2f}"
  print("| preset | mesh | bf16 params GiB/device | AdamW f32 moments sharded | replicated |")
  print("|---|---|---|---|---|")
  for name in args.presets.split(","):
    config = config_lib.get_config(name)
    whole = device_memory.param_bytes_per_device(config, {"data": 1}, 1)  # parameter count
    for spec in args.meshes.split(";"):
      sizes = sharding.parse_mesh_spec(spec)
      if not sharding.splits_every_param(config, sizes):
        print(f"| {name} | {spec} | refused (the tensor axis does not divide it) | | |")
        continue
      params = device_memory.param_bytes_per_device(config, sizes, 2)
      moments = device_memory.param_bytes_per_device(config, sizes, 8)
      print(f"| {name} | {spec} | {gib(params)} | {gib(moments)} | {gib(8 * whole)} |")


if __name__ == "__main__":
  main()
