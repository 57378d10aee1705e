"""Choosing a token from logits on the device: a first-index argmax, Gumbel-max sampling, and
the log-prob and entropy of the chosen token. Shared by the sampler's decode loop and the
greedy screen's fallback."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def first_index(z: jax.Array, value: jax.Array) -> jax.Array:
  """First index along the last axis where z == value[..., None] (z.shape[-1] where none)."""
  n = z.shape[-1]
  return jnp.min(jnp.where(z == value[..., None], jnp.arange(n, dtype=jnp.int32), n), -1)


def argmax(z: jax.Array, block: int = 128) -> tuple[jax.Array, jax.Array]:
  """(first index of the maximum, maximum) over the last axis of z [rows, V] (= jnp.argmax,
  which is ~4x slower on CPU). Two levels: the max of each `block` of the vocabulary, then the
  first block that holds the overall max, then the first hit inside it. One pass over z and
  no [rows, V] temporaries (a flat first-index pass materialised two on XLA CPU)."""
  rows, vocab = z.shape
  if vocab % block or vocab <= block:
    z_max = jnp.max(z, -1)
    return first_index(z, z_max), z_max
  blocks = z.reshape(rows, vocab // block, block)
  block_max = jnp.max(blocks, -1)
  z_max = jnp.max(block_max, -1)
  # clip: a row of NaNs has no hit; its token is then some valid id, as with jnp.argmax
  first = jnp.minimum(first_index(block_max, z_max), vocab // block - 1)
  inside = jnp.take_along_axis(blocks, first[:, None, None], 1)[:, 0]
  return first * block + jnp.minimum(first_index(inside, z_max), block - 1), z_max


def gumbel_max(z: jax.Array, key: jax.Array, block: int = 128) -> jax.Array:
  """A sample per row of softmax(z) (z [R, V], -inf: never), one key per row, by Gumbel-max in
  two levels: a block of `block` ids with probability its mass (Gumbel noise on the blocks'
  log-masses), then an id inside it (noise on its logits). Exact in distribution, like noise
  on all V logits, with ~V / block + block random numbers per row instead of V: threefry
  noise for 64 x 32000 logits took ~19 ms per step on the 2-core CPU, a quarter of a G = 8
  rollout."""
  rows, vocab = z.shape
  pad = -vocab % block
  if pad:
    z = jnp.pad(z, ((0, 0), (0, pad)), constant_values=-jnp.inf)
  blocks = z.reshape(rows, -1, block)
  top = jnp.max(z, -1)[:, None, None]
  log_mass = jnp.log(jnp.sum(jnp.exp(blocks - top), -1))  # [R, blocks]; -inf: empty block
  keys = jax.vmap(lambda k: jax.random.split(k))(key)
  gumbel = lambda k, n: jax.vmap(lambda kk: jax.random.gumbel(kk, (n,), jnp.float32))(k)
  b = argmax(log_mass + gumbel(keys[:, 0], log_mass.shape[1]))[0]
  inside = jnp.take_along_axis(blocks, b[:, None, None], 1)[:, 0]
  i = argmax(inside + gumbel(keys[:, 1], block))[0]
  return jnp.minimum(b * block + i, vocab - 1)  # (a NaN row: some valid id, as jnp.argmax)


def logp_entropy(z: jax.Array, token: jax.Array, z_max: jax.Array | None = None):
  """log softmax(z)[token] and the entropy of softmax(z) [rows], with one exp pass over the
  vocabulary: with d = z - max, e = exp(d), S = sum e: log p = d[token] - log S and
  H = log S - sum(e * d) / S. z_max: max(z) [rows] when already known."""
  d = z - (jnp.max(z, -1) if z_max is None else z_max)[:, None]
  e = jnp.exp(d)
  total = jnp.sum(e, -1)
  log_total = jnp.log(total)
  entropy = log_total - jnp.sum(e * d, -1) / total
  return jnp.take_along_axis(d, token[:, None], -1)[:, 0] - log_total, entropy
