"""handlers.observability: the log context on every record, and Azure Monitor only when
configured (never breaking start-up when the package is missing or fails)."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from handlers import observability
from tests.events import as_body, load_event

from .fakes import Capture
from .fakes import FakeContext as Ctx

CONN = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://example.invalid/"


@pytest.fixture
def capture() -> Iterator[Capture]:
    observability.reset()
    observability.configure({})
    handler = Capture()
    log = logging.getLogger("tradeguard.test")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        observability.reset()


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: record.__dict__[k] for k in observability.FIELDS if k in record.__dict__}


log = logging.getLogger("tradeguard.test")


# --- identify --------------------------------------------------------------------------


def test_identify_a_fill_in_base64_and_raw_json() -> None:
    fill = load_event("fill_btcusdt_long")
    want = {"eventId": "T-BTC-0001", "accountId": "acct-0001", "correlationId": "corr-btc-0001"}
    assert observability.identify(as_body(fill)) == want
    assert observability.identify(as_body(fill, base64=False)) == want


def test_identify_a_transfer_a_mark_and_a_batch() -> None:
    transfer = load_event("transfer_deposit_usdt")
    ids = observability.identify(as_body(transfer))
    assert ids["eventId"] == transfer["transferId"]
    assert ids["accountId"] == transfer["accountId"]
    assert observability.identify(as_body(load_event("mark_btcusdt"))) == {
        "eventId": "BTCUSDT@2024-10-01T12:30:00.000Z"
    }
    assert observability.identify(as_body(load_event("marks_batch"))) == {}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json, not base64!",
        b"{broken",
        b"[1,2,3]",
        b'{"a":1,"a":2}',
        b"{" + b" " * (70 * 1024) + b"}",
    ],
)
def test_identify_never_raises_and_finds_nothing_in_bad_bodies(raw: bytes) -> None:
    assert observability.identify(raw) == {}


def test_identify_keeps_only_well_formed_ids() -> None:
    fill = load_event("fill_btcusdt_long")
    fill["tradeId"] = "x" * 65
    fill["accountId"] = "has space"
    fill["correlationId"] = "sha256:" + "0" * 64
    assert observability.identify(as_body(fill)) == {}
    fill["accountId"] = "acct-1"
    fill["transferId"] = "TR-1"  # a FILL's id is its tradeId; this one is the fallback
    assert observability.identify(as_body(fill)) == {"eventId": "TR-1", "accountId": "acct-1"}


# --- the log context -------------------------------------------------------------------


def test_records_of_an_invocation_carry_its_ids(capture: Capture) -> None:
    body = as_body(load_event("fill_btcusdt_long"))
    with observability.invocation(
        "on_trade", Ctx("inv-1"), message_id="m-1", dequeue_count=2, body=body
    ):
        log.info("inside")
    log.info("outside")
    inside, outside = capture.records
    assert fields_of(inside) == {
        "invocationId": "inv-1",
        "functionName": "on_trade",
        "messageId": "m-1",
        "dequeueCount": 2,
        "eventId": "T-BTC-0001",
        "accountId": "acct-0001",
        "correlationId": "corr-btc-0001",
    }
    assert fields_of(outside) == {}


def test_bound_ids_win_over_the_body_and_none_keeps_what_is_known(capture: Capture) -> None:
    body = as_body(load_event("fill_btcusdt_long"))
    with observability.invocation("on_trade", Ctx("inv-2"), body=body):
        with observability.bound(event_id="rejection:x", account_id=None, correlation_id="c-9"):
            log.info("outcome")
        log.info("after")
    outcome, after = capture.records
    assert fields_of(outcome)["eventId"] == "rejection:x"
    assert fields_of(outcome)["accountId"] == "acct-0001"
    assert fields_of(outcome)["correlationId"] == "c-9"
    assert fields_of(after)["eventId"] == "T-BTC-0001"


def test_unknown_ids_are_absent_never_none(capture: Capture) -> None:
    with observability.invocation("on_trade", None, body=b"garbage"):
        log.info("x")
    (record,) = capture.records
    assert fields_of(record) == {"functionName": "on_trade"}
    assert all(record.__dict__.get(name) is not None for name in fields_of(record))


def test_the_body_is_identified_lazily_and_once(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = observability.identify

    def counting(raw: bytes) -> dict[str, str]:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(observability, "identify", counting)
    body = as_body(load_event("fill_btcusdt_long"))
    with observability.invocation("on_trade", Ctx("i"), body=body):
        log.debug("first")
        log.info("second")
    assert len(calls) == 1
    quiet = logging.getLogger("tradeguard.quiet")
    quiet.setLevel(logging.WARNING)
    with observability.invocation("on_trade", Ctx("j"), body=body):
        quiet.info("never created")
    assert len(calls) == 1


def test_concurrent_invocations_keep_their_own_ids(capture: Capture) -> None:
    async def one(n: int) -> None:
        body = as_body({**load_event("fill_btcusdt_long"), "tradeId": f"T-{n}"})
        with observability.invocation("on_trade", Ctx(f"inv-{n}"), body=body):
            await asyncio.sleep(0.001 * (5 - n))
            log.info("done %d", n)

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(5)))

    asyncio.run(main())
    seen = {(r.__dict__["invocationId"], r.__dict__["eventId"]) for r in capture.records}
    assert seen == {(f"inv-{n}", f"T-{n}") for n in range(5)}


def test_a_broken_scope_never_breaks_logging(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(raw: bytes) -> dict[str, str]:
        raise RuntimeError("identify failed")

    monkeypatch.setattr(observability, "identify", boom)
    with observability.invocation("on_trade", Ctx("k"), body=b"{}"):
        log.info("still logged")
    assert [r.getMessage() for r in capture.records] == ["still logged"]


def test_reset_restores_the_record_factory() -> None:
    observability.reset()
    before = logging.getLogRecordFactory()
    observability.configure({})
    assert logging.getLogRecordFactory() is not before
    observability.configure({})  # idempotent
    observability.reset()
    assert logging.getLogRecordFactory() is before


# --- Azure Monitor ---------------------------------------------------------------------


@pytest.fixture
def fake_distro(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A stand-in ``azure.monitor.opentelemetry`` that records its calls and adds a root
    handler the way the real one does."""
    calls: list[dict[str, Any]] = []
    added: list[logging.Handler] = []

    def configure_azure_monitor(**kwargs: Any) -> None:
        calls.append(kwargs)
        handler = Capture()
        added.append(handler)
        logging.getLogger(kwargs.get("logger_name", "")).addHandler(handler)

    module = types.ModuleType("azure.monitor.opentelemetry")
    module.configure_azure_monitor = configure_azure_monitor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", module)
    observability.reset()
    try:
        yield calls
    finally:
        observability.reset()
        for handler in added:
            logging.getLogger().removeHandler(handler)


def test_no_connection_string_no_telemetry(fake_distro: list[dict[str, Any]]) -> None:
    observability.configure({})
    observability.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "})
    assert fake_distro == []


def test_connection_string_starts_azure_monitor_once(fake_distro: list[dict[str, Any]]) -> None:
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN}
    observability.configure(env)
    observability.configure(env)
    (call,) = fake_distro
    assert call["connection_string"] == CONN
    assert call["logger_name"] == ""
    assert "credential" not in call
    options = call["instrumentation_options"]
    assert options["requests"] == {"enabled": False}
    assert "azure_sdk" not in options  # Cosmos and queue calls stay traced


def test_the_exported_handler_takes_app_records_and_others_warnings(
    fake_distro: list[dict[str, Any]],
) -> None:
    observability.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN})
    (exported,) = [h for h in logging.getLogger().handlers if isinstance(h, Capture)]
    assert isinstance(exported, Capture)
    with observability.invocation("on_trade", Ctx("inv-x")):
        for name, level in [
            ("tradeguard", logging.INFO),
            ("handlers.service", logging.INFO),
            ("azure.core.pipeline.policies.http_logging_policy", logging.INFO),
            ("azure.cosmos", logging.WARNING),
            ("azure.monitor.opentelemetry.exporter", logging.ERROR),
        ]:
            logger = logging.getLogger(name)
            old = logger.level
            logger.setLevel(logging.DEBUG)
            try:
                logger.log(level, "from %s", name)
            finally:
                logger.setLevel(old)
    names = [r.name for r in exported.records]
    assert names == ["tradeguard", "handlers.service", "azure.cosmos"]
    assert all(r.__dict__["invocationId"] == "inv-x" for r in exported.records)


@pytest.mark.parametrize(
    ("auth", "client_id"),
    [
        ("ClientId=1111-2222;Authorization=AAD", "1111-2222"),
        (" authorization = aad ", None),
        ("Authorization=Key", "not used"),
    ],
)
def test_entra_id_authentication_uses_the_managed_identity(
    fake_distro: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    auth: str,
    client_id: str | None,
) -> None:
    import azure.identity

    made: list[dict[str, Any]] = []

    class FakeCredential:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", FakeCredential)
    observability.configure(
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": CONN,
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": auth,
        }
    )
    (call,) = fake_distro
    if client_id == "not used":
        assert "credential" not in call
        assert made == []
    else:
        assert isinstance(call["credential"], FakeCredential)
        assert made == [{"client_id": client_id}]


@pytest.mark.parametrize(
    "extra",
    [
        {"OTEL_SDK_DISABLED": "true"},
        {"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"},
    ],
)
def test_switched_off_or_left_to_the_worker(
    fake_distro: list[dict[str, Any]], extra: dict[str, str]
) -> None:
    observability.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN, **extra})
    assert fake_distro == []


def test_a_missing_package_never_breaks_start_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", None)  # import fails
    observability.reset()
    caplog.set_level(logging.INFO, logger="handlers.observability")
    try:
        observability.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN})
        with observability.invocation("on_trade", Ctx("still-works")):
            logging.getLogger("tradeguard").warning("processing goes on")
    finally:
        observability.reset()
    assert "azure-monitor-opentelemetry is not installed" in caplog.text
    assert "processing goes on" in caplog.text


def test_a_failing_distro_never_breaks_start_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = types.ModuleType("azure.monitor.opentelemetry")

    def configure_azure_monitor(**kwargs: Any) -> None:
        raise ValueError("Invalid instrumentation key")

    module.configure_azure_monitor = configure_azure_monitor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", module)
    observability.reset()
    caplog.set_level(logging.WARNING, logger="handlers.observability")
    try:
        observability.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN})
    finally:
        observability.reset()
    assert "could not start" in caplog.text
    assert "Invalid instrumentation key" in caplog.text
