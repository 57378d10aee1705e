"""The supervised warm-up lowers the target NLL and writes a checkpoint GRPO starts from."""

import os

import numpy as np

from rl import sft, train
from rl.config import apply_overrides, load_config
from rl.examples import Example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")


def test_target_text_uses_the_true_statement():
  e = Example(id="1", source="t", question="Q?", answer="B", options=("left", "right"))
  assert sft.target_text(e) == "<think>The answer is right.</think><answer>B</answer>"


def test_sft_then_grpo(tmp_path):
  config = apply_overrides(load_config(SMOKE), ["steps=6", "lr=3e-3", "warmup_steps=1"])
  losses = sft.sft(config, str(tmp_path / "sft"))
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5
  grpo = apply_overrides(config, [f"model={tmp_path / 'sft' / 'hf'}", "steps=1",
                                  "dtype=float32"])
  trainer = train.train(grpo, out=str(tmp_path / "grpo"))
  assert trainer.step == 1
