#!/usr/bin/env bash
# Set up, then run every check CI runs: lint, format, types, schema freshness, and the
# whole test suite (unit, functional, integration and e2e; the tests start Azurite and the
# Cosmos server on free ports and stop them by process group). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== schemas"; .venv/bin/python -m handlers.schemas --check
echo "== pytest"; .venv/bin/python -m pytest "$@"
