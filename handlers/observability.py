"""Structured logs and telemetry: every record of an invocation carries its ids.

Two pieces, both installed once per process by :func:`configure` (the function bodies call
it first; it is cheap after the first call):

1. **Log context.** While :func:`invocation` is active, every log record created in that
   context (any logger: ``tradeguard``, ``handlers.*``, the Azure SDKs) gets these
   attributes, each only when it is known — none is ever set to ``None``:

   ============== ====================================================================
   attribute      value
   ============== ====================================================================
   invocationId   the host's invocation id (``context.invocation_id``; the host's own
                  records carry the same value as ``InvocationId``)
   functionName   ``on_trade``, ``on_mark``, ``on_trade_poison``, ...
   messageId      the queue message id
   dequeueCount   the host's delivery count of the message
   eventId        the tradeId / transferId (from the body), then each outcome's sourceId
   accountId      the body's accountId, then each outcome's
   correlationId  the body's correlationId, or the one its alerts carry
   ============== ====================================================================

   The body is identified lazily — only when a record is actually created — so a process
   that logs nothing pays nothing. Ids are taken only when well-formed (contract: Ids), so
   no part of a hostile body ever reaches a log. Exported through OpenTelemetry these
   attributes become ``customDimensions`` in Application Insights. Do not pass these names
   in ``extra=`` (the logging module refuses to overwrite them); use :func:`bound`.

2. **OpenTelemetry to Application Insights**, only when
   ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (and ``OTEL_SDK_DISABLED`` is not
   ``true``, and the Python worker is not already exporting by itself —
   ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``). ``azure-monitor-opentelemetry``
   is imported then and only then; when it is missing or fails, the app logs one warning
   and runs on without telemetry. With ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` =
   ``Authorization=AAD[;ClientId=<client id>]`` the exporter authenticates with that managed
   identity (Application Insights with local authentication disabled). Exported: the app's
   own log records (``tradeguard``, ``handlers``) at INFO and above, any logger's warnings,
   and the Azure SDK calls as dependency spans (Cosmos DB, Queue Storage).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from handlers.core.contracts import is_well_formed_id, mark_id
from handlers.core.decode import BodyError, decode_body
from handlers.settings import AZURE_SDK_LOG_LEVEL

__all__ = [
    "APP_LOGGERS",
    "AUTHENTICATION_STRING",
    "CONNECTION_STRING",
    "FIELDS",
    "InvocationContextLike",
    "bound",
    "configure",
    "current_fields",
    "identify",
    "invocation",
    "reset",
]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
#: When "true", the Python worker configures Azure Monitor itself; configuring it again
#: would export everything twice.
WORKER_TELEMETRY = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
SDK_DISABLED = "OTEL_SDK_DISABLED"

#: The loggers whose INFO records are exported (others: WARNING and above).
APP_LOGGERS = ("tradeguard", "handlers")
#: The attributes a record of an invocation may carry, in this order.
FIELDS = (
    "invocationId",
    "functionName",
    "messageId",
    "dequeueCount",
    "eventId",
    "accountId",
    "correlationId",
)
_BODY_FIELDS = ("eventId", "accountId", "correlationId")
#: A queue message is at most 64 KiB; anything longer is not identified.
_MAX_IDENTIFY_BYTES = 64 * 1024
#: Instrumentations of the distro that would duplicate the Azure SDK's own HTTP spans or
#: that this app does not use.
_INSTRUMENTATIONS_OFF = ("requests", "urllib", "urllib3", "django", "flask", "fastapi", "psycopg2")

logger = logging.getLogger(__name__)

FieldValue = str | int


class InvocationContextLike(Protocol):
    """What the functions read of ``azure.functions.Context``."""

    @property
    def invocation_id(self) -> str: ...


# --- identifying a body ----------------------------------------------------------------


def identify(raw: bytes) -> dict[str, str]:
    """The ids a queue body carries: ``eventId``, ``accountId``, ``correlationId`` (each
    only when present and well-formed; a MARK's ``eventId`` is its mark id).

    Never raises: a body that cannot be decoded has no ids.
    """
    if len(raw) > _MAX_IDENTIFY_BYTES:
        return {}
    try:
        obj = decode_body(raw).obj
    except (BodyError, RecursionError, ValueError):
        return {}
    ids: dict[str, str] = {}
    kind = obj.get("type")
    if kind == "MARK":
        mid = mark_id(obj.get("symbol"), obj.get("timestamp"))
        if mid is not None:
            ids["eventId"] = mid
        return ids
    keys = ("transferId", "tradeId") if kind == "TRANSFER" else ("tradeId", "transferId")
    for key in keys:
        value = obj.get(key)
        if is_well_formed_id(value):
            ids["eventId"] = str(value)
            break
    for key in ("accountId", "correlationId"):
        value = obj.get(key)
        if is_well_formed_id(value):
            ids[key] = str(value)
    return ids


class _LazyIds:
    """A body's ids, identified on first use (at most once)."""

    __slots__ = ("_ids", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw: bytes | None = raw
        self._ids: dict[str, str] | None = None

    def get(self) -> Mapping[str, str]:
        if self._ids is None:
            raw, self._raw = self._raw, None
            self._ids = identify(raw) if raw is not None else {}
        return self._ids


# --- the log context -------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    fields: Mapping[str, FieldValue]
    body: _LazyIds | None

    def resolved(self) -> dict[str, FieldValue]:
        out: dict[str, FieldValue] = {}
        body = self.body.get() if self.body is not None else {}
        for name in FIELDS:
            value = self.fields.get(name)
            if value is None and name in _BODY_FIELDS:
                value = body.get(name)
            if value is not None:
                out[name] = value
        return out


_SCOPE: ContextVar[_Scope | None] = ContextVar("tradeguard_log_scope", default=None)


def _clean(fields: Mapping[str, FieldValue | None]) -> dict[str, FieldValue]:
    return {k: v for k, v in fields.items() if v is not None and v != ""}


@contextlib.contextmanager
def invocation(
    function_name: str,
    context: InvocationContextLike | None = None,
    *,
    message_id: str | None = None,
    dequeue_count: int | None = None,
    body: bytes | None = None,
) -> Iterator[None]:
    """Within this block, every log record carries the invocation's ids (see the module).

    ``body`` is the raw queue body; it is identified only if a record is created.
    """
    invocation_id = getattr(context, "invocation_id", None) if context is not None else None
    fields = _clean(
        {
            "invocationId": str(invocation_id) if invocation_id else None,
            "functionName": function_name,
            "messageId": message_id,
            "dequeueCount": dequeue_count,
        }
    )
    token = _SCOPE.set(_Scope(fields, _LazyIds(body) if body is not None else None))
    try:
        yield
    finally:
        _SCOPE.reset(token)


@contextlib.contextmanager
def bound(
    *,
    event_id: str | None = None,
    account_id: str | None = None,
    correlation_id: str | None = None,
) -> Iterator[None]:
    """Within this block, records carry these ids instead of the body's (``None`` keeps
    what the invocation knows). Outside an invocation it binds them alone."""
    current = _SCOPE.get()
    extra = _clean({"eventId": event_id, "accountId": account_id, "correlationId": correlation_id})
    if current is None:
        scope = _Scope(extra, None)
    else:
        scope = _Scope({**current.fields, **extra}, current.body)
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def current_fields() -> dict[str, FieldValue]:
    """The attributes a record created here and now would carry."""
    scope = _SCOPE.get()
    return scope.resolved() if scope is not None else {}


# --- the record factory ----------------------------------------------------------------

_lock = threading.Lock()
_previous_factory: Callable[..., logging.LogRecord] | None = None
_configured = False
_telemetry_handler: logging.Handler | None = None


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = (_previous_factory or logging.LogRecord)(*args, **kwargs)
    scope = _SCOPE.get()
    if scope is not None:
        # A log line must never fail the invocation (nor log about itself).
        with contextlib.suppress(Exception):
            for name, value in scope.resolved().items():
                record.__dict__.setdefault(name, value)
    return record


def _install_record_factory() -> None:
    global _previous_factory
    if _previous_factory is None:
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_record_factory)


# --- OpenTelemetry ---------------------------------------------------------------------


class _ExportFilter(logging.Filter):
    """What goes to Application Insights: the app's records at INFO+, others' warnings;
    never the exporter's own (a failing export must not log itself into a loop)."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith(("azure.monitor.opentelemetry", "opentelemetry")):
            return False
        if record.levelno >= logging.WARNING:
            return True
        return any(name == app or name.startswith(app + ".") for app in APP_LOGGERS)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}


def _credential(auth: str) -> Any:
    """A managed-identity credential for ``Authorization=AAD[;ClientId=...]``, else None.

    Raises:
        ImportError: azure-identity is missing.
    """
    parts = dict(
        (key.strip().lower(), value.strip())
        for key, sep, value in (item.partition("=") for item in auth.split(";"))
        if sep
    )
    if parts.get("authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("clientid") or None
    return ManagedIdentityCredential(client_id=client_id)


def _configure_azure_monitor(environ: Mapping[str, str]) -> logging.Handler | None:
    """Start the Azure Monitor exporter; return the log handler it added to the root
    logger (filtered), or None when telemetry stays off.

    Raises:
        Exception: whatever the distro raises (the caller logs it and goes on).
    """
    connection = (environ.get(CONNECTION_STRING) or "").strip()
    if not connection:
        return None
    if _truthy(environ.get(SDK_DISABLED)):
        logger.info("telemetry: %s is true, OpenTelemetry stays off", SDK_DISABLED)
        return None
    if _truthy(environ.get(WORKER_TELEMETRY)):
        logger.info("telemetry: the Python worker exports to Application Insights itself")
        return None
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError as exc:
        logger.warning("telemetry: azure-monitor-opentelemetry is not installed (%s)", exc)
        return None
    root = logging.getLogger()
    before = set(root.handlers)
    options: dict[str, Any] = {
        "connection_string": connection,
        "logger_name": "",
        "instrumentation_options": {name: {"enabled": False} for name in _INSTRUMENTATIONS_OFF},
    }
    credential = _credential(environ.get(AUTHENTICATION_STRING) or "")
    if credential is not None:
        options["credential"] = credential
    configure_azure_monitor(**options)
    added = [h for h in root.handlers if h not in before]
    for handler in added:
        handler.addFilter(_ExportFilter())
    logger.info(
        "telemetry: OpenTelemetry exports to Application Insights (%s)",
        "Entra ID" if credential is not None else "connection string",
    )
    return added[0] if added else None


def configure(environ: Mapping[str, str] | None = None) -> None:
    """Once per process: the log context on every record, and OpenTelemetry to Application
    Insights when it is configured (see the module). Later calls return at once.

    Never raises: telemetry that cannot start is logged as a warning and left off.
    """
    global _configured, _telemetry_handler
    if _configured:
        return
    with _lock:
        if _configured:
            return
        _install_record_factory()
        env = os.environ if environ is None else environ
        level = (env.get(AZURE_SDK_LOG_LEVEL) or "").strip().upper()
        # The SDKs log every HTTP request and response at INFO; the worker forwards every
        # record at INFO to the host (and Application Insights): keep them out by default.
        logging.getLogger("azure").setLevel(level if level in _LEVELS else logging.WARNING)
        try:
            _telemetry_handler = _configure_azure_monitor(
                os.environ if environ is None else environ
            )
        except Exception as exc:
            logger.warning(
                "telemetry: OpenTelemetry could not start, running without it: %s: %s",
                type(exc).__name__,
                exc,
            )
        _configured = True


def reset() -> None:
    """Undo :func:`configure` (tests): restore the record factory, drop the exporter's
    log handler (the OpenTelemetry providers themselves stay for the process)."""
    global _configured, _previous_factory, _telemetry_handler
    with _lock:
        if _previous_factory is not None:
            logging.setLogRecordFactory(_previous_factory)
            _previous_factory = None
        if _telemetry_handler is not None:
            logging.getLogger().removeHandler(_telemetry_handler)
            _telemetry_handler = None
        _configured = False
