"""Where a sampled row stops: stop token ids and stop strings, as the decode loop checks them
(fixed-shape, bucketed tables, so other stops of similar size reuse the compiled decode) and as
the host cuts the text afterwards (a stop string can arrive inside other token splits)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vlm_jax import buckets


def hit(tail, stop_seqs, stop_ids, token):
  """Did `token` end a stop sequence (right-aligned, -1 = wildcard) or is it a stop id?"""
  seq_hit = jnp.all((tail[:, None, :] == stop_seqs[None]) | (stop_seqs[None] < 0), -1)
  seq_hit = jnp.any(seq_hit & jnp.any(stop_seqs >= 0, -1)[None], -1)
  return seq_hit | jnp.any(token[:, None] == stop_ids[None, :], -1)


def stop_ids(ids) -> np.ndarray:
  """Stop token ids padded with -3 (never sampled) to a bucketed count (no recompile)."""
  ids = [int(i) for i in ids]
  return np.array(ids + [-3] * (buckets.bucket(len(ids), 4) - len(ids)), np.int32)


def stop_sequences(processor, stop_strings) -> np.ndarray:
  """Token sequences of the stop strings, right-aligned in [S, L] with -1 padding."""
  seqs = []
  if stop_strings:
    if processor is None:
      raise ValueError("stop_strings need a processor (tokenizer)")
    for s in stop_strings:
      seqs.append(processor.tokenizer.encode(s, add_special_tokens=False))
  # bucketed counts and widths: other stop strings of similar size reuse the compiled decode
  width = buckets.bucket(max([len(s) for s in seqs] + [1]), 4)
  out = np.full((buckets.bucket(len(seqs), 2), width), -1, np.int32)
  for i, s in enumerate(seqs):
    out[i, width - len(s):] = s
  return out


def cut_at_stop_string(processor, row, length: int, sampling) -> tuple[int, str, bool]:
  """(length, text, hit) of a generated row under `sampling`'s stop strings and ids."""
  if processor is None:
    return length, "", False
  # a special stop token (eos, <|im_end|>) has no text; others (e.g. ".") keep theirs, as
  # transformers' decode(skip_special_tokens=True) and vLLM give
  special = set(getattr(processor.tokenizer, "all_special_ids", None) or ())
  dropped = {int(t) for t in sampling.stop_token_ids or () if int(t) in special}
  decode = lambda k: processor.decode([int(t) for t in row[:k] if int(t) not in dropped])
  text_full = decode(length)
  cuts = [text_full.find(s) + len(s) for s in sampling.stop_strings if s in text_full]
  if not cuts:
    return length, text_full, False
  end = min(cuts)
  # the first prefix whose text holds the cut (a prefix that ends inside a multi-byte
  # character decodes to U+FFFD, as long as the character but not equal to it); "holds the
  # cut" only turns from false to true as the prefix grows, so a binary search finds it in
  # log2(length) decodes (a scan of every prefix took seconds a row at 2000 tokens)
  lo, hi = 1, length
  while lo < hi:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if decode(mid).startswith(text_full[:end]) else (mid + 1, hi)
  return lo, text_full[:end], True
