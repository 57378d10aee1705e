#!/bin/bash
# The benchmarks that need an accelerator, each under its own time limit, in one call (device
# time is scarce). Logs go to $OUT/<name>.log (default bench/out/).
#   bash bench/gpu.sh                       # all of them (~9 minutes on an H200)
#   bash bench/gpu.sh logprobs decode_7b    # some: logprobs decode_7b sampler tests train_step_7b
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
PY=${PYTHON:-python3}
STEPS=${*:-logprobs decode_7b sampler tests train_step_7b}
run() {  # name, seconds, command...
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  case " $STEPS " in *" ${name%%.*} "*) ;; *) return ;; esac
  echo "=== $name: $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -i "warn\|^\s*$\|Writing model shards" "$OUT/$name.log" | tail -n 40
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
$PY -c "import jax, flax, optax, torch, transformers; print('jax', jax.__version__, jax.devices(), \
'flax', flax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
# In priority order: a call cut short keeps the most wanted results (each log is written as
# it goes). The log-prob runs compare the two gradient sweeps at chunk_t 256 and 512 (RESULTS.md:
# the "sequence" sweep's [D, V] gradient update is memory-bound below ~1000 tokens per chunk).
LP="$PY bench/logprobs.py --chunk-t 256,512 --sweep sequence,vocab --runs 10"
run logprobs.d3584 100 $LP --d 3584
run logprobs.d512 70 $LP --d 512
run decode_7b 180 $PY bench/decode.py --preset 7b --batch 1,16,64 --runs 2 --unstack yes --hf
run logprobs.d3584bf16 60 $LP --d 3584 --dtype bfloat16
# float32 parity with torch (the script turns torch's TF32 off)
run sampler 90 env JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_PREALLOCATE=false \
  $PY bench/sampler.py --runs 3
run tests 200 env JAX_DEFAULT_MATMUL_PRECISION=highest $PY -m pytest -q -p no:cacheprovider \
  --tb=short -rfE tests/vlm_jax/test_random_configs.py tests/vlm_jax/test_logprobs.py \
  tests/vlm_jax/test_model_parity.py tests/vlm_jax/test_sampler.py \
  tests/vlm_jax/test_token_choice.py
run train_step_7b 120 $PY bench/train_step.py --preset 7b --layers 8 --batch 8 --prompt 512 \
  --response 512 --dtype bfloat16 --peak-tflops 989 --runs 3
