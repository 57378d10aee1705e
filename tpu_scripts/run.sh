#!/usr/bin/env bash
# Run one command on every worker at once (SPMD), e.g.
#   tpu_scripts/run.sh NAME us-central2-b python -m evals.run --distributed --mesh 4x4 ...
set -euo pipefail
NAME=${1:?name}; ZONE=${2:?zone}; shift 2
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command \
  "cd ~/vlm_jax && . .venv/bin/activate && $*"
