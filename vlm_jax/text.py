"""The text decoder (Qwen2; Qwen3 with `qk_norm`), a `lax.scan` over stacked layers.

KV cache (explicit, functional): {"k", "v": [L, B, S, K, H], "mask": [B, S] bool (slot holds a real
token), "end": int32 scalar (next free slot)}. A call with T new tokens writes slots
end..end+T-1 and returns the updated cache; query t may attend slot s iff s <= end + t and the
slot is a real token. Without a cache, S = T and the same rule applies with end = 0.
With per-layer params (`unstack_layers`, the decode loop) k and v are lists of per-layer caches,
heads-major: k [B, K, H, S] and v [B, K, S, H], the layouts the two attention matmuls of a step
read without a transposed copy of the cache (`layers.attention_heads_major`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlm_jax import layers, rope
from vlm_jax.config import TextConfig


def init_cache(config: TextConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
  shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
          "mask": jnp.zeros((batch, max_len), bool), "end": jnp.zeros((), jnp.int32)}


def _qkv(h, p, config: TextConfig):
  if "qkv" in p:  # fused by `unstack_layers`: one [D, (N + 2K) * H] matmul
    y = layers.dense(h, p["qkv"])
    n, k = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    split = lambda a, heads: a.reshape(*a.shape[:-1], heads, config.head_dim)
    q, k, v = (split(y[..., :n], config.num_heads), split(y[..., n:n + k], config.num_kv_heads),
               split(y[..., n + k:], config.num_kv_heads))
  else:
    q = jnp.einsum("BTD,DNH->BTNH", h, p["q"]["kernel"])
    k = jnp.einsum("BTD,DKH->BTKH", h, p["k"]["kernel"])
    v = jnp.einsum("BTD,DKH->BTKH", h, p["v"]["kernel"])
    if config.qkv_bias:
      q, k, v = q + p["q"]["bias"], k + p["k"]["bias"], v + p["v"]["bias"]
  if config.qk_norm:
    q = layers.rms_norm(q, p["q_norm"]["scale"], config.rms_norm_eps)
    k = layers.rms_norm(k, p["k_norm"]["scale"], config.rms_norm_eps)
  return q, k, v


def _write(cache: jax.Array, new: jax.Array, layer, end) -> jax.Array:
  """cache [L, B, S, K, H] with `new` [B, T, K, H] at (layer, :, end): in place on a loop carry."""
  return jax.lax.dynamic_update_slice(cache, new[None].astype(cache.dtype), (layer, 0, end, 0, 0))


def heads_major(k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """k, v [B, T, K, H] -> the per-layer cache layouts k [B, K, H, T], v [B, K, T, H]."""
  return k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)


def _write_heads_major(kv, k, v, end):
  """One layer's heads-major (k [B, K, H, S], v [B, K, S, H]) with k, v [B, T, K, H] at `end`."""
  k, v = heads_major(k.astype(kv[0].dtype), v.astype(kv[1].dtype))
  return (jax.lax.dynamic_update_slice(kv[0], k, (0, 0, 0, end)),
          jax.lax.dynamic_update_slice(kv[1], v, (0, 0, end, 0)))


def unstack_layers(stacked: dict) -> list[dict]:
  """The stacked layer params as a list of per-layer trees, with q/k/v and gate/up fused into
  one matmul each (their cache: per-layer heads-major lists, see the module doc).

  `decoder` runs a list with a Python loop instead of `lax.scan`: no per-layer dynamic slice of
  the weights, which XLA materialises as a copy on every step of a decode loop (on CPU that
  copy tripled the weight traffic of a decode step), and fewer, wider matmuls, which matters
  for the few-row matmuls of a decode step. Costs one copy of the layer weights.
  """
  return layers.unstack_fused(stacked)


def _layer(x, p, kv, layer, cos, sin, mask, end, config: TextConfig, last_only: bool = False):
  """One decoder layer -> (x, kv out). kv is None (kv out: this call's k and v [B, T, K, H]) or
  the full (k, v) cache, carried so updates are in place (kv out: the updated cache).
  last_only (without a cache): keys and values of every position, but the attention, o and MLP
  of the last position only; x out is [B, 1, D]."""
  h = layers.rms_norm(x, p["input_norm"]["scale"], config.rms_norm_eps)
  q, k, v = _qkv(h, p, config)
  q, k = rope.apply_rope(q, cos, sin), rope.apply_rope(k, cos, sin)
  if last_only:
    q, x, mask = q[:, -1:], x[:, -1:], mask[:, -1:]
  if kv is None:
    kv_out = (k, v)  # this call's keys and values (`decoder(return_kv=True)`)
    attn = layers.attention(q, k, v, mask)
  elif layer is None:  # one layer's heads-major cache
    kv_out = kv = _write_heads_major(kv, k, v, end)
    attn = layers.attention_heads_major(q, kv[0].astype(q.dtype), kv[1].astype(q.dtype), mask)
  else:
    kv_out = kv = (_write(kv[0], k, layer, end), _write(kv[1], v, layer, end))
    attn = layers.attention(q, kv[0][layer].astype(q.dtype), kv[1][layer].astype(q.dtype), mask)
  # one [N*H, D] matmul (a free reshape): contracting (N, H) as an einsum made XLA copy a
  # transposed o weight on every decode step
  o = p["o"]["kernel"]
  x = x + attn.reshape(*attn.shape[:2], -1) @ o.reshape(-1, o.shape[-1])
  if config.o_bias:
    x = x + p["o"]["bias"]
  h = layers.rms_norm(x, p["post_norm"]["scale"], config.rms_norm_eps)
  return x + layers.gated_mlp(h, p["mlp"], config.hidden_act), kv_out


def decoder(params: dict, config: TextConfig, x: jax.Array, positions: jax.Array,
            token_mask: jax.Array, cache: dict | None = None, return_kv: bool = False,
            last_only: bool = False) -> tuple[jax.Array, dict | None]:
  """x [B, T, D] embeddings -> final-normed hidden [B, T, D], updated cache.

  last_only (no cache; inference): the hidden state of the last position only, [B, 1, D]. The
  last layer then runs its attention, o and MLP for that position alone (its keys and values,
  and every earlier layer, for all positions): what a prefill or a next-token score needs,
  ~(o + MLP) / L of the decoder's FLOPs less. Not for training: the other positions' outputs
  are not computed.

  positions: [3, B, T] (M-RoPE) or [B, T]; token_mask: [B, T] bool, False for padding.
  params["layers"]: stacked (a `lax.scan`) or a list of per-layer trees with the cache's k/v as
  lists too (`unstack_layers`; a Python loop, for decode steps).
  Without a cache, return_kv=True returns {"k", "v"}: every layer's keys and values of the T
  tokens ([L, B, T, K, H], or lists of [B, T, K, H] for per-layer params), from which a
  prefill builds its cache (`decode_step.prefill`) without a cache-sized buffer per layer pass.
  """
  if last_only and cache is not None:
    raise ValueError("last_only is for cache-less calls (a prefill or a score)")
  t = x.shape[1]
  cos, sin = rope.mrope_cos_sin(positions, config.head_dim, config.rope_theta, config.mrope_section)
  end = jnp.zeros((), jnp.int32) if cache is None else cache["end"]
  if cache is None:
    slot_mask = token_mask
  else:
    slot_mask = jax.lax.dynamic_update_slice_in_dim(cache["mask"], token_mask, end, 1)
  slots = jnp.arange(slot_mask.shape[1])
  causal = slots[None, :] <= (end + jnp.arange(t))[:, None]  # [T, S]
  mask = causal[None] & slot_mask[:, None, :]
  collect = cache is None and return_kv

  def body(carry, xs):
    x, kv = carry
    p, layer = xs
    x, out = _layer(x, p, kv, layer, cos, sin, mask, end, config)
    return (x, None if kv is None else out), (out if collect else None)

  if isinstance(params["layers"], (list, tuple)):  # per-layer trees (`unstack_layers`)
    ks, vs = [], []
    for i, p in enumerate(params["layers"]):
      kv = None if cache is None else (cache["k"][i], cache["v"][i])
      last = last_only and i == len(params["layers"]) - 1
      x, out = _layer(x, p, kv, None, cos, sin, mask, end, config, last)
      ks.append(out[0])
      vs.append(out[1])
  elif last_only:  # all but the last layer by index into the stack (a scan over a [:-1] slice
    stacked = params["layers"]  # of it would copy the weights), then the pruned last layer
    def body_at(carry, i):
      return body(carry, (jax.tree.map(lambda a: a[i], stacked), i))
    (x, _), new = jax.lax.scan(body_at, (x, None), jnp.arange(config.num_layers - 1))
    last = config.num_layers - 1
    x, out = _layer(x, jax.tree.map(lambda a: a[last], stacked), None, None, cos, sin, mask,
                    end, config, last_only=True)
    if collect:
      new = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), new, out)
    ks, vs = new if collect else (None, None)
  else:
    kv = None if cache is None else (cache["k"], cache["v"])
    layer_ids = jnp.arange(config.num_layers)
    (x, kv), new = jax.lax.scan(body, (x, kv), (params["layers"], layer_ids))
    ks, vs = kv if cache is not None else (new if collect else (None, None))
  x = layers.rms_norm(x, params["norm"]["scale"], config.rms_norm_eps)
  if cache is None:
    return x, ({"k": ks, "v": vs} if collect else None)
  return x, {"k": ks, "v": vs, "mask": slot_mask, "end": end + t}


def head_weight(params: dict, config: TextConfig) -> jax.Array:
  """The LM head as [D, V] (the transposed embedding when tied)."""
  if config.tie_word_embeddings:
    return params["embed"]["embedding"].T
  return params["lm_head"]["kernel"]


def lm_head(params: dict, config: TextConfig, hidden: jax.Array) -> jax.Array:
  """hidden [..., D] -> float32 logits [..., V]."""
  return jnp.einsum("...D,DV->...V", hidden, head_weight(params, config),
                    preferred_element_type=jnp.float32)
