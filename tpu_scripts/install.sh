#!/usr/bin/env bash
# Copy this checkout to every worker and install it with jax[tpu].
# Usage: tpu_scripts/install.sh NAME [ZONE]
set -euo pipefail
NAME=${1:?name}; ZONE=${2:-us-central2-b}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
tar -C "$ROOT" --exclude=.venv --exclude=.git --exclude=runs -czf /tmp/vlm_jax.tgz .
gcloud compute tpus tpu-vm scp /tmp/vlm_jax.tgz "$NAME":~/vlm_jax.tgz --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command \
  'mkdir -p ~/vlm_jax && tar -C ~/vlm_jax -xzf ~/vlm_jax.tgz && cd ~/vlm_jax &&
   python3 -m venv .venv && . .venv/bin/activate && pip install -q -U pip &&
   pip install -q "jax[tpu]" && pip install -q -e ".[data,plots]"'
