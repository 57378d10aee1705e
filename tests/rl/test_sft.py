"""The supervised warm-up lowers the target NLL and writes a checkpoint GRPO starts from."""

import os

import numpy as np
import pytest

from rl import sft, train
from rl.config import apply_overrides, load_config
from rl.examples import Example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")


def test_target_text_uses_the_true_statement():
  e = Example(id="1", source="t", question="Q?", answer="B", options=("left", "right"))
  assert sft.target_text(e) == "<think>The answer is right.</think><answer>B</answer>"


def test_random_targets_are_seeded_uniform_and_self_consistent():
  from evals.benchmarks.synthetic import synthetic_items
  examples = [Example.from_item(i) for i in synthetic_items(60)]
  texts = [sft.target_text(e, "random", seed=3) for e in examples]
  assert texts == [sft.target_text(e, "random", seed=3) for e in examples]
  assert texts != [sft.target_text(e, "random", seed=4) for e in examples]
  letters = [t.split("<answer>")[1][0] for t in texts]
  hits = sum(l == e.answer for l, e in zip(letters, examples))
  assert 5 < hits < 40  # about chance (~37%), not always the key
  for item, t, l in zip(synthetic_items(60), texts, letters):
    assert dict(item.meta)[f"statement_{l}"].rstrip(".") in t  # the think argues its letter
  with pytest.raises(ValueError, match="sft_answers"):
    sft.target_text(examples[0], "wrong")


def test_sft_then_grpo(tmp_path):
  # bfloat16 compute over float32 master weights; the export is the bfloat16 model it trained
  config = apply_overrides(load_config(SMOKE), ["steps=6", "lr=3e-3", "warmup_steps=1",
                                                "dtype=bfloat16"])
  losses = sft.sft(config, str(tmp_path / "sft"))
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.5
  import jax
  import vlm_jax
  _, saved = vlm_jax.load_hf(str(tmp_path / "sft" / "hf"), dtype=None)
  assert {str(x.dtype) for x in jax.tree.leaves(saved)} == {"bfloat16"}
  grpo = apply_overrides(config, [f"model={tmp_path / 'sft' / 'hf'}", "steps=1",
                                  "dtype=float32"])
  trainer = train.train(grpo, out=str(tmp_path / "grpo"))
  assert trainer.step == 1
  from vlm_jax import checkpoint  # the run records where it started: train-to-hf copies from it
  assert checkpoint.training_source(str(tmp_path / "grpo")) == str(tmp_path / "sft" / "hf")


def test_a_non_finite_gradient_stops_the_warm_up_before_anything_is_written(tmp_path,
                                                                            monkeypatch):
  import jax
  real = sft._nll_grad

  def poisoned(*args, **kwargs):
    loss, grads = real(*args, **kwargs)
    return loss, jax.tree.map(lambda g: g * np.nan, grads)

  monkeypatch.setattr(sft, "_nll_grad", poisoned)
  config = apply_overrides(load_config(SMOKE), ["steps=2", "prompts_per_step=2"])
  with pytest.raises(FloatingPointError, match="SFT step 1: gradient norm is nan"):
    sft.sft(config, str(tmp_path / "sft"))
  assert not os.path.exists(tmp_path / "sft" / "hf")
