"""Queue Storage clients built from a Functions connection setting.

One place that turns a connection setting name (``AzureWebJobsStorage``) into a client,
the way the Functions host resolves it: the setting's value is a connection string
(``UseDevelopmentStorage=true`` means Azurite on 127.0.0.1:10001), or, identity-based,
``<name>__queueServiceUri`` (or ``<name>__accountName``) with DefaultAzureCredential.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from typing import Any

from azure.storage.queue import QueueServiceClient
from azure.storage.queue.aio import QueueServiceClient as AsyncQueueServiceClient

from handlers.errors import ConfigurationError

__all__ = [
    "AZURITE_CONNECTION_STRING",
    "async_queue_service",
    "queue_service",
    "resolve_connection",
    "uses_env_proxies",
]

AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_ACCOUNT_KEY};QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
)


def uses_env_proxies() -> bool:
    """Whether the process has proxy settings (``HTTPS_PROXY`` and friends).

    Without any, the asyncio SDK clients are built with ``use_env_settings=False``: aiohttp
    would otherwise look up proxies and ``.netrc`` in a worker thread on every request
    (two thread hand-offs per call, for nothing). With a proxy configured nothing changes.
    """
    return bool(urllib.request.getproxies())


def resolve_connection(settings: Mapping[str, str], name: str) -> tuple[str, str | None]:
    """Resolve a connection setting to ``(kind, value)``.

    ``kind`` is ``"connection_string"`` (value: the string) or ``"account_url"`` (value:
    the queue service URI, used with DefaultAzureCredential).

    Raises:
        ConfigurationError: neither the setting nor its identity-based form is present.
    """
    value = (settings.get(name) or "").strip()
    if value:
        if value.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true":
            return "connection_string", AZURITE_CONNECTION_STRING
        return "connection_string", value
    uri = (settings.get(f"{name}__queueServiceUri") or "").strip()
    if uri:
        return "account_url", uri
    account = (settings.get(f"{name}__accountName") or "").strip()
    if account:
        return "account_url", f"https://{account}.queue.core.windows.net"
    raise ConfigurationError(
        f"is not set (neither {name} nor {name}__queueServiceUri / __accountName)", name
    )


def _credential(settings: Mapping[str, str], name: str, asynchronous: bool) -> Any:
    client_id = (settings.get(f"{name}__clientId") or "").strip() or None
    if asynchronous:
        from azure.identity.aio import DefaultAzureCredential as AsyncCredential

        return AsyncCredential(managed_identity_client_id=client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id)


def queue_service(settings: Mapping[str, str], name: str, **kwargs: Any) -> QueueServiceClient:
    """A synchronous QueueServiceClient for connection setting ``name``.

    Raises:
        ConfigurationError: the connection is not configured.
    """
    kind, value = resolve_connection(settings, name)
    assert value is not None
    if kind == "connection_string":
        return QueueServiceClient.from_connection_string(value, **kwargs)
    return QueueServiceClient(value, credential=_credential(settings, name, False), **kwargs)


def async_queue_service(
    settings: Mapping[str, str], name: str, **kwargs: Any
) -> AsyncQueueServiceClient:
    """An asyncio QueueServiceClient for connection setting ``name``.

    Raises:
        ConfigurationError: the connection is not configured.
    """
    kind, value = resolve_connection(settings, name)
    assert value is not None
    if not uses_env_proxies():
        kwargs.setdefault("use_env_settings", False)
    if kind == "connection_string":
        return AsyncQueueServiceClient.from_connection_string(value, **kwargs)
    return AsyncQueueServiceClient(value, credential=_credential(settings, name, True), **kwargs)
