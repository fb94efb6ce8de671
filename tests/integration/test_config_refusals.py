"""A setting or catalog the app cannot use stops devhost before any message: exit 2 and ONE
line naming the setting (or the catalog entry), its value and where the value came from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devhost.services import LocalServices
from handlers.settings import SHIPPED_CATALOG
from tests.support import REPO, AppUnderTest

pytestmark = pytest.mark.services


def refusal(app: AppUnderTest, env_extra: dict[str, str] | None = None) -> str:
    """The one ``refusing to start`` line of a drained run that must not start."""
    result = subprocess.run(
        [sys.executable, "-m", "devhost", "run", "--drain", "--settings", str(app.settings_file)],
        cwd=REPO,
        env={**app.env(), **(env_extra or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0].split("refusing to start: ", 1)[1]


def test_a_bad_value_in_the_settings_file(local_services: LocalServices, tmp_path: Path) -> None:
    app = AppUnderTest(local_services, tmp_path, {"RISK_MARGIN_CALL_RATIO": "abc"})
    said = refusal(app)
    assert said.startswith(f"RISK_MARGIN_CALL_RATIO='abc' (from {app.settings_file}): ")
    assert "must be in (0, 1)" in said
    assert app.settings["TRADES_QUEUE"] not in {q.name for q in app.queues.list_queues()}


def test_a_bad_value_from_the_environment(local_services: LocalServices, tmp_path: Path) -> None:
    app = AppUnderTest(local_services, tmp_path)
    said = refusal(app, {"MARKS_FANOUT_BATCH": "0"})
    assert said == (
        "MARKS_FANOUT_BATCH='0' (from the environment): must be an integer from 1 to 5000"
    )


def test_a_catalog_with_a_bracket_gap(local_services: LocalServices, tmp_path: Path) -> None:
    catalog = json.loads(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    catalog["instruments"][0]["brackets"][1]["notionalFloor"] = "60000"
    path = tmp_path / "gap.json"
    path.write_text(json.dumps(catalog), encoding="utf-8")
    app = AppUnderTest(local_services, tmp_path, {"INSTRUMENTS_FILE": str(path)})
    said = refusal(app)
    assert said.startswith(f"INSTRUMENTS_FILE='{path}' (from {app.settings_file}): ")
    assert "bracket 2: notionalFloor must equal the previous cap" in said


def test_a_missing_catalog_file(local_services: LocalServices, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    app = AppUnderTest(local_services, tmp_path, {"INSTRUMENTS_FILE": str(missing)})
    said = refusal(app)
    assert said.startswith(f"INSTRUMENTS_FILE='{missing}' (from {app.settings_file}): ")
    assert "cannot read the instrument catalog" in said
