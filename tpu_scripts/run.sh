#!/usr/bin/env bash
# Run one command on every worker at once (SPMD), in ~/vlm_jax with its venv active, e.g.
#   tpu_scripts/run.sh NAME us-central2-b python -m evals.run --distributed --mesh 4x4 ...
# Each argument reaches the workers as it is here (spaces and quotes kept); a '~/...' that you
# quote means the worker's home (unquoted, your shell expands it to your own home first).
# Environment variables: put them in the command (`env XLA_FLAGS=... python ...`); for a shell
# snippet use `bash -c '...'`. Each worker's output is also written to
# ~/vlm_jax/logs/<time>-<host>.log; DETACH=1 starts the command under nohup and returns at once
# (for long runs that must outlive this ssh session; follow them with `tail -f` on that log).
set -euo pipefail
NAME=${1:?usage: tpu_scripts/run.sh NAME ZONE COMMAND...}; ZONE=${2:?zone}; shift 2
(( $# )) || { echo "usage: tpu_scripts/run.sh NAME ZONE COMMAND..." >&2; exit 2; }
CMD=""
for arg in "$@"; do
  q=$(printf '%q' "$arg")
  [[ $arg == "~/"* ]] && q="~/${q#\\~/}"  # a quoted leading ~/ : the worker's home
  CMD+="$q "
done
read -r -d '' REMOTE <<'SCRIPT' || true
set -euo pipefail
cd ~/vlm_jax && . .venv/bin/activate && mkdir -p logs
LOG=logs/$RUN_ID-$(hostname).log
if [[ $DETACH == 1 ]]; then
  nohup bash -c "$CMD" >"$LOG" 2>&1 </dev/null &
  echo "$(hostname): started (pid $!), log ~/vlm_jax/$LOG"
else
  bash -c "$CMD" 2>&1 | tee "$LOG"  # pipefail: the command's exit status
fi
SCRIPT
PAYLOAD=$(printf 'CMD=%q\nRUN_ID=%q\nDETACH=%q\n%s\n' "$CMD" "$(date +%Y%m%d-%H%M%S)-$$" \
  "${DETACH:-0}" "$REMOTE" | base64 | tr -d '\n')
# base64: the command reaches bash on every worker intact, whatever its login shell
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all \
  --command "echo $PAYLOAD | base64 -d | bash"
