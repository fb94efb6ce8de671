"""Start-up checks: is the storage account there and does it take the key; does the Cosmos
DB endpoint answer and take the key. Each check is one cheap request with a short timeout
(:data:`CHECK_TIMEOUT`), so a wrong port, key or setting is reported in seconds, in one
line that names the setting and where its value came from (the environment or the
settings file), instead of as minutes of retries and raw XML.

- storage (a connection setting of a trigger or an output binding): List Queues, one
  result, no retries but one: an endpoint that takes the connection and does not answer in
  time is asked once more;
- Cosmos DB (only when the app has ``COSMOS_*`` settings): a read of the database account
  (``GET`` on the endpoint), signed with ``COSMOS_KEY`` when it is set. Without a key the
  app authenticates with DefaultAzureCredential, and an answer of any kind shows that the
  endpoint is there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from devhost.queues import connection_setting, error_code
from devhost.settings_file import SourcedSettings
from handlers.adapters.storage import queue_service, resolve_connection
from handlers.errors import ConfigurationError

__all__ = ["CHECK_TIMEOUT", "PreflightError", "check_cosmos", "check_storage"]

#: Seconds a start-up check waits for a connection, and then for an answer.
CHECK_TIMEOUT = 5.0
#: Tries of a storage check whose endpoint takes the connection but does not answer in
#: :data:`CHECK_TIMEOUT` (a busy local Azurite); a refused connection is not tried again.
SLOW_ANSWER_TRIES = 2
COSMOS_SETTINGS = ("COSMOS_ENDPOINT", "COSMOS_KEY", "COSMOS_DATABASE")
_COSMOS_API_VERSION = "2018-12-31"


class PreflightError(Exception):
    """A check failed; the message is one line naming the setting and its source."""


def _endpoint(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _reason(exc: BaseException) -> str:
    """A short reason for a failed connection."""
    text = str(exc)
    lowered = text.lower()
    for needle, reason in (
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("temporary failure in name resolution", "unknown host"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
    ):
        if needle in lowered:
            return reason
    return (text.strip().splitlines() or [type(exc).__name__])[0][:200]


_START_SERVICES = "; to start the local services: python -m devhost services start"


def _hint(url: str, exc: BaseException) -> str:
    """For a refused connection to this machine: how to start the local services."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return _START_SERVICES if _loopback(host) and _reason(exc) == "connection refused" else ""


def _bounded(check: Callable[[], None], seconds: float, what: str) -> None:
    """Run ``check`` in a daemon thread; give up after ``seconds``.

    Raises:
        PreflightError: ``what`` did not finish in time (the thread is left behind).
        Exception: whatever ``check`` raised.
    """
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            check()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, name="devhost-preflight", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise PreflightError(f"{what} within {seconds:g} s")
    error = outcome[0]
    if error is not None:
        raise error


def check_storage(
    settings: SourcedSettings, connection: str, timeout: float = CHECK_TIMEOUT
) -> None:
    """List one queue of the account that binding connection ``connection`` names.

    Raises:
        PreflightError: the setting is missing or malformed, the account cannot be reached
            within ``timeout`` seconds, or it refused the key or the request.
    """
    values = settings.values
    name = connection_setting(values, connection)
    try:
        kind, value = resolve_connection(values, name)
    except ConfigurationError:
        raise PreflightError(
            f"storage connection {connection!r} is not set (neither {connection} nor "
            f"{connection}__queueServiceUri is in {settings.source(connection)})"
        ) from None
    assert value is not None
    setting = name
    if kind == "account_url":
        uri = f"{name}__queueServiceUri"
        setting = uri if (values.get(uri) or "").strip() else f"{name}__accountName"
    label = settings.described(setting)
    try:
        service = queue_service(
            values, name, retry_total=0, connection_timeout=timeout, read_timeout=timeout
        )
    except ValueError as exc:
        raise PreflightError(f"{label}: not a valid storage connection string ({exc})") from None
    endpoint = _endpoint(service.url)

    def probe() -> None:
        pages = service.list_queues(results_per_page=1, timeout=max(1, int(timeout))).by_page()
        list(next(iter(pages), []))

    def patient_probe() -> None:
        # An endpoint that takes the connection but answers late (a busy local Azurite)
        # gets a second try; one that refuses it fails at once.
        for attempt in range(SLOW_ANSWER_TRIES):
            try:
                probe()
                return
            except ServiceResponseError:
                if attempt == SLOW_ANSWER_TRIES - 1:
                    raise

    try:
        bound = SLOW_ANSWER_TRIES * (2 * timeout + 1)
        _bounded(patient_probe, bound, f"{label}: no answer from {endpoint}")
    except PreflightError:
        raise
    except ServiceRequestError as exc:
        raise PreflightError(
            f"{label}: cannot reach {endpoint} within {timeout:g} s ({_reason(exc)})"
            f"{_hint(endpoint, exc)}"
        ) from None
    except ServiceResponseError as exc:
        raise PreflightError(
            f"{label}: no answer from {endpoint} within {timeout:g} s ({_reason(exc)})"
        ) from None
    except HttpResponseError as exc:
        raise PreflightError(f"{label}: {_storage_refusal(exc, kind, value)}") from None
    except Exception as exc:  # a credential that cannot get a token, and the like
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PreflightError(f"{label}: {type(exc).__name__}: {first_line[:300]}") from None
    finally:
        service.close()


def _storage_refusal(exc: HttpResponseError, kind: str, value: str) -> str:
    status = exc.status_code
    code = error_code(exc) or "no error code"
    if status is None:  # an identity credential that could not get a token
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"no token for the storage account: {first_line[:300]}"
    if status == 403 and code == "AuthenticationFailed":
        lowered = value.lower()
        if kind == "connection_string" and "accountkey=" in lowered:
            return f"the account key was refused ({status} {code})"
        if kind == "connection_string" and "sharedaccesssignature=" in lowered:
            return f"the shared access signature was refused ({status} {code})"
        return f"the credentials were refused ({status} {code})"
    if status in (401, 403):
        return f"access was refused ({status} {code})"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"the storage account answered {status} {code}: {first_line[:200]}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cosmos_authorization(key: bytes, date: str) -> str:
    """The master-key signature of ``GET`` on the database account (no resource)."""
    text = f"get\n\n\n{date.lower()}\n\n"
    signature = base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest())
    return urllib.parse.quote(f"type=master&ver=1.0&sig={signature.decode('ascii')}", safe="")


def _cosmos_request(
    url: urllib.parse.SplitResult, headers: dict[str, str], timeout: float
) -> tuple[int, str, bytes]:
    host = url.hostname or ""
    if url.scheme == "https":
        context = ssl.create_default_context()
        if _loopback(host):  # the local stand-in's certificate is self-signed (the SDK agrees)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, url.port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, url.port, timeout=timeout)
    try:
        connection.request("GET", url.path or "/", headers=headers)
        response = connection.getresponse()
        return response.status, response.reason, response.read(4096)
    finally:
        connection.close()


def _cosmos_code(body: bytes) -> str:
    try:
        document: Any = json.loads(body)
    except ValueError:
        return ""
    code = document.get("code") if isinstance(document, dict) else None
    return str(code) if code else ""


def check_cosmos(settings: SourcedSettings, timeout: float = CHECK_TIMEOUT) -> None:
    """Read the Cosmos DB account at ``COSMOS_ENDPOINT`` (signed with ``COSMOS_KEY``).

    Apps without ``COSMOS_*`` settings are not checked.

    Raises:
        PreflightError: ``COSMOS_ENDPOINT`` is missing, empty or not a URL, ``COSMOS_KEY``
            is not a key, the endpoint cannot be reached within ``timeout`` seconds, or it
            refused the key.
    """
    values = settings.values
    present = [name for name in COSMOS_SETTINGS if name in values]
    if not present:
        return
    raw = values.get("COSMOS_ENDPOINT")
    if raw is None:
        others = " and ".join(settings.described(name) for name in present)
        raise PreflightError(
            f"COSMOS_ENDPOINT is not set (not in {settings.source('COSMOS_ENDPOINT')}), "
            f"while {others} {'is' if len(present) == 1 else 'are'}"
        )
    label = settings.described("COSMOS_ENDPOINT")
    endpoint = raw.strip()
    if not endpoint:
        raise PreflightError(f"{label} is empty")
    url = urllib.parse.urlsplit(endpoint)
    try:
        port_ok = url.port is None or url.port > 0
    except ValueError:
        port_ok = False
    if url.scheme not in ("http", "https") or not url.hostname or not port_ok:
        raise PreflightError(f"{label}: {endpoint!r} is not an http(s):// URL")
    key_text = (values.get("COSMOS_KEY") or "").strip()
    date = formatdate(usegmt=True)
    headers = {"x-ms-date": date, "x-ms-version": _COSMOS_API_VERSION, "accept": "application/json"}
    if key_text:
        try:
            key = base64.b64decode(key_text, validate=True)
        except (binascii.Error, ValueError):
            raise PreflightError(
                f"{settings.described('COSMOS_KEY')}: not a Cosmos DB key (not base64)"
            ) from None
        headers["authorization"] = _cosmos_authorization(key, date)
    where = _endpoint(endpoint)
    answer: list[tuple[int, str, bytes]] = []

    def probe() -> None:
        answer.append(_cosmos_request(url, headers, timeout))

    try:
        _bounded(probe, 2 * timeout + 1, f"{label}: no answer from {where}")
    except PreflightError:
        raise
    except (ConnectionError, socket.gaierror) as exc:
        raise PreflightError(
            f"{label}: cannot reach {where} within {timeout:g} s ({_reason(exc)})"
            f"{_hint(where, exc)}"
        ) from None
    except TimeoutError:
        raise PreflightError(f"{label}: no answer from {where} within {timeout:g} s") from None
    except ssl.SSLError as exc:
        raise PreflightError(f"{label}: TLS with {where} failed ({_reason(exc)})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise PreflightError(
            f"{label}: {where} did not answer as a Cosmos DB endpoint ({_reason(exc)})"
        ) from None
    status, reason, body = answer[0]
    if 200 <= status < 300:
        return
    code = _cosmos_code(body)
    detail = f"{status} {code or reason}".strip()
    if status in (401, 403):
        if key_text:
            raise PreflightError(
                f"{settings.described('COSMOS_KEY')}: the key was refused by {where} ({detail})"
            )
        return  # no key: the app signs in with DefaultAzureCredential
    raise PreflightError(f"{label}: {where} answered {detail}, not as a Cosmos DB account")
