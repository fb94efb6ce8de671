#!/usr/bin/env bash
# Set up, start the local services, send the demo events through Azurite, process them with
# devhost (the local Functions host) into the Cosmos server, print the alerts and the
# account state, and stop the services again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
export PYTHONWARNINGS=ignore
$PY -m devhost services start
trap '$PY -m devhost services stop' EXIT
for step in demo/01-deposits.jsonl demo/02-marks.jsonl demo/03-trades.jsonl; do
  echo "== send $step, then devhost run --drain"
  $PY -m devhost send "$step"
  $PY -m devhost run --drain
done
echo "== alerts"
$PY -m devhost alerts
echo "== account state"
$PY -m devhost accounts
