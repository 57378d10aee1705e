#!/usr/bin/env bash
# Create a Cloud TPU VM slice.  Usage: tpu_scripts/create.sh NAME [ZONE] [TYPE] [VERSION] [gcloud flags...]
#   TYPE as gcloud spells it: v4-32 (default), v5litepod-16 (v5e), v5p-32, v6e-16.
#   VERSION (runtime) defaults to the one Cloud TPU lists for TYPE (cloud.google.com/tpu/docs/runtimes);
#   pass "" to keep the default and add flags after it, e.g. create.sh my-v5e us-west4-a v5litepod-16 "" --spot
# Project: gcloud's default, or CLOUDSDK_CORE_PROJECT=... in the environment.
set -euo pipefail
NAME=${1:?usage: tpu_scripts/create.sh NAME [ZONE] [TYPE] [VERSION] [gcloud flags...]}
ZONE=${2:-us-central2-b}; TYPE=${3:-v4-32}; VERSION=${4:-}
shift $(( $# < 4 ? $# : 4 ))
case "$TYPE" in
  v5e-*) echo "create.sh: TYPE $TYPE: gcloud calls v5e slices v5litepod-N (e.g. v5litepod-16)" >&2
         exit 2 ;;
esac
if [[ -z $VERSION ]]; then
  case "$TYPE" in
    v5litepod-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi
gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE" \
  --version "$VERSION" "$@"
