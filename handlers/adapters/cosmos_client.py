"""The Cosmos DB client of the app: how it connects, the containers it uses, how SDK errors
become the app's errors, and the per-process account cache.

SDK retry settings (docs/reliability.md): throttling (429) is retried by the SDK up to 9
times within 30 s (its defaults); connection errors are retried 3 times with a short
back-off and requests time out after 10 s, after which the error reaches the host, which
retries the whole message and finally poisons it.

**The account cache** (docs/performance.md): the account document this process last read
or wrote, with its ETag. ``read_account(..., fresh=False)`` answers from it; the flows ask
for that only before a conditional write, so a stale copy (another instance wrote since)
costs one 412 and a fresh read — never a lost update.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import AioHttpTransport
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from handlers.adapters.storage import uses_env_proxies
from handlers.core.documents import AccountDoc
from handlers.errors import TransientStoreError

__all__ = [
    "ACCOUNT_CACHE_SIZE",
    "CONTAINERS",
    "AccountCache",
    "batch_status",
    "connect",
    "translate",
]

logger = logging.getLogger(__name__)

CONTAINERS: Mapping[str, str] = {
    "ledger": "/accountId",
    "marks": "/symbol",
    "deadletters": "/queue",
}
#: Account documents kept per process (least recently used dropped first).
ACCOUNT_CACHE_SIZE = 1024
T = TypeVar("T")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class AccountCache:
    """A bounded map accountId → the account as last read or written (with its ETag)."""

    def __init__(self, size: int = ACCOUNT_CACHE_SIZE) -> None:
        self._items: OrderedDict[str, AccountDoc] = OrderedDict()
        self._size = size

    def get(self, account_id: str) -> AccountDoc | None:
        account = self._items.get(account_id)
        if account is not None:
            self._items.move_to_end(account_id)
        return account

    def put(self, account: AccountDoc) -> None:
        if account.etag is None:
            self.drop(account.account_id)
            return
        self._items[account.account_id] = account
        self._items.move_to_end(account.account_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def drop(self, account_id: str) -> None:
        self._items.pop(account_id, None)

    def __len__(self) -> int:
        return len(self._items)


async def translate(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Run an SDK call, turning unavailability into TransientStoreError."""
    try:
        return await call()
    except (
        CosmosResourceNotFoundError,
        CosmosResourceExistsError,
        CosmosAccessConditionFailedError,
        CosmosBatchOperationError,
    ):
        raise
    except CosmosHttpResponseError as exc:
        raise TransientStoreError(
            f"{what}: Cosmos answered {exc.status_code}: {exc.message}"
        ) from exc
    except (ServiceRequestError, ServiceResponseError, AzureError, OSError) as exc:
        raise TransientStoreError(f"{what}: Cosmos unreachable: {exc}") from exc


def batch_status(exc: CosmosBatchOperationError, index: int) -> int | None:
    """The status code of operation ``index`` of a failed batch, when the error has it."""
    responses = exc.operation_responses or []
    if index < len(responses) and isinstance(responses[index], Mapping):
        status = responses[index].get("statusCode")
        return status if isinstance(status, int) else None
    return None


def connect(endpoint: str, key: str | None, database: str) -> CosmosClient:
    """An asyncio Cosmos client with this project's retry settings; the key, or managed
    identity (DefaultAzureCredential; ``AZURE_CLIENT_ID`` picks a user-assigned identity).
    Call it inside the event loop that will use it.

    Raises:
        TransientStoreError: never here (the client connects lazily).
    """
    host = urlparse(endpoint).hostname or ""
    if host in _LOCAL_HOSTS:
        # The local stand-in serves a self-signed certificate; the SDK skips verification
        # for loopback endpoints by itself.
        import urllib3

        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    credential: Any
    if key:
        credential = key
    else:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
    options: dict[str, Any] = {}
    if not uses_env_proxies():  # see handlers.adapters.storage.uses_env_proxies
        options["transport"] = AioHttpTransport(use_env_settings=False)
    return CosmosClient(
        endpoint,
        credential=credential,
        **options,
        connection_timeout=10,
        retry_total=3,
        retry_connect=3,
        retry_read=2,
        retry_backoff_max=2,
        retry_backoff_factor=0.3,
        # Writes may be retried after a lost response: every write here is conditional
        # (ETag), a create (409 when it landed) or an idempotent upsert, and the service
        # treats 412/409 as "re-read and see" — so a retried write never applies twice.
        retry_write=2,
    )
