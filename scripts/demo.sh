#!/usr/bin/env bash
# Set up, start the local services (Azurite, the Cosmos server), tell the demo's story
# (demo/story.py: each step sends a file of demo/ with `devhost send`, processes it with
# `devhost run --drain` and shows what happened), print where the positions and alerts
# ended, and stop the services again (unless they were already running). See docs/demo.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
export PYTHONWARNINGS=ignore
mkdir -p .run/demo
if $PY -m devhost services status >/dev/null 2>&1; then
  echo "demo: using the local services already running (left running)"
else
  $PY -m devhost services start >/dev/null 2>.run/demo/services.log || { cat .run/demo/services.log >&2; exit 1; }
  trap '$PY -m devhost services stop 2>>.run/demo/services.log || cat .run/demo/services.log >&2' EXIT
  echo "demo: started Azurite and the Cosmos server (stopped at the end)"
fi
echo
$PY -m demo.story
