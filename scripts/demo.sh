#!/usr/bin/env bash
# The main job end to end on the packaged model and data: local Kafka + MLflow, keys, ingest
# MovieLens-100K, train a sharded SmolLM2 adapter, erase a subject, certify, verify, pull.
# Runs in its own workspace (.erasure-demo, recreated each run) and stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

export ERASURE_HOME="${DEMO_HOME:-$PWD/.erasure-demo}"
ERASURE="${ERASURE:-$PWD/.venv/bin/erasure}"
MODEL=demo-recs
rm -rf "$ERASURE_HOME"
mkdir -p "$ERASURE_HOME"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Run one stage; a stage that a later issue fills in reports "not yet available" and the demo
# goes on, anything else that fails stops the demo.
stage() {
  local title=$1; shift
  say "$title"
  echo "\$ erasure $*"
  local err; err=$(mktemp)
  if "$ERASURE" "$@" 2> >(tee "$err" >&2); then rm -f "$err"; return 0; fi
  if grep -q "not implemented yet" "$err"; then
    echo "   -> not yet available in this build"; rm -f "$err"; return 0
  fi
  rm -f "$err"; return 1
}

trap '"$ERASURE" dev down >/dev/null 2>&1 || true' EXIT

stage "Start local Apache Kafka (KRaft) and MLflow" dev up
stage "Service status" dev status
stage "Create the ledger and certifier keys" keys init
stage "Ingest MovieLens-100K (TALLRec samples, encrypted per subject)" data ingest --movielens --max-users "${DEMO_USERS:-40}"
stage "Record store statistics" data stats
stage "Train a SISA adapter on SmolLM2-135M (small CPU budget)" \
  train "$MODEL" --method sisa --base smollm2-135m --shards 2 --slices 2 --epochs 1 --seed 7
stage "Components of version 1" models show "$MODEL"
stage "Evaluate (AUC next to the history-positivity heuristic)" eval "$MODEL"

SUBJECT=$("$ERASURE" data subjects --split train --json 2>/dev/null | "$PWD/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)[0])' 2>/dev/null || echo "1")
stage "Erase subject $SUBJECT: exclusion, retrain, certificates, purge" forget "$MODEL" --subject "$SUBJECT"
stage "Verify the certified version offline" verify "models:/$MODEL@certified"
stage "Pull the certified version (verifies before handing it over)" pull "models:/$MODEL@certified" --dest "$ERASURE_HOME/pulled"
stage "Check the transparency log" ledger verify
stage "Stop local services" dev down
say "Demo finished"
