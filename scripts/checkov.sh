#!/usr/bin/env bash
# The offline infrastructure check: checkov on infra/ (it parses Bicep itself; no bicep CLI,
# no network, no API key). Fails on any failed check and on any file checkov could not
# parse (checkov itself only counts those). Skips are allowed only inline in the Bicep, each
# with its reason (`#checkov:skip=CKV_...:why`).
#
# checkov lives in its own venv, .venv-checkov/ (CHECKOV_VENV), built from
# requirements-checkov.txt and rebuilt only when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CHECKOV_VENV:-.venv-checkov}
stamp=$venv/.requirements.sha256
want=$(sha256sum requirements-checkov.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/checkov" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  PY=${PYTHON:-}
  if [ -z "$PY" ]; then
    for candidate in python3.11 python3 python; do
      if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
    done
  fi
  echo "checkov: installing $(grep -v '^#' requirements-checkov.txt | tr '\n' ' ')into $venv"
  "$PY" -m venv --clear "$venv"
  mkdir -p .run
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r requirements-checkov.txt > .run/checkov-install.log 2>&1; then
    cat .run/checkov-install.log >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

out=.run/checkov
mkdir -p "$out"
status=0
"$venv/bin/checkov" --directory "${INFRA_DIR:-infra}" --framework bicep --skip-download \
  --output json > "$out/results.json" || status=$?
"$venv/bin/python" - "$out/results.json" "$status" <<'PY'
import json
import sys

path, status = sys.argv[1], int(sys.argv[2])
data = json.load(open(path, encoding="utf-8"))
reports = data if isinstance(data, list) else [data]
summary = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0}
failed, unparsed, skipped = [], [], []
for report in reports:
    if "summary" not in report:  # no Bicep resources at all
        continue
    for key in summary:
        summary[key] += int(report["summary"].get(key, 0))
    results = report.get("results", {})
    failed += [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in results.get("failed_checks", [])]
    skipped += [f"{c['check_id']} {c['resource']}: {c.get('check_result', {}).get('suppress_comment', '')}" for c in results.get("skipped_checks", [])]
    unparsed += list(results.get("parsing_errors", []))
print(
    "checkov (bicep): {passed} passed, {failed} failed, {skipped} skipped, "
    "{parsing_errors} parsing errors, {resource_count} resources".format(**summary)
)
for line in skipped:
    print("  skipped", line)
for line in failed:
    print("  FAILED", line)
for line in unparsed:
    print("  NOT PARSED", line)
ok = summary["resource_count"] > 0 and not failed and not unparsed and status in (0, 1)
sys.exit(0 if ok else 1)
PY
