"""Supervised warm-up before GRPO: teach the output format on templated answers.

  python -m rl.sft --config configs/smoke.py --out runs/sft steps=200 lr=1e-3
  python -m rl.train --config configs/smoke.py --out runs/grpo model=runs/sft/hf max_new_tokens=48
(the smoke config's 12 new tokens would cut the ~20-token answer format short: no reward.)

Each example's target is `<think>{statement}.</think><answer>{letter}</answer><|im_end|>`, the
statement being the item's true statement (synthetic meta `statement`) or the key option's text.
With `sft_answers=random` the letter is drawn uniformly from the item's options (seeded by the run
seed and the item id) and the statement is that option's: the warm-up then teaches the format and
a think that agrees with the answer, but nothing about which answer is right, so any later gain in
accuracy is GRPO's.
Loss: mean negative log-likelihood of the target tokens (the chunked log-prob kernel over the
response positions only). The result is written as an HF checkpoint (`OUT/hf`, with tokenizer
and preprocessor files) that `rl.train` and `evals.run` start from.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys

import numpy as np
import jax
import jax.numpy as jnp

from evals.schema import LETTERS
from rl import data, precision, rollout
from rl.config import TrainConfig, parse_cli
from vlm_jax import buckets, logprobs as logprobs_lib, sharding


def target_text(example, answers: str = "correct", seed: int = 0) -> str:
  """The warm-up target for `example` (see the module docstring for `answers`)."""
  item = example.as_item()
  meta = dict(item.meta)
  if answers == "correct":
    letter = item.answer
  elif answers == "random":
    digest = hashlib.sha256(f"sft:{seed}:{example.source}:{example.id}".encode()).digest()
    letter = LETTERS[int.from_bytes(digest[:8], "big") % len(item.options)]
  else:
    raise ValueError(f"sft_answers={answers!r}: expected 'correct' or 'random'")
  index = LETTERS.index(letter)
  statement = meta.get(f"statement_{letter}") or (
      meta.get("statement") if letter == item.answer else None) or (
      f"The answer is {item.options[index]}")
  return f"<think>{statement.rstrip('.')}.</think><answer>{letter}</answer>"


@functools.partial(jax.jit, static_argnums=(1, 4, 5, 6, 7))
def _nll_grad(params, model_config, inputs, mask, chunk_t: int, sweep: str = "auto",
              head_sharding=None, dtype: str = "float32"):
  """(mean target-token NLL, its gradient) for the (master) `params`, computed in `dtype`."""
  aux = {"weight": mask.astype(jnp.float32) / jnp.maximum(jnp.sum(mask), 1.0)}
  nll = lambda logp, _, a: -a["weight"] * logp

  def loss(p):
    p = precision.in_compute_dtype(p, dtype)  # gradients flow back to the masters
    return logprobs_lib.sequence_token_loss(p, model_config, inputs, nll, aux,
                                            last=mask.shape[1], chunk_t=chunk_t, sweep=sweep,
                                            head_sharding=head_sharding)[0]
  return jax.value_and_grad(loss)(params)


def _batch(sampler, processor, preset, examples, config: TrainConfig):
  convs, images, targets = [], [], []
  for e in examples:
    spec = rollout.augment_lib.make_variant(e.as_item(), "base", config.seed)
    ims = e.as_item().pil_images()
    convs.append(preset.messages(spec, len(ims)))
    images += ims
    targets.append(target_text(e, config.sft_answers, config.seed) + "<|im_end|>")
  batch = processor(convs, images=images, padding_side="right")
  target_ids = [processor.tokenizer.encode(t, add_special_tokens=False) for t in targets]
  lengths = np.array([len(t) for t in target_ids])
  tokens = np.zeros((len(target_ids), lengths.max()), np.int64)
  for r, t in enumerate(target_ids):
    tokens[r, :len(t)] = t
  seqs, _ = rollout.sequences(batch, tokens, lengths, 1, processor.pad_token_id,
                              [len(e.images) for e in examples])
  inputs, _ = sampler.prepare(seqs)
  width = min(buckets.bucket(int(lengths.max()), 16), inputs["input_ids"].shape[1] - 1)
  mask = rollout.aligned(np.ones((len(lengths), lengths.max())), lengths, width,
                         inputs["input_ids"].shape[0])
  return inputs, mask


def sft(config: TrainConfig, out: str, mesh=None) -> list[float]:
  """Run the warm-up; returns the loss per step and writes OUT/hf."""
  from vlm_jax import hf
  from vlm_jax.sampler import Sampler
  # float32 master weights and AdamW state under `dtype` compute, as rl.train (`param_dtype`)
  model_config, params, processor = data.load_policy(config, mesh, config.param_dtype)
  precision.warn_bf16_masters(config, params)
  examples = [e for e in data.load_items(config) if e.kind == "choice"]
  if not examples:
    raise ValueError(f"data={config.data!r} holds no multiple-choice items: the SFT warm-up "
                     f"teaches the answer format on them (counting data has none)")
  from rl.optimizer import apply_updates, init_state, make_optimizer
  # one update per SFT step: warmup_steps count SFT steps (GRPO's mini-batches and epochs do not
  # apply here)
  opt = make_optimizer(dataclasses.replace(config, prompts_per_update=None, updates_per_batch=1),
                       params)
  opt_state = init_state(opt, params)
  preset = rollout.preset_for(config)
  losses = []
  for step in range(config.steps):
    sampler = Sampler(params, model_config, processor, mesh=mesh)
    batch = data.items_for_step(examples, step, config)
    inputs, mask = _batch(sampler, processor, preset, batch, config)
    loss, grads = _nll_grad(params, model_config, inputs, mask, config.logprob_chunk_t,
                            config.logprob_sweep, sharding.head_sharding(mesh), config.dtype)
    # one jitted update with params and optimizer state donated, as rl.train (eager optax
    # dispatched every leaf op on its own: 20 smoke steps took 55 s, 28 s of it system time)
    params, opt_state, gnorm, unorm = apply_updates(opt, params, opt_state, grads)
    for name, value in (("gradient norm", float(gnorm)), ("update norm", float(unorm))):
      if not np.isfinite(value):
        raise FloatingPointError(f"SFT step {step + 1}: {name} is {value}; the update was not "
                                 "applied and nothing was written")
    losses.append(float(loss))
    print(json.dumps({"step": step + 1, "sft_loss": round(losses[-1], 5)}), file=sys.stderr)
  params = precision.in_compute_dtype(params, config.dtype)  # the model it trained
  hf.save_hf(params, model_config, os.path.join(out, "hf"), extra_files_from=config.model)
  if not config.model and jax.process_index() == 0:  # the tokenizer and image settings it
    hf.write_default_processor_files(os.path.join(out, "hf"))  # was trained with
  print(f"wrote {os.path.join(out, 'hf')} (an HF checkpoint: rl.train model=, evals.run --model)",
        file=sys.stderr)
  return losses


def main(argv=None) -> int:
  config, mesh, out = parse_cli("python -m rl.sft", __doc__, "runs/sft", argv)
  sft(config, out, mesh)
  return 0


if __name__ == "__main__":
  from vlm_jax import cli
  raise SystemExit(cli.run(main, "python -m rl.sft"))
