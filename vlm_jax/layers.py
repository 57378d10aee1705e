"""Stateless building blocks shared by the vision tower and the text decoder.

Axis alphabet: B batch, T query length, S key length, N query heads, K kv heads, G = N/K,
H head dim, D model dim, F MLP dim. Kernels are stored `[in, out]` (transposed from torch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Softmax masking value: finite so that a fully masked row (a padding query) gives a uniform
# distribution instead of NaN, as transformers does with `finfo.min`.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """RMSNorm in float32, cast back before the scale (transformers' order of operations)."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return scale * y.astype(x.dtype)


def dense(x: jax.Array, p: dict) -> jax.Array:
  """`x @ kernel (+ bias)` over the last axis."""
  y = jnp.einsum("...i,io->...o", x, p["kernel"])
  return y + p["bias"] if "bias" in p else y


def concat_dense(ps: list[dict]) -> dict | None:
  """Dense layers reading the same input as one: kernels [in, ...] flattened to [in, out_i] and
  concatenated along out (biases likewise); None when some have a bias and some do not."""
  biased = ["bias" in p for p in ps]
  if any(biased) and not all(biased):
    return None
  out = {"kernel": jnp.concatenate([p["kernel"].reshape(p["kernel"].shape[0], -1) for p in ps], -1)}
  if all(biased):
    out["bias"] = jnp.concatenate([p["bias"].reshape(-1) for p in ps])
  return out


def fuse_projections(p: dict) -> dict:
  """A block's params (q, k, v, mlp gate/up/down: the text layer's and the vision block's
  names) with q/k/v as one "qkv" and gate/up as one "gate_up" matmul, where `concat_dense` can."""
  out = {k: v for k, v in p.items() if k not in ("q", "k", "v")}
  qkv = concat_dense([p[n] for n in "qkv"])
  out.update({"qkv": qkv} if qkv is not None else {n: p[n] for n in "qkv"})
  mlp = p["mlp"]
  gate_up = concat_dense([mlp["gate"], mlp["up"]])
  if gate_up is not None:
    out["mlp"] = {"down": mlp["down"], "gate_up": gate_up}
  return out


def unstack_fused(stacked: dict) -> list[dict]:
  """Stacked block params [L, ...] as L per-block trees, each with `fuse_projections`."""
  num = jax.tree.leaves(stacked)[0].shape[0]
  return [fuse_projections(jax.tree.map(lambda a, i=i: a[i], stacked)) for i in range(num)]


def activation(name: str):
  """HF ACT2FN names to jax functions (`gelu` is the exact erf form)."""
  return {
      "silu": jax.nn.silu,
      "gelu": lambda x: jax.nn.gelu(x, approximate=False),
      "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
      "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
  }[name]


def gated_mlp(x: jax.Array, p: dict, act: str) -> jax.Array:
  """SwiGLU-style MLP: down(act(gate(x)) * up(x)); biases where the params have them.
  p["gate_up"] (gate and up concatenated, `text.unstack_layers`, `vision.unstack_blocks`): one
  matmul for both."""
  if "gate_up" in p:
    gate, up = jnp.split(dense(x, p["gate_up"]), 2, axis=-1)
    return dense(activation(act)(gate) * up, p["down"])
  return dense(activation(act)(dense(x, p["gate"])) * dense(x, p["up"]), p["down"])


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
              q_chunk: int | None = None) -> jax.Array:
  """Grouped-query softmax attention.

  q: [B, T, N, H]; k, v: [B, S, K, H]; mask: bool [B, T, S] (True = attend). Logits and softmax
  in float32; returns [B, T, N, H] in v's dtype. With `q_chunk`, queries are processed that many
  at a time (`lax.map`), bounding the logits to [B, N, q_chunk, S] for long sequences.
  """
  t = q.shape[1]
  if q_chunk and t > q_chunk and t % q_chunk == 0:
    qs = q.reshape(q.shape[0], t // q_chunk, q_chunk, *q.shape[2:]).swapaxes(0, 1)
    ms = mask.reshape(mask.shape[0], t // q_chunk, q_chunk, -1).swapaxes(0, 1)
    out = jax.lax.map(lambda qm: _attention(qm[0], k, v, qm[1]), (qs, ms))
    return out.swapaxes(0, 1).reshape(q.shape)
  return _attention(q, k, v, mask)


def attention_heads_major(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """`attention` over a heads-major cache: k [B, K, H, S], v [B, K, S, H] (`text` decode).

  Both matmuls then read the cache in its stored layout; over a [B, S, K, H] cache XLA made a
  transposed copy of k and of v for every layer on every decode step.
  """
  return _attention(q, k, v, mask, heads_major=True)


def _attention(q, k, v, mask, heads_major: bool = False):
  b, t, n, h = q.shape
  kv_heads = k.shape[1 if heads_major else 2]
  q = q.reshape(b, t, kv_heads, n // kv_heads, h)
  if heads_major:  # q as [B, K, G, T, H] (an einsum that transposes it was ~6% slower on CPU)
    q = q.transpose(0, 2, 3, 1, 4)
    scores, values = "BKGTH,BKHS->BKGTS", "BKGTS,BKSH->BKGTH"
  else:
    scores, values = "BTKGH,BSKH->BKGTS", "BKGTS,BSKH->BKGTH"
  logits = jnp.einsum(scores, q, k, preferred_element_type=jnp.float32)
  logits = logits * (h ** -0.5)
  logits = jnp.where(mask[:, None, None, :, :], logits, MASK_VALUE)  # mask [B, T, S]
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  # the output in the batch dims' order, then transposed: asking the einsum for [B, T, K, G, H]
  # made XLA CPU run the decode step's probs x v as a slow dot with the cache as the left
  # operand (0.49 -> 0.12 ms for 4 layers; prefill and training attention 5-44% faster too)
  out = jnp.einsum(values, probs, v).transpose(0, 3, 1, 2, 4)
  return out.reshape(b, t, n, h)
