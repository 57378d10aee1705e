"""Test-wide setup: 8 fake CPU devices for the sharding tests (must precede the jax import), a
persistent compilation cache shared by the suite's processes, unoptimised machine code, and
the compiled programs dropped after each test module.

Most of the suite's time is XLA compiling the same tiny-model programs again (after each
module's cache clear, in other test files, in the xdist workers and subprocesses): a
compilation cache on disk, made once per pytest run by the first process and inherited by the
others through the environment, cut a run of the eval tests from 138 s to 82 s on 2 cores. It
is removed when the run ends; set JAX_COMPILATION_CACHE_DIR to keep one of your own.

Every program XLA CPU compiles keeps its code in memory mappings of its own (a few hundred per
model-sized program). The full suite compiles enough programs to pass Linux's default limit of
65530 mappings per process (`vm.max_map_count`), and the next compile then crashed (segfault
or abort inside `backend_compile_and_load`, ~87% through). Clearing JAX's caches after each
module frees them: the suite peaks far below the limit.
"""

import atexit
import gc
import os
import shutil
import tempfile

import pytest

# LLVM at -O0: the suite's programs are tiny and compiled far more often than run (the sampler
# tests: 206 s -> 159 s); what XLA computes is the same, only its machine code is slower
# (added to XLA_FLAGS a shell may already export, e.g. after the README's smoke run, unless it
# sets them itself)
_flags = os.environ.get("XLA_FLAGS", "")
for _flag in ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0"):
  if _flag.split("=")[0] + "=" not in _flags:
    _flags = f"{_flags} {_flag}".strip()
os.environ["XLA_FLAGS"] = _flags
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process of the run (xdist's
  _cache = tempfile.mkdtemp(prefix="vlm_jax_test_xla_cache_")  # controller): workers inherit it
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
  yield
  import jax  # noqa: PLC0415 (after XLA_FLAGS)
  jax.clear_caches()
  gc.collect()
