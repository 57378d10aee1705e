"""HF checkpoints in and out: a key table plus small named transforms, both directions.

Reads a local directory (one `model.safetensors`, or shards listed in
`model.safetensors.index.json`) in either key layout:
  * hub / transformers-4 layout (what Qwen releases and transformers 5 still writes):
    `model.layers.*`, `model.embed_tokens`, `visual.*`, `lm_head.weight`;
  * transformers-5 module layout: `model.language_model.*`, `model.visual.*`.
Writes the hub layout, sharded, with an index, config.json and (optionally) tokenizer and
preprocessor files, so `Qwen2_5_VLForConditionalGeneration.from_pretrained` loads it with no
missing or unexpected keys. Safetensors only: no pickle, no remote code.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
from typing import Callable

import numpy as np
import jax
import jax.numpy as jnp

from vlm_jax import config as config_lib
from vlm_jax import params as params_lib
from vlm_jax import safetensors_io
from vlm_jax.config import ModelConfig

_TEXT_PREFIXES = ("model.language_model.", "model.")
_VISION_PREFIXES = ("model.visual.", "visual.")
_EXTRA_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                "special_tokens_map.json", "added_tokens.json", "chat_template.json",
                "chat_template.jinja", "preprocessor_config.json", "generation_config.json")


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


def _num_layers(rule: Rule, config: ModelConfig) -> int | None:
  if "{i}" not in rule.hf:
    return None
  return config.text.num_layers if rule.ours[0].startswith("text/") else config.vision.depth


def _all_rules(config: ModelConfig, text_prefix: str, vision_prefix: str):
  """(full HF key template, rule) pairs for the whole model."""
  out = [(text_prefix + r.hf, r) for r in text_rules(config)]
  out += [(vision_prefix + r.hf, r) for r in vision_rules(config)]
  if not config.text.tie_word_embeddings:
    out.append(("lm_head.weight", Rule("lm_head.weight", ("text/lm_head/kernel",), _t, _t_back)))
  return out


# ----------------------------------------------------------------------------------------------
# Reading

def _index_files(path: str) -> dict[str, safetensors_io.SafetensorsFile]:
  """Map every tensor name in the checkpoint dir to its (lazily opened) file."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory {path} does not exist")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    files = sorted(set(weight_map.values()))
  else:
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    pickles = glob.glob(os.path.join(path, "*.bin")) + glob.glob(os.path.join(path, "*.pt"))
    hint = " (found pickle weights: convert them to safetensors first)" if pickles else ""
    raise FileNotFoundError(f"no .safetensors weights in {path}{hint}")
  opened = {}
  for name in files:
    full = os.path.join(path, name)
    if not os.path.exists(full):
      raise FileNotFoundError(f"{index} lists {name}, which is missing")
    opened[name] = safetensors_io.SafetensorsFile(full)
  return {k: f for f in opened.values() for k in f.keys()}


def _detect_prefix(keys, prefixes, probe: str) -> str:
  for p in prefixes:
    if any(k.startswith(p + probe) for k in keys):
      return p
  return prefixes[-1]


def _set(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _to_ours(rule: Rule, key: str, file, config, want_shapes, bad: list):
  """Transform one HF tensor; on a shape problem record it in `bad` and return None."""
  shape = file.shape(key)
  try:
    out = rule.to_ours(file.get(key), config)
  except ValueError:
    out = None
  if out is None or [tuple(o.shape) for o in out] != [tuple(w) for w in want_shapes]:
    bad.append(f"{key}: shape {shape} does not fit {[tuple(w) for w in want_shapes]} in our layout")
    return None
  return out


def load_hf(path: str, dtype="float32", config: ModelConfig | None = None):
  """(config, params) from a local HF Qwen2.5-VL checkpoint directory.

  Every tensor is cast to `dtype` (None: keep the stored dtype). Missing, unexpected or mis-shaped keys raise one ValueError
  listing all of them.
  """
  config = config or config_lib.from_hf(path)
  dtype = None if dtype is None else jnp.dtype(dtype)
  tensors = _index_files(path)
  text_prefix = _detect_prefix(tensors, _TEXT_PREFIXES, "layers.0.")
  vision_prefix = _detect_prefix(tensors, _VISION_PREFIXES, "patch_embed.")
  specs = dict(params_lib.flatten_paths(params_lib.param_specs(config), params_lib.is_spec))
  params, used, missing, bad = {}, set(), [], []
  for key, rule in _all_rules(config, text_prefix, vision_prefix):
    n = _num_layers(rule, config)
    keys = [key] if n is None else [key.format(i=i) for i in range(n)]
    absent = [k for k in keys if k not in tensors]
    missing += absent
    used.update(keys)
    want = [specs[p].shape[0 if n is None else 1:] for p in rule.ours]
    parts = [_to_ours(rule, k, tensors[k], config, want, bad) for k in keys if k not in absent]
    if absent or any(p is None for p in parts):
      continue
    for j, path_ in enumerate(rule.ours):
      arrays = [p[j] for p in parts]
      value = arrays[0] if n is None else np.stack(arrays)
      _set(params, path_, value if dtype is None else value.astype(dtype))
  unexpected = sorted(set(tensors) - used)
  if config.text.tie_word_embeddings and "lm_head.weight" in unexpected:
    unexpected.remove("lm_head.weight")  # some tied checkpoints still store the copy
  if missing or unexpected or bad:
    raise ValueError(f"checkpoint {path} does not match its config.json:\n"
                     f"  missing keys ({len(missing)}): {missing[:50]}\n"
                     f"  unexpected keys ({len(unexpected)}): {unexpected[:50]}\n"
                     f"  mis-shaped keys: {bad}")
  params_lib.check_params(params, config, source=f"checkpoint {path}")
  return config, jax.tree.map(jnp.asarray, params)


# ----------------------------------------------------------------------------------------------
# Writing

def _get(tree: dict, path: str):
  for p in path.split("/"):
    tree = tree[p]
  return tree


def hf_state_dict(params: dict, config: ModelConfig, dtype=None):
  """Yield (HF key, numpy array) in hub layout, one tensor at a time."""
  for key, rule in _all_rules(config, _TEXT_PREFIXES[1], _VISION_PREFIXES[1]):
    leaves = [_get(params, p) for p in rule.ours]
    n = _num_layers(rule, config)
    for i in ([None] if n is None else range(n)):
      arrays = [np.asarray(x if i is None else x[i]) for x in leaves]
      out = rule.to_hf(*arrays, config)
      yield (key if i is None else key.format(i=i)), (out if dtype is None else out.astype(dtype))


def _parse_size(size) -> int:
  if isinstance(size, int):
    return size
  units = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
  return int(float(size[:-2]) * units[size[-2:].upper()])


def save_hf(params: dict, config: ModelConfig, out_dir: str, dtype=None,
            extra_files_from: str | None = None, max_shard_size="5GB") -> None:
  """Write an HF checkpoint directory transformers loads (hub key layout, sharded safetensors).

  dtype: cast on write (default: keep the params' dtype). extra_files_from: a directory whose
  tokenizer / preprocessor / generation files are copied along.
  """
  params_lib.check_params(params, config)
  np_dtype = None if dtype is None else np.dtype(jnp.dtype(dtype))
  leaf_dtype = np.dtype(jax.tree.leaves(params)[0].dtype) if np_dtype is None else np_dtype
  os.makedirs(out_dir, exist_ok=True)
  limit = _parse_size(max_shard_size)
  shards, current, size = [], {}, 0
  for key, arr in hf_state_dict(params, config, np_dtype):
    if current and size + arr.nbytes > limit:
      shards.append(current)
      current, size = {}, 0
    current[key] = arr
    size += arr.nbytes
  shards.append(current)
  _write_shards(out_dir, shards)
  hf_config = config_lib.to_hf(config, dtype=str(jnp.dtype(leaf_dtype)))
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  if extra_files_from:
    for name in _EXTRA_FILES:
      src = os.path.join(extra_files_from, name)
      if os.path.exists(src):
        shutil.copyfile(src, os.path.join(out_dir, name))


def _write_shards(out_dir: str, shards: list[dict]) -> None:
  if len(shards) == 1:
    safetensors_io.write(os.path.join(out_dir, "model.safetensors"), shards[0])
    return
  weight_map, total = {}, 0
  for i, shard in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    safetensors_io.write(os.path.join(out_dir, name), shard)
    weight_map.update({k: name for k in shard})
    total += sum(a.nbytes for a in shard.values())
  index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
  with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
    json.dump(index, f, indent=2)
