"""One process of the 2-process test (test_multiprocess.py): sharded forward and sampling.

Usage: python -m tests.vlm_jax.multiprocess_worker PROCESS_ID PORT CHECKPOINT OUT_DIR
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")  # run_processes sets it

import jax  # noqa: E402
import numpy as np  # noqa: E402


def main():
  process_id, port, path, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
  import vlm_jax
  from vlm_jax import sharding
  from vlm_jax.sampler import Sampler, SamplingParams
  from tests.vlm_jax import hf_models
  from tests.vlm_jax.test_multiprocess import BATCH
  assert jax.device_count() == 4 and jax.local_device_count() == 2
  mesh = sharding.parse_mesh("data=2,tensor=2")
  config, params = vlm_jax.load_hf(path, mesh=mesh)
  batch = hf_models.build_batch(BATCH, config.vision.patch_dim)
  logits = sharding.to_host(vlm_jax.forward(params, config, **batch, mesh=mesh))
  # a large array comes over in slices (here 4 KB: many); the same array as in one gather
  embed = params["text"]["embed"]["embedding"]
  assert not embed.is_fully_addressable
  np.testing.assert_array_equal(sharding.to_host(embed, chunk_bytes=4096),
                                sharding.to_host(embed, chunk_bytes=2**40))
  out = Sampler(params, config, pad_id=0, mesh=mesh)(batch, SamplingParams(max_new_tokens=8, n=2))
  np.savez(os.path.join(out_dir, f"process{process_id}.npz"), logits=logits, tokens=out.tokens,
           logprobs=out.logprobs)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
