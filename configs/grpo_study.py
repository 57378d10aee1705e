"""The study's GRPO run (PAPER.md section 7) from Qwen2.5-VL-7B-Instruct, data configuration (i).

  python -m rl.train --config configs/grpo_study.py --mesh data=2,fsdp=8 --out runs/sat_pixmo \\
      model=/ckpt/Qwen2.5-VL-7B-Instruct data_dir=/data
Rollout batch 128 prompts, global batch 64: two AdamW updates per step, each on 64 prompts' groups
(the second's importance ratio against the rollout policy, recomputed by the training forward);
bfloat16 compute over float32 master weights and AdamW state.
Variants are key=value overrides (see configs/sweep.py for the whole grid). On a CPU, the same
settings at smoke scale (a tiny random model, synthetic data, a few steps):
  python -m rl.train --config configs/grpo_study.py:smoke --out runs/study_smoke
"""

from rl.config import TrainConfig, smoke


def get_config(mode: str = "") -> TrainConfig:
  if mode not in ("", "smoke"):
    raise ValueError(f"configs/grpo_study.py: unknown mode {mode!r} (want 'smoke' or none)")
  config = TrainConfig(
      model=None, dtype="bfloat16", param_dtype="float32", data="sat2,pixmo_count",
      data_limits="sat2:32000,pixmo_count:15000",  # the study's 32K + 15K
      prompts_per_step=128, prompts_per_update=64, group_size=8, micro_batch=16,
      max_new_tokens=1024, temperature=1.0, lr=1e-6, warmup_steps=10, grad_clip=1.0,
      clip_low=0.2, clip_high=0.2, kl_coef=1e-2, format_weight=0.1, accuracy_weight=1.0,
      steps=1000, checkpoint_every=250, keep_every=250, freeze_vision=False)
  return smoke(config) if mode == "smoke" else config
