#!/usr/bin/env bash
# Copy this checkout to every worker of a TPU VM slice and install it there, with jax[tpu], into
# ~/vlm_jax/.venv. Rerun it to push code changes (the editable install then only updates files).
# Usage: tpu_scripts/install.sh NAME [ZONE]
#   JAX_SPEC='jax[tpu]==0.10.2' pins the TPU jax (default: the newest jax[tpu] that setup.py
#   allows, resolved together with the project so pip cannot move jax off its libtpu).
# Project: gcloud's default, or CLOUDSDK_CORE_PROJECT=... in the environment.
set -euo pipefail
NAME=${1:?usage: tpu_scripts/install.sh NAME [ZONE]}; ZONE=${2:-us-central2-b}
JAX_SPEC=${JAX_SPEC:-jax[tpu]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
COPYFILE_DISABLE=1 tar -C "$ROOT" --exclude=.venv --exclude=.ci-venv --exclude=.git \
  --exclude=./runs --exclude=./out --exclude=__pycache__ --exclude=.pytest_cache \
  -czf "$TMP/vlm_jax.tgz" .
gcloud compute tpus tpu-vm scp "$TMP/vlm_jax.tgz" "$NAME":vlm_jax.tgz --zone "$ZONE" --worker=all

# The TPU runtimes (tpu-ubuntu2204-base, v2-alpha-*) are Ubuntu 22.04, whose python3 is 3.10;
# jax 0.10 (setup.py) needs 3.11+, so python3.11 comes from Ubuntu's own packages there.
read -r -d '' REMOTE <<'SCRIPT' || true
set -euo pipefail
if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY=python3 PKGS=python3-venv
else PY=python3.11 PKGS="python3.11 python3.11-venv"; fi
if ! command -v "$PY" >/dev/null || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
  sudo apt-get -qq -o DPkg::Lock::Timeout=600 update
  sudo DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600 install -y $PKGS
fi
mkdir -p ~/vlm_jax && tar -C ~/vlm_jax -xzf ~/vlm_jax.tgz && rm ~/vlm_jax.tgz && cd ~/vlm_jax
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  rm -rf .venv && "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q -U pip
.venv/bin/python -m pip install -q "$JAX_SPEC" -e ".[data,plots]"
.venv/bin/python -c 'from importlib.metadata import version as v
print(__import__("socket").gethostname(), "jax", v("jax"), "libtpu", v("libtpu"))'
SCRIPT
# Sent base64-encoded and run by bash: no quoting depends on the worker's login shell.
PAYLOAD=$(printf 'JAX_SPEC=%q\n%s\n' "$JAX_SPEC" "$REMOTE" | base64 | tr -d '\n')
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all \
  --command "echo $PAYLOAD | base64 -d | bash"
