#!/usr/bin/env bash
# The main job end to end on the packaged model and data: local Kafka + MLflow, keys, ingest
# MovieLens-100K, train a sharded SmolLM2 adapter (certified and registered), send an erasure
# request through Kafka to the planner and executor, follow it to a certified restored version,
# erase a second subject with `erasure forget --approximate` (exclusion, an APPROXIMATE influence
# update, then the exact retrain that supersedes it), verify and pull it as an auditor and a
# consumer would, check the ledger, and stop everything.
# Runs in its own workspace (.erasure-demo, recreated each run) and stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

export ERASURE_HOME="${DEMO_HOME:-$PWD/.erasure-demo}"
ERASURE="${ERASURE:-$PWD/.venv/bin/erasure}"
PY="$PWD/.venv/bin/python"
MODEL=demo-recs
rm -rf "$ERASURE_HOME"
mkdir -p "$ERASURE_HOME"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { echo "\$ erasure $*"; "$ERASURE" "$@"; }

SERVE_PID=""
cleanup() {
  if [ -n "$SERVE_PID" ]; then kill -TERM "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
  "$ERASURE" dev down >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "Start local Apache Kafka (KRaft) and MLflow"
run dev up
run dev status

say "Keys: ledger and certifier (0600, never committed); a trust file for auditors"
run keys init
run keys trust --out "$ERASURE_HOME/trust.json"

say "Ingest MovieLens-100K from the recbole wheel (TALLRec samples, encrypted per subject)"
run data ingest --movielens --max-users "${DEMO_USERS:-60}" --per-user "${DEMO_PER_USER:-2}"
run data stats

say "Train SISA on SmolLM2-135M (2 shards x 2 slices, small CPU budget): certified and registered"
run train "$MODEL" --method sisa --base smollm2-135m --shards 2 --slices 2 --epochs 1 --seed 7
run eval "$MODEL"

say "Start the planner and executor (erasure serve)"
"$ERASURE" serve --role all --window 1 > "$ERASURE_HOME/serve.log" 2>&1 &
SERVE_PID=$!
echo "serve pid $SERVE_PID, log $ERASURE_HOME/serve.log"

SUBJECT=$("$ERASURE" data subjects --split train --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0])')
say "A data platform asks to erase subject $SUBJECT (Kafka topic erasure.requests)"
REQUEST=$(run request erase --subject "$SUBJECT" --model "$MODEL" --requester demo | tail -1)
echo "request id: $REQUEST"

say "Follow the request: exact exclusion within seconds, then the coalesced retrain"
for _ in $(seq 1 360); do
  STAGE=$("$ERASURE" status "$REQUEST" --json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("stage",""))' 2>/dev/null || true)
  case "$STAGE" in restored|done|rejected|failed) break ;; esac
  sleep 2
done
run status "$REQUEST"
if [ "$STAGE" != "restored" ]; then echo "request ended in stage '$STAGE'; serve log:"; tail -20 "$ERASURE_HOME/serve.log"; exit 1; fi

SECOND=$("$ERASURE" data subjects --split train --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[1])')
say "Erase subject $SECOND synchronously, with an APPROXIMATE influence update before the retrain"
run forget "$MODEL" --subject "$SECOND" --approximate

say "An auditor verifies the certified version with nothing but the trust file and the ledger"
run verify "models:/$MODEL@certified" --trust "$ERASURE_HOME/trust.json" --state "$ERASURE_HOME/auditor"

say "A consumer pulls it: resolve once, pin, download, verify, then hand over"
run pull "models:/$MODEL@certified" --dest "$ERASURE_HOME/pulled"
run eval "$MODEL"

say "The transparency log: recompute everything, check consistency with the last audit"
run ledger verify --trust "$ERASURE_HOME/trust.json"

say "Stop the consumers and the local services"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=""
run dev down
say "Demo finished"
