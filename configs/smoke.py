"""CPU smoke run: the tiny random model on the synthetic task, a few steps in about a minute.

  python -m rl.train --config configs/smoke.py --mesh 2x4 --out runs/smoke
(on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=8 for the 2x4 mesh)
"""

from rl.config import TrainConfig


def get_config() -> TrainConfig:
  return TrainConfig(model=None, dtype="float32", data="synthetic", synthetic_n=32,
                     prompts_per_step=4, group_size=4, micro_batch=8, max_new_tokens=12,
                     lr=1e-4, warmup_steps=2, steps=4, checkpoint_every=2, kl_coef=1e-2,
                     eval_items=4, eval_max_new_tokens=16)  # (with eval_every=N)
