"""Segment attention (the vision tower's window / full attention) against dense per-segment
attention, with and without query chunking, and the block-run split of the tower."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlm_jax import vision


def _dense(q, k, v, segments):
  out = []
  for seg in segments:
    logits = jnp.einsum("lnh,mnh->nlm", q[seg], k[seg]) / np.sqrt(q.shape[-1])
    out.append(jnp.einsum("nlm,mnh->lnh", jax.nn.softmax(logits, -1), v[seg]))
  return jnp.concatenate(out)


@pytest.mark.parametrize("q_chunk", [1024, 96, 128])
def test_segment_attention_equals_dense_per_segment(q_chunk):
  rng = np.random.default_rng(0)
  p, n, h = 700, 2, 8
  q, k, v = (jnp.asarray(rng.standard_normal((p, n, h)), jnp.float32) for _ in range(3))
  slots = np.full((3, 512), p)  # the third row is all padding (a bucketed empty segment)
  slots[0, :300] = np.arange(300)
  slots[1, :400] = np.arange(300, 700)
  inverse = np.concatenate([np.arange(300), 512 + np.arange(400)])
  got = vision.segment_attention(q, k, v, jnp.asarray(slots), jnp.asarray(inverse), q_chunk)
  want = _dense(q, k, v, [np.arange(300), np.arange(300, 700)])
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_block_runs_cover_every_block_once():
  assert vision._runs(8, (3, 7)) == [(0, 3, False), (3, 4, True), (4, 7, False), (7, 8, True)]
  assert vision._runs(4, ()) == [(0, 4, False)]
  assert vision._runs(3, (0, 1, 2)) == [(0, 3, True)]
