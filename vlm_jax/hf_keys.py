"""The HF <-> vlm_jax key table: one `Rule` per HF tensor plus small named transforms.

Every transform from HF to ours (`to_ours`) only makes numpy *views* (transpose, axis splits), so
it can run on a memory-mapped tensor, or on a zero-stride dummy to check shapes, without copying.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from vlm_jax.config import ModelConfig

# Key prefixes, transformers-5 module layout first (it is tried first when reading).
TEXT_PREFIXES = ("model.language_model.", "model.")
VISION_PREFIXES = ("model.visual.", "visual.")


@dataclasses.dataclass(frozen=True)
class Rule:
  """One HF tensor <-> one or more of our leaves ('/'-paths), per layer when `{i}` is in `hf`."""
  hf: str
  ours: tuple[str, ...]
  to_ours: Callable  # (hf_array, config) -> tuple of arrays
  to_hf: Callable    # (*our_arrays, config) -> hf_array


# Named transforms. torch Linear stores [out, in]; we store [in, out] (and [in, heads, head_dim]).
def _same(w, c):
  return (w,)


def _same_back(w, c):
  return w


def _t(w, c):
  return (w.T,)


def _t_back(w, c):
  return w.T


def _heads_in(attr):
  def to_ours(w, c):
    n = getattr(c.text, attr)
    return (w.T.reshape(w.shape[1], n, -1),)
  return to_ours


def _heads_in_back(w, c):
  return w.reshape(w.shape[0], -1).T


def _heads_bias(attr):
  return lambda b, c: (b.reshape(getattr(c.text, attr), -1),)


def _flat_back(b, c):
  return b.reshape(-1)


def _o(w, c):
  return (w.T.reshape(c.text.num_heads, -1, w.shape[0]),)


def _o_back(w, c):
  return w.reshape(-1, w.shape[-1]).T


def _patch(w, c):
  return (w.reshape(w.shape[0], -1).T,)


def _patch_back(w, c):
  v = c.vision
  return w.T.reshape(-1, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)


def _split3(w, c):
  """Fused vision qkv ([3D, D] weight or [3D] bias): q, k, v rows in that order."""
  q, k, v = np.split(w, 3, axis=0)
  return tuple(x.T if x.ndim == 2 else x for x in (q, k, v))


def _fuse3(q, k, v, c):
  return np.concatenate([x.T if x.ndim == 2 else x for x in (q, k, v)], axis=0)


def _linear(hf: str, ours: str, bias: bool = True) -> list[Rule]:
  rules = [Rule(f"{hf}.weight", (f"{ours}/kernel",), _t, _t_back)]
  if bias:
    rules.append(Rule(f"{hf}.bias", (f"{ours}/bias",), _same, _same_back))
  return rules


def _norm(hf: str, ours: str) -> Rule:
  return Rule(f"{hf}.weight", (f"{ours}/scale",), _same, _same_back)


def text_rules(config: ModelConfig) -> list[Rule]:
  """Rules for the decoder; HF keys relative to the text prefix (except `lm_head`)."""
  t = config.text
  a, m, L = "layers.{i}.self_attn", "layers.{i}.mlp", "text/layers"
  rules = [Rule("embed_tokens.weight", ("text/embed/embedding",), _same, _same_back),
           _norm("norm", "text/norm"),
           _norm("layers.{i}.input_layernorm", f"{L}/input_norm"),
           _norm("layers.{i}.post_attention_layernorm", f"{L}/post_norm"),
           Rule(f"{a}.o_proj.weight", (f"{L}/o/kernel",), _o, _o_back)]
  if t.o_bias:
    rules.append(Rule(f"{a}.o_proj.bias", (f"{L}/o/bias",), _same, _same_back))
  for name, heads in (("q", "num_heads"), ("k", "num_kv_heads"), ("v", "num_kv_heads")):
    rules.append(Rule(f"{a}.{name}_proj.weight", (f"{L}/{name}/kernel",), _heads_in(heads),
                      _heads_in_back))
    if t.qkv_bias:
      rules.append(Rule(f"{a}.{name}_proj.bias", (f"{L}/{name}/bias",), _heads_bias(heads),
                        _flat_back))
  if t.qk_norm:
    rules += [_norm(f"{a}.q_norm", f"{L}/q_norm"), _norm(f"{a}.k_norm", f"{L}/k_norm")]
  for name in ("gate", "up", "down"):
    rules += _linear(f"{m}.{name}_proj", f"{L}/mlp/{name}", bias=False)
  return rules


def vision_rules(config: ModelConfig) -> list[Rule]:
  """Rules for the vision tower; HF keys relative to the vision prefix."""
  b, B = "blocks.{i}", "vision/blocks"
  rules = [Rule("patch_embed.proj.weight", ("vision/patch_embed/kernel",), _patch, _patch_back),
           _norm(f"{b}.norm1", f"{B}/norm1"), _norm(f"{b}.norm2", f"{B}/norm2"),
           Rule(f"{b}.attn.qkv.weight", tuple(f"{B}/{n}/kernel" for n in "qkv"), _split3, _fuse3),
           Rule(f"{b}.attn.qkv.bias", tuple(f"{B}/{n}/bias" for n in "qkv"), _split3, _fuse3),
           _norm("merger.ln_q", "vision/merger/norm")]
  rules += _linear(f"{b}.attn.proj", f"{B}/proj")
  for name in ("gate", "up", "down"):
    rules += _linear(f"{b}.mlp.{name}_proj", f"{B}/mlp/{name}")
  rules += _linear("merger.mlp.0", "vision/merger/fc1") + _linear("merger.mlp.2", "vision/merger/fc2")
  return rules


def num_layers(rule: Rule, config: ModelConfig) -> int | None:
  if "{i}" not in rule.hf:
    return None
  return config.text.num_layers if rule.ours[0].startswith("text/") else config.vision.depth


def all_rules(config: ModelConfig, text_prefix: str, vision_prefix: str):
  """(full HF key template, rule) pairs for the whole model."""
  out = [(text_prefix + r.hf, r) for r in text_rules(config)]
  if config.vision is not None:
    out += [(vision_prefix + r.hf, r) for r in vision_rules(config)]
  if not config.text.tie_word_embeddings:
    out.append(("lm_head.weight", Rule("lm_head.weight", ("text/lm_head/kernel",), _t, _t_back)))
  return out
