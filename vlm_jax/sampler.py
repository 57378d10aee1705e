"""Sampling: a jitted prefill and a jitted `lax.while_loop` decode over an explicit KV cache.

Static configuration (`SamplingParams`) + a state dict (cache, last logits, outputs, flags) + two
jitted functions (`decode_step.prefill`, `decode_step.decode`); the decode state is donated. Both
run `model.embed` / `text.decoder`, the same code as `forward` and the log-prob kernel, so rollout
and training log-probs cannot drift.

Shapes are bucketed (`buckets.py`): prompts are left-aligned and padded to a length bucket,
batches to a batch bucket, vision patches to a patch bucket; a steady stream of requests in one
bucket compiles once. With `n > 1` every prompt is sampled n times: the vision tower runs once
per prompt and its embeddings are repeated with the rows (row b*n + j is sample j of prompt b).

Decode positions: the k-th generated token sits at real-token index (prompt real tokens + k) and
gets M-RoPE position index + rope delta on all three streams (`rope.get_rope_index`).
Log-probs and entropies are those of the untempered (temperature 1) next-token distribution,
whatever temperature samples; with `tempered_logprobs` those of softmax(logits / temperature),
the distribution sampled from (what GRPO's rollouts record, as in TRL and verl).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import jax
import jax.numpy as jnp

from vlm_jax import (buckets, decode_step, derived, memory_maps, model as model_lib,
                     sharding as sharding_lib, stops)
from vlm_jax.device_memory import cache_bytes, layer_copy_bytes
from vlm_jax.config import ModelConfig

TRACE_COUNTS = decode_step.TRACE_COUNTS  # incremented at trace time: a compile counter
_WARNED = {"scanned": False}


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  max_new_tokens: int = 256
  temperature: float = 0.0  # 0: greedy
  top_k: int = 0            # 0: off (transformers' sampling defaults to 50; vLLM's is off)
  top_p: float = 1.0        # 1: off; tokens tied at the cut are all kept
  n: int = 1                # samples per prompt (GRPO's G)
  # None: the processor's end-of-turn ids (<|im_end|>, <|endoftext|>) and the config's eos, as
  # transformers' generate stops at the generation config's eos ids; (): no stop ids
  stop_token_ids: tuple[int, ...] | None = None
  stop_strings: tuple[str, ...] = ()
  seed: int = 0
  suppress_vision_tokens: bool = True  # never sample <|image_pad|> / <|video_pad|>
  logprobs: bool = True     # per-token log-probs and entropies (GRPO); off: tokens only
  # log-probs and entropies of softmax(logits / temperature) instead of temperature 1 (no
  # effect when greedy); before top-k, top-p and the repetition penalty either way
  tempered_logprobs: bool = False
  # transformers' repetition_penalty (Qwen2.5-VL's generation_config.json asks 1.05): the logit
  # of every token already in the row (its prompt's real tokens, then what it generated) is
  # divided by it where positive, multiplied where negative, before temperature, top-k, top-p
  # and greedy. 1: off. Log-probs and entropies stay those of the model's own distribution.
  repetition_penalty: float = 1.0

  def __post_init__(self):
    if self.max_new_tokens < 1 or self.n < 1:
      raise ValueError(f"max_new_tokens and n must be >= 1, got {self.max_new_tokens}, {self.n}")
    if (self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0
        or not self.repetition_penalty > 0):
      raise ValueError(f"bad sampling values: temperature={self.temperature}, top_p={self.top_p}, "
                       f"top_k={self.top_k}, repetition_penalty={self.repetition_penalty}")
    if self.stop_token_ids is not None:
      object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in self.stop_token_ids))
    if isinstance(self.stop_strings, str) or any(not s for s in self.stop_strings):
      raise ValueError(f"stop_strings must be a sequence of non-empty strings, got "
                       f"{self.stop_strings!r}")


@dataclasses.dataclass
class SampleOutput:
  tokens: np.ndarray        # [R, max_new_tokens] int32, pad after each row's end; R = B * n
  lengths: np.ndarray       # [R] generated tokens kept (stop string / stop token included)
  logprobs: np.ndarray | None   # [R, max_new_tokens] float32, log p(token) at temperature 1
  # (at the sampling temperature with SamplingParams(tempered_logprobs=True))
  entropies: np.ndarray | None  # [R, max_new_tokens] float32, entropy of that distribution
  # (both None with SamplingParams(logprobs=False))
  texts: list[str]          # decoded rows, without special stop tokens (empty without a processor)
  finish_reasons: list[str]  # "stop" or "length"
  prompt_index: np.ndarray  # [R] prompt of each row


def _longest_prompt(batch: dict) -> int:
  """The longest row's real tokens (the attention mask's count) of a [B, T] batch."""
  ids = np.asarray(batch["input_ids"])
  if ids.ndim != 2 or not ids.size:
    raise ValueError(f"input_ids must be [batch, seq] with at least one token, got shape "
                     f"{ids.shape}")
  mask = batch.get("attention_mask")
  return ids.shape[1] if mask is None else int(np.asarray(mask).sum(1).max())


def _row_ids(row_keys, rows: int, padded_rows: int, n: int) -> np.ndarray:
  """int32 id per sample row: (prompt key, sample index) mixed; padding rows get their index."""
  keys = np.arange(padded_rows, dtype=np.int64)
  if row_keys is not None:
    row_keys = np.asarray(row_keys, np.int64)
    if row_keys.shape != (rows,):
      raise ValueError(f"row_keys: one int per prompt ({rows}), got shape {row_keys.shape}")
    keys[:rows] = row_keys % (2**31 - 1)
  ids = (keys[:, None] * 1_000_003 + np.arange(n)[None]) % (2**31 - 1)
  return ids.reshape(-1).astype(np.int32)


class Sampler:
  """Samples continuations of HF-processor batches with one model's params.

  processor: a `vlm_jax.processor.Processor` (for texts, stop strings and `generate`); mesh: a
  `jax.sharding.Mesh` the params are already placed on (`load_hf(..., mesh=)`).
  unstack_layers: decode over per-layer copies of the layer weights (`text.unstack_layers`):
  one extra copy of the layer weights (sharded like them) while a decode runs (on CPU kept
  between calls while the layer arrays are the same, see `_layer_copy`), for decode steps
  2.6x faster at 7B shapes on an H200 and faster on CPU too (bench/RESULTS.md: the scanned
  loop copies each layer's weight slice on every step). "auto" (default): per-layer when that
  copy takes at most half of the memory the call's KV cache leaves free on the device holding
  the weights' first shard (checked per call, the least over processes; always where the
  backend reports no memory statistics, e.g. CPU), else the scanned decode, with a warning.
  True / False force either (`evals.run --scanned-decode` and `rollout_unstack_layers=false`
  in training force False).
  greedy_screen: greedy decodes without log-probs choose each token with `greedy_screen`
  (a bfloat16 copy of a float32 LM head screens the vocabulary, the few columns that can hold
  the maximum are rescored in float32): the float32 argmax up to float32 summation order (the
  rescoring sums in another order than the full matmul; near-ties can resolve differently, as
  they can between any two matmul implementations), at about the cost of a bfloat16 head.
  "auto" (default): when the head is float32 and the params live on CPU devices, where float32
  matmuls are exact float32 (on GPUs and TPUs they default to TF32 / bf16 passes).
  """

  def __init__(self, params: dict, config: ModelConfig, processor=None, mesh=None,
               pad_id: int | None = None, min_length_bucket: int = 64,
               min_patch_bucket: int = 256, unstack_layers: bool | str = "auto",
               greedy_screen: bool | str = "auto"):
    self.params, self.config, self.processor, self.mesh = params, config, processor, mesh
    if unstack_layers not in (True, False, "auto"):
      raise ValueError(f"unstack_layers={unstack_layers!r}: want True, False or 'auto'")
    self.unstack_layers = unstack_layers
    if greedy_screen not in (True, False, "auto"):
      raise ValueError(f"greedy_screen={greedy_screen!r}: want True, False or 'auto'")
    if greedy_screen == "auto":
      head = decode_step.head_array(params, config)
      devices = head.devices() if isinstance(head, jax.Array) else jax.devices()[:1]
      greedy_screen = bool(head.dtype == jnp.float32
                           and all(d.platform == "cpu" for d in devices))
    self.greedy_screen = greedy_screen
    self._derived = derived.Derived()  # screen tables; the per-layer copy (CPU)
    if pad_id is None:
      pad_id = processor.pad_token_id if processor is not None else (config.pad_token_id or 0)
    self.pad_id = int(pad_id)
    self.min_length_bucket = min_length_bucket
    self.min_patch_bucket = min_patch_bucket

  def generate(self, conversations, sampling: SamplingParams, images=None, videos=None,
               assistant_prefill=None) -> SampleOutput:
    """Chat conversations (see `Processor.__call__`) -> samples."""
    if self.processor is None:
      raise ValueError("Sampler.generate needs a processor; call the sampler on arrays instead")
    batch = self.processor(conversations, images=images, videos=videos,
                           assistant_prefill=assistant_prefill)
    return self(batch, sampling)

  def __call__(self, batch: dict, sampling: SamplingParams, row_keys=None) -> SampleOutput:
    """batch: HF processor arrays (any padding side). Returns B * n rows.

    row_keys: one int per prompt (e.g. a hash of the item id) so a prompt's samples do not
    depend on its position in the batch; default: the row index.
    """
    memory_maps.relieve()  # near the process's mapping limit: drop compiled programs
    sampling = self.resolve(sampling)
    longest, context = _longest_prompt(batch), self.config.text.max_position_embeddings
    if longest + sampling.max_new_tokens > context:  # (vLLM's max_model_len check)
      raise ValueError(f"the longest prompt ({longest} tokens) + max_new_tokens "
                       f"({sampling.max_new_tokens}) exceeds the model's context "
                       f"(max_position_embeddings {context}): lower max_new_tokens")
    inputs, rows = self.prepare(batch)
    top_k = sampling.top_k if sampling.top_k < self.config.text.vocab_size else 0  # all: off
    greedy = sampling.temperature == 0
    # max_new_tokens is bucketed like the prompt length: other counts in the bucket reuse both
    # programs (the loop stops at the count; cache and output slots past it stay unused)
    penalty = sampling.repetition_penalty != 1
    spec = decode_step.Spec(
        buckets.new_tokens_bucket(sampling.max_new_tokens), sampling.n, greedy, top_k,
        sampling.top_p < 1, sampling.logprobs,
        screen=greedy and not sampling.logprobs and self.greedy_screen and not penalty,
        penalty=penalty, tempered=(sampling.tempered_logprobs and sampling.logprobs
                                   and not greedy and sampling.temperature != 1))
    cache_len = inputs["input_ids"].shape[1] + spec.max_new
    per_layer = self._per_layer(inputs["input_ids"].shape[0] * sampling.n, cache_len)
    # a kept copy (CPU) serves the prefill too: no per-layer slice of the stacked weights
    kept = self._layer_copy(vision_too=True) if per_layer and self._keeps_layer_copy() else None
    params = self.params if kept is None else kept
    out = decode_step.prefill(params, self.config, inputs, sampling.n, cache_len, self.mesh,
                              per_layer)
    stop_table = stops.stop_table(self.processor, sampling.stop_strings,
                                  self.config.text.vocab_size)
    live = np.repeat(np.arange(inputs["input_ids"].shape[0]) < rows, sampling.n)
    state = decode_step.init_state(out, spec, stop_table.shape[0], self.pad_id, live)
    if penalty:
      state["seen"] = decode_step.seen_tokens(inputs["input_ids"], inputs["token_mask"],
                                              sampling.n, out["logits"].shape[-1])
    controls = {"rng": jax.random.key(sampling.seed),
                "max_new": jnp.int32(sampling.max_new_tokens),
                "temperature": jnp.float32(max(sampling.temperature, 1e-6)),
                "top_p": jnp.float32(sampling.top_p), "pad_id": jnp.int32(self.pad_id),
                "stop_table": jnp.asarray(stop_table),
                "stop_ids": jnp.asarray(stops.stop_ids(sampling.stop_token_ids)),
                "banned": jnp.asarray(self._banned(sampling), jnp.int32),
                "penalty": jnp.float32(sampling.repetition_penalty),
                "row_ids": jnp.asarray(_row_ids(row_keys, rows, inputs["input_ids"].shape[0],
                                                sampling.n))}
    if spec.screen:
      controls["screen"] = self._screen_tables()
    # accelerators: the copy is made inside the decode program and freed with it
    state = decode_step.decode(params, self.config, state, spec, controls,
                               per_layer and kept is None)
    return self._finish(state, rows * sampling.n, sampling)

  def next_token_logprobs(self, batch: dict, token_ids) -> np.ndarray:
    """log p [B, K] of `token_ids` as the token after each row of `batch` (HF arrays).

    The scoring path of the evals (letter distributions): same model code, same buckets.
    """
    memory_maps.relieve()
    inputs, rows = self.prepare(batch)
    ids = jnp.asarray(np.asarray(token_ids, np.int32))
    params = self._layer_copy(vision_too=True) if self._keeps_layer_copy() else self.params
    out = decode_step.last_logprobs(params, self.config, inputs, ids, self.mesh)
    return sharding_lib.to_host(out)[:rows]

  # -- host side ---------------------------------------------------------------------------
  def _screen_tables(self) -> dict:
    """`greedy_screen.tables` of the current LM head, kept while the head is the same array
    (`derived`): a bfloat16 copy of the head, plus a transposed float32 copy for an untied head
    (0.5x or 1.5x the head's bytes)."""
    tied = self.config.text.tie_word_embeddings
    return self._derived.get("screen", decode_step.head_array(self.params, self.config),
                             lambda head: decode_step.screen_tables(head, tied))

  def _keeps_layer_copy(self) -> bool:
    """Whether `_layer_copy` keeps its copy: on CPU, unless `unstack_layers=False`."""
    if self.unstack_layers is False:
      return False
    devices = lambda x: x.devices() if isinstance(x, jax.Array) else jax.devices()[:1]
    return all(d.platform == "cpu" for x in jax.tree.leaves(self.params["text"]["layers"])
               for d in devices(x))

  def _layer_copy(self, vision_too: bool = False) -> dict:
    """The params with per-layer, q/k/v- and gate/up-fused text layers (`text.unstack_layers`)
    and, with vision_too, vision blocks (`vision.unstack_blocks`), kept while their sources are
    the same arrays (`derived`). CPU only (`_keeps_layer_copy`): they serve prefill, decode and
    scoring (bench/RESULTS.md, session 9). On accelerators the decode program makes its own
    copy and frees it: no second copy held between calls, sharded as that program decides."""
    params = self.params
    out = dict(params, text=dict(params["text"], layers=self._derived.get(
        "layers", params["text"]["layers"], decode_step.unstack_layers_jit)))
    if vision_too and params.get("vision") is not None:
      out["vision"] = dict(params["vision"], blocks=self._derived.get(
          "vision", params["vision"]["blocks"], decode_step.unstack_blocks_jit))
    return out

  def _per_layer(self, rows: int, cache_len: int) -> bool:
    """Resolves `unstack_layers` for a call of `rows` rows (see the class docstring): the copy
    must fit in half of what the KV cache leaves free."""
    if self.unstack_layers != "auto":
      return self.unstack_layers
    layers = self.params["text"]["layers"]
    need, free = layer_copy_bytes(layers)
    if free is None:
      return True
    dtype = jax.tree.leaves(layers)[0].dtype
    free -= cache_bytes(self.config, rows, cache_len, self.mesh, dtype)
    if need <= free / 2:
      return True
    if not _WARNED["scanned"]:  # once per process (training builds a Sampler per step)
      warnings.warn(f"Sampler: a per-layer copy of the layer weights ({need / 2**30:.2f} GiB per "
                    f"device) does not fit in half the device memory the KV cache leaves free "
                    f"({max(free, 0) / 2**30:.2f} GiB); decoding through the stacked weights "
                    "(slower)", stacklevel=3)
      _WARNED["scanned"] = True
    return False

  def resolve(self, sampling: SamplingParams) -> SamplingParams:
    """`sampling` with its default stop ids filled in (see SamplingParams.stop_token_ids);
    ids given outside the vocabulary (another tokenizer's?) would never stop a row: refused."""
    if sampling.stop_token_ids is not None:
      vocab = self.config.text.vocab_size
      bad = [int(t) for t in sampling.stop_token_ids if not 0 <= int(t) < vocab]
      if bad:
        raise ValueError(f"stop_token_ids {bad} are outside the model's vocabulary [0, {vocab})")
      return sampling
    eos = self.config.eos_token_id
    ids = (() if self.processor is None else self.processor.stop_token_ids) + (
        () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos))
    return dataclasses.replace(sampling, stop_token_ids=tuple(dict.fromkeys(ids)))

  def prepare(self, batch: dict) -> tuple[dict, int]:
    """HF arrays -> bucketed (left-aligned, padded, sharded) `apply` inputs, and the real rows.
    The length bucket covers the longest real prompt, not the arrays' padded width."""
    rows = np.asarray(batch["input_ids"]).shape[0]
    length = buckets.bucket(_longest_prompt(batch), self.min_length_bucket)
    batch = buckets.left_align(batch, length)
    inputs = model_lib.prepare_inputs(self.config, **batch)
    multiple = 1 if self.mesh is None else sharding_lib.batch_size_multiple(self.mesh)
    inputs = model_lib.pad_batch(inputs, max(buckets.bucket(rows), multiple))
    inputs = model_lib.pad_batch(inputs, multiple)
    if "pixel_values" in inputs:  # on a mesh: split by batch shard (`model.embed`)
      inputs = buckets.pad_vision(inputs, self.config.vision, self.min_patch_bucket, multiple)
    if self.mesh is not None:
      inputs = sharding_lib.shard_inputs(inputs, self.mesh)
    return inputs, rows

  def _banned(self, sampling: SamplingParams) -> list[int]:
    if self.config.vision is None or not sampling.suppress_vision_tokens:
      return [self.config.text.vocab_size]  # out of range: dropped (mode="drop")
    return [self.config.image_token_id, self.config.video_token_id]

  def _finish(self, state: dict, rows: int, sampling: SamplingParams) -> SampleOutput:
    keys = ("tokens", "lengths") + (("logprobs", "entropies") if sampling.logprobs else ())
    host = {k: np.array(sharding_lib.to_host(state[k])[:rows]) for k in keys}
    for k in ("tokens", "logprobs", "entropies"):
      if k in host:
        host[k] = host[k][:, :sampling.max_new_tokens]
    tokens, lengths = host["tokens"], host["lengths"].astype(np.int64)
    texts, reasons = [], []
    for r in range(rows):
      stopped = bool(lengths[r] < sampling.max_new_tokens) or (
          lengths[r] and tokens[r, lengths[r] - 1] in sampling.stop_token_ids)
      lengths[r], text_r, hit = stops.cut_at_stop_string(self.processor, tokens[r], lengths[r],
                                                          sampling)
      texts.append(text_r)
      reasons.append("stop" if stopped or hit else "length")
      tokens[r, lengths[r]:] = self.pad_id
      if sampling.logprobs:
        host["logprobs"][r, lengths[r]:] = 0
        host["entropies"][r, lengths[r]:] = 0
    return SampleOutput(tokens=tokens, lengths=lengths, logprobs=host.get("logprobs"),
                        entropies=host.get("entropies"), texts=texts, finish_reasons=reasons,
                        prompt_index=np.repeat(np.arange(rows // sampling.n), sampling.n))


def generate_greedy(params, config, batch: dict, max_new_tokens: int, **kw) -> SampleOutput:
  """Convenience: greedy continuation of HF-processor arrays."""
  return Sampler(params, config, **kw)(batch, SamplingParams(max_new_tokens=max_new_tokens))


__all__ = ["SampleOutput", "Sampler", "SamplingParams", "TRACE_COUNTS", "generate_greedy"]
