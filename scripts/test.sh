#!/usr/bin/env bash
# Set up, then run every check CI runs: lint, format, types, schema freshness, the offline
# infrastructure check (checkov on infra/, in its own venv), and the
# whole test suite (unit, functional, integration and e2e; the tests start Azurite and the
# Cosmos server on free ports and stop them by process group). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== schemas"; .venv/bin/python -m handlers.schemas --check
echo "== checkov"; bash scripts/checkov.sh
echo "== pytest"; .venv/bin/python -m pytest "$@"
