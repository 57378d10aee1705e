"""Test-wide setup: 8 fake CPU devices for the sharding tests (must precede the jax import), and
the compiled programs dropped after each test module.

Every program XLA CPU compiles keeps its code in memory mappings of its own (a few hundred per
model-sized program). The full suite compiles enough programs to pass Linux's default limit of
65530 mappings per process (`vm.max_map_count`), and the next compile then crashed (segfault
or abort inside `backend_compile_and_load`, ~87% through). Clearing JAX's caches after each
module frees them: the suite peaks far below the limit.
"""

import gc
import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
  yield
  import jax  # noqa: PLC0415 (after XLA_FLAGS)
  jax.clear_caches()
  gc.collect()
