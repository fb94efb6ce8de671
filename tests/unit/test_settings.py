"""Settings read by the app (handlers.settings) and the load-time check of settings and
catalog (a configuration the app cannot use stops it loading, naming what was wrong)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers import bootstrap, entrypoints
from handlers.errors import ConfigurationError
from handlers.settings import SHIPPED_CATALOG, fanout_queue_expression, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_fanout_queue_defaults_to_the_marks_queue_with_a_suffix() -> None:
    assert load_settings({}).marks_fanout_queue == "marks-fanout"
    assert load_settings({"MARKS_QUEUE": "mk-1"}).marks_fanout_queue == "mk-1-fanout"
    named = {"MARKS_QUEUE": "mk-1", "MARKS_FANOUT_QUEUE": "shared-fanout"}
    assert load_settings(named).marks_fanout_queue == "shared-fanout"


def test_the_fanout_trigger_names_a_setting_that_is_always_there() -> None:
    assert fanout_queue_expression({}) == "%MARKS_QUEUE%-fanout"
    assert fanout_queue_expression({"MARKS_FANOUT_QUEUE": " "}) == "%MARKS_QUEUE%-fanout"
    assert fanout_queue_expression({"MARKS_FANOUT_QUEUE": "f"}) == "%MARKS_FANOUT_QUEUE%"


def test_the_fanout_batch_is_bounded() -> None:
    assert load_settings({}).marks_fanout_batch == 200
    assert load_settings({"MARKS_FANOUT_BATCH": "5000"}).marks_fanout_batch == 5000
    for bad in ("0", "5001", "-1", "1.5", "many"):
        with pytest.raises(ConfigurationError, match="MARKS_FANOUT_BATCH"):
            load_settings({"MARKS_FANOUT_BATCH": bad})


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("RISK_MARGIN_CALL_RATIO", "abc", "must be in (0, 1)"),
        ("RISK_MARGIN_CALL_RATIO", "1.5", "must be in (0, 1)"),
        ("RISK_MARGIN_CALL_RATIO", "0", "must be in (0, 1)"),
        ("STALE_MARK_AFTER_SECONDS", "-1", "integer from 1"),
        ("MARK_CACHE_SECONDS", "99", "from 0 to 60 seconds"),
        ("MARKS_FANOUT_BATCH", "0", "integer from 1 to 5000"),
        ("RISK_LARGE_TRADE_NOTIONAL", "USDT=5", "bad entry"),
        ("RISK_POSITION_LIMIT_NOTIONAL", "USDT:-1", "the amount must be > 0"),
        ("TRADES_QUEUE", "Trades_Q", "a queue name is"),
        ("MARKS_QUEUE", "mk", "a queue name is"),
        ("MARKS_FANOUT_QUEUE", "a--b", "a queue name is"),
        ("COSMOS_ENDPOINT", "http://127.0.0.1:8081/", "https endpoint"),
        ("AZURE_SDK_LOG_LEVEL", "LOUD", "must be one of"),
    ],
)
def test_a_bad_setting_is_refused_naming_it_and_its_value(
    setting: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings({setting: value})
    assert str(refused.value).startswith(f"{setting}='{value}'")
    assert says in str(refused.value)
    assert (refused.value.setting, refused.value.value) == (setting, value)


GOOD = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "COSMOS_ENDPOINT": "https://h:1/"}


@pytest.fixture
def clean_config() -> Iterator[None]:
    bootstrap.reset()
    yield
    bootstrap.reset()


def configured(monkeypatch: pytest.MonkeyPatch, **settings: str) -> str:
    """The message of the ConfigurationError the app's load raises with ``settings``."""
    for name in ("AzureWebJobsStorage", "COSMOS_ENDPOINT", "INSTRUMENTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        entrypoints.check_configuration()
    return str(refused.value)


@pytest.mark.usefixtures("clean_config")
def test_the_app_refuses_to_load_without_cosmos_or_storage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_cosmos = {k: v for k, v in GOOD.items() if k != "COSMOS_ENDPOINT"}
    assert configured(monkeypatch, **no_cosmos).startswith("COSMOS_ENDPOINT: is not set")
    no_storage = {k: v for k, v in GOOD.items() if k != "AzureWebJobsStorage"}
    assert configured(monkeypatch, **no_storage).startswith("AzureWebJobsStorage: is not set")


@pytest.mark.usefixtures("clean_config")
def test_the_app_refuses_a_catalog_it_cannot_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.json"
    said = configured(monkeypatch, **GOOD, INSTRUMENTS_FILE=str(missing))
    assert said.startswith(f"INSTRUMENTS_FILE='{missing}': cannot read the instrument catalog")
    catalog = json.loads(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    catalog["instruments"][0]["brackets"][1]["notionalFloor"] = "60000"  # a gap after 50000
    gap = tmp_path / "gap.json"
    gap.write_text(json.dumps(catalog), encoding="utf-8")
    said = configured(monkeypatch, **GOOD, INSTRUMENTS_FILE=str(gap))
    assert said.startswith(f"INSTRUMENTS_FILE='{gap}': ")
    assert "bracket 2: notionalFloor must equal the previous cap" in said


def test_importing_the_app_with_a_bad_setting_fails_as_the_worker_indexes_it() -> None:
    """The worker imports function_app to index it: the error is the import's."""
    env = {**os.environ, **GOOD, "RISK_MARGIN_CALL_RATIO": "abc", "PYTHONWARNINGS": "ignore"}
    probe = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode != 0
    last = probe.stderr.strip().splitlines()[-1]
    assert last.startswith("handlers.errors.ConfigurationError: RISK_MARGIN_CALL_RATIO='abc'")
