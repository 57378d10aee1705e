"""Rollouts: prompts -> G samples each (the sampler) -> rewards -> advantages -> the training
sequences (prompt + response) aligned with the rollout log-probs.

Alignment convention: training inputs are left-aligned to length L (`Sampler.prepare`), so a
response of k tokens fills the last k columns; position t of the log-prob arrays [R, L-1]
predicts column t+1, hence the response occupies t in [L-1-k, L-2].
"""

from __future__ import annotations

import collections
import dataclasses
import zlib

import numpy as np

from evals import presets as presets_lib
from evals.schema import Item
from rl.examples import Example
from rl import augment as augment_lib, grpo, rewards as rewards_lib
from vlm_jax.processor import pad_rows
from vlm_jax.sampler import SamplingParams


@dataclasses.dataclass
class Rollouts:
  batch: dict              # HF-style arrays of the R prompt+response sequences (right padded)
  lengths: np.ndarray      # [R] response tokens
  logprobs: np.ndarray     # [R, max_new] rollout log-probs (at the sampling temperature)
  entropies: np.ndarray    # [R, max_new]
  rewards: dict            # component -> [R]
  advantages: np.ndarray   # [R]
  texts: list[str]
  image_ranges: list[tuple[int, int]]  # [R] images of each row in batch["image_grid_thw"]


def _per_prompt_pixels(batch: dict) -> list[np.ndarray]:
  if "pixel_values" not in batch:
    return []
  sizes = np.asarray(batch["image_grid_thw"]).prod(-1)
  return np.split(batch["pixel_values"], np.cumsum(sizes)[:-1])


def sequences(batch: dict, tokens: np.ndarray, lengths: np.ndarray, group: int,
              pad_id: int, images_per_prompt: list[int]):
  """HF-style arrays for prompt b (repeated per sample) followed by each sample's tokens, and
  the range of images each row uses."""
  rows, pixels, grids, ranges = [], [], [], []
  per_image = _per_prompt_pixels(batch)
  starts = np.cumsum([0] + images_per_prompt)
  for r in range(tokens.shape[0]):
    b = r // group
    prompt = batch["input_ids"][b][batch["attention_mask"][b] == 1].tolist()
    rows.append(prompt + tokens[r, :lengths[r]].tolist())
    ranges.append((len(grids), len(grids) + images_per_prompt[b]))
    for i in range(starts[b], starts[b + 1]):
      pixels.append(per_image[i])
      grids.append(batch["image_grid_thw"][i])
  ids, mask = pad_rows(rows, pad_id)
  out = {"input_ids": ids, "attention_mask": mask}
  if pixels:
    out["pixel_values"] = np.concatenate(pixels)
    out["image_grid_thw"] = np.stack(grids)
  return out, ranges


def aligned(values: np.ndarray, lengths: np.ndarray, width: int, rows: int) -> np.ndarray:
  """Place each row's first lengths[r] values at the end of a [rows, width] array (zeros
  elsewhere; rows beyond len(values) are all zero: batch padding)."""
  out = np.zeros((rows, width), np.float32)
  for r, k in enumerate(lengths):
    if k:
      out[r, width - k:] = values[r, :k]
  return out


NUMBER_INSTRUCTION = ("Output the thinking process in <think> </think> and the final answer (a "
                      "number) in <answer> </answer> tags.")


def _prompt(example: Example, step: int, preset, config, augment_config):
  """(chat messages, PromptSpec-like prefill holder, reward target) of one example."""
  if example.kind == "number":
    spec = (augment_lib.augment_number(example.question, example.answer,
                                       f"{example.source}/{example.id}", example.category, step,
                                       augment_config) if augment_config else
            augment_lib.PromptSpec("base", example.question, (), example.answer))
    content = [{"type": "image"} for _ in example.images]
    content.append({"type": "text", "text": f"{spec.question}\n{NUMBER_INSTRUCTION}"})
    target = rewards_lib.Target(spec.question, example.answer, kind="number")
    system = [{"role": "system", "content": preset.system}] if preset.system else []
    return system + [{"role": "user", "content": content}], spec, target
  item = example.as_item()
  spec = (augment_lib.augment(item, step, augment_config) if augment_config else
          augment_lib.make_variant(item, "base", config.seed))
  target = rewards_lib.Target(spec.question, spec.answer, spec.options)
  return preset.messages(spec, len(example.images)), spec, target


def collect(sampler, processor, preset, examples: list[Example], step: int, config, judge,
            augment_config=None) -> Rollouts:
  """Sample G responses per example at `step` and score them."""
  prompts = [_prompt(e, step, preset, config, augment_config) for e in examples]
  convs, specs = [p[0] for p in prompts], [p[1] for p in prompts]
  images = [e.as_item().pil_images() if e.kind == "choice" else _decode(e) for e in examples]
  batch = processor(convs, images=[im for ims in images for im in ims],
                    assistant_prefill=[s.assistant_prefill for s in specs])
  out = sampler(batch, SamplingParams(
      max_new_tokens=config.max_new_tokens, temperature=config.temperature,
      n=config.group_size, seed=config.seed * 1_000_003 + step,
      stop_token_ids=processor.stop_token_ids, tempered_logprobs=True),
      row_keys=row_keys(examples))
  g = config.group_size
  texts = [(specs[r // g].assistant_prefill or "") + t for r, t in enumerate(out.texts)]
  targets = [p[2] for p in prompts for _ in range(g)]
  reward_cfg = rewards_lib.RewardConfig(config.format_weight, config.accuracy_weight,
                                        config.faithful)
  rew = rewards_lib.compute_rewards(texts, targets, reward_cfg, judge)
  adv = advantages(rew, g, config)
  seqs, ranges = sequences(batch, out.tokens, out.lengths, g, processor.pad_token_id,
                           [len(im) for im in images])
  return Rollouts(seqs, out.lengths, out.logprobs, out.entropies, rew, adv, texts, ranges)


def row_keys(examples: list[Example]) -> list[int]:
  """The sampler's key of each prompt: its source/id, so a prompt samples the same group at a
  step whatever the batch around it; a prompt met again in the same step (a step across an
  epoch boundary) adds its occurrence, so its copies sample different groups."""
  seen, keys = collections.Counter(), []
  for e in examples:
    name = f"{e.source}/{e.id}"
    keys.append(zlib.crc32((f"{name}#{seen[name]}" if seen[name] else name).encode()))
    seen[name] += 1
  return keys


def advantages(rew: dict, group_size: int, config) -> np.ndarray:
  """Group advantages of `compute_rewards`' totals. Under the faithful reward a row whose judge
  failed has no known reward: it gets no advantage and its group's baseline is over the rows
  that have one (a 0 for an outage would push good answers down). Its tokens still count in
  the loss's token mean and carry the KL term."""
  valid = rew["judge_error"] == 0 if config.faithful else None
  return np.asarray(grpo.group_advantages(rew["total"], group_size,
                                          scale_by_std=config.scale_adv_by_std, valid=valid))


def images_of_rows(batch: dict, ranges: list[tuple[int, int]]) -> dict:
  """pixel_values / image_grid_thw of a contiguous run of rows (their `image_ranges`)."""
  if "pixel_values" not in batch or not ranges:
    return {}
  first, last = ranges[0][0], ranges[-1][1]
  starts = np.concatenate([[0], np.cumsum(np.asarray(batch["image_grid_thw"]).prod(-1))])
  return {"pixel_values": batch["pixel_values"][starts[first]:starts[last]],
          "image_grid_thw": batch["image_grid_thw"][first:last]}


def preset_for(config):
  return presets_lib.get_preset(config.preset)


def _decode(example: Example) -> list:
  """Images of a numeric example (same decoding and errors as `Item.pil_images`)."""
  probe = Item(id=example.id, benchmark=example.source, question="", options=("a", "b"),
               answer="A", images=example.images)
  return probe.pil_images()
