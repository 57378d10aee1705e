#!/usr/bin/env bash
# Create a Cloud TPU VM slice.  Usage: tpu_scripts/create.sh NAME [ZONE] [TYPE] [VERSION]
set -euo pipefail
NAME=${1:?name}; ZONE=${2:-us-central2-b}; TYPE=${3:-v4-32}; VERSION=${4:-tpu-ubuntu2204-base}
gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE" --version "$VERSION"
