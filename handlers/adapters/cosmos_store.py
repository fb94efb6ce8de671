"""LedgerStore on Azure Cosmos DB (SQL API, asyncio): document mapping, ETag writes, error
translation, and a per-process cache of account documents.

One client per process and event loop (built by :mod:`handlers.bootstrap`). Containers are
created when missing: ``ledger`` (/accountId), ``marks`` (/symbol), ``deadletters`` (/queue).

SDK retry settings (docs/reliability.md): throttling (429) is retried by the SDK up to 9
times within 30 s (its defaults); connection errors are retried 3 times with a short
back-off and requests time out after 10 s, after which the error reaches the host, which
retries the whole message and finally poisons it.

**The account cache** (docs/performance.md): the account document this process last read
or wrote, with its ETag. ``read_account(..., fresh=False)`` answers from it; the service
asks for that only before a conditional write, so a stale copy (another instance wrote
since) costs one 412 and a fresh read — never a lost update. It saves the account read of
most events on an instance that sees an account's traffic.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import AioHttpTransport
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from handlers.adapters.storage import uses_env_proxies
from handlers.core.documents import ACCOUNT_ID, AccountDoc, account_from_document
from handlers.errors import StaleAccountState, TransientStoreError, UnreadableDocument

__all__ = ["ACCOUNT_CACHE_SIZE", "CONTAINERS", "AccountCache", "CosmosLedgerStore", "connect"]

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


async def _translate(call: Callable[[], Awaitable[T]], what: str) -> T:
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


def _batch_status(exc: CosmosBatchOperationError, index: int) -> int | None:
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


class CosmosLedgerStore:
    """The ledger, marks and deadletters containers of one database."""

    def __init__(
        self, client: CosmosClient, database: str, cache_size: int = ACCOUNT_CACHE_SIZE
    ) -> None:
        self._client = client
        self._database_name = database
        self._containers: dict[str, ContainerProxy] = {}
        self._ensure_lock = asyncio.Lock()
        self.accounts = AccountCache(cache_size)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.close()

    async def ensure(self) -> None:
        """Create the database and containers if missing.

        Raises:
            TransientStoreError: Cosmos is unreachable.
        """

        async def create() -> None:
            db = await self._client.create_database_if_not_exists(self._database_name)
            for name, path in CONTAINERS.items():
                self._containers[name] = await db.create_container_if_not_exists(
                    id=name, partition_key=PartitionKey(path=path)
                )

        async with self._ensure_lock:
            if len(self._containers) < len(CONTAINERS):
                await _translate(create, "create containers")

    async def container(self, name: str) -> ContainerProxy:
        if name not in self._containers:
            await self.ensure()
        return self._containers[name]

    # -- reads -------------------------------------------------------------------------

    async def _read(self, container: str, item: str, partition: str) -> dict[str, Any] | None:
        proxy = await self.container(container)
        try:
            return await _translate(
                lambda: proxy.read_item(item=item, partition_key=partition),
                f"read {container}/{partition}/{item}",
            )
        except CosmosResourceNotFoundError:
            return None

    async def read_account(self, account_id: str, *, fresh: bool = True) -> AccountDoc | None:
        if not fresh:
            cached = self.accounts.get(account_id)
            if cached is not None:
                return cached
        doc = await self._read("ledger", ACCOUNT_ID, account_id)
        if doc is None:
            self.accounts.drop(account_id)
            return None
        try:
            account = account_from_document(doc)
            if account.account_id != account_id:
                raise UnreadableDocument(
                    f"account document of {account_id} names {account.account_id}"
                )
        except UnreadableDocument:
            self.accounts.drop(account_id)
            raise
        self.accounts.put(account)
        return account

    async def read_record(self, partition: str, record_id: str) -> Mapping[str, Any] | None:
        return await self._read("ledger", record_id, partition)

    async def read_mark(self, symbol: str) -> Mapping[str, Any] | None:
        return await self._read("marks", "@mark", symbol)

    async def list_holders(self, symbol: str) -> list[tuple[str, str]]:
        proxy = await self.container("marks")

        async def query() -> list[dict[str, Any]]:
            pages = proxy.query_items(
                "SELECT c.accountId, c._etag FROM c WHERE c.symbol = @symbol AND c.type = 'holder'",
                parameters=[{"name": "@symbol", "value": symbol}],
                partition_key=symbol,
            )
            return [row async for row in pages]

        rows = await _translate(query, f"list holders of {symbol}")
        return [(str(r["accountId"]), str(r["_etag"])) for r in rows]

    async def index_holder(self, symbol: str, account_id: str) -> Mapping[str, Any] | None:
        """Upsert ``holder:<accountId>`` and read ``@mark`` in one transactional batch of
        the symbol's partition. Without a stored mark the batch fails on its read, and
        Cosmos rolls the upsert back: the entry is then upserted alone and the mark read
        after it (a mark stored in between must be seen), three requests in all."""
        proxy = await self.container("marks")
        body = {
            "id": f"holder:{account_id}",
            "symbol": symbol,
            "accountId": account_id,
            "type": "holder",
            "schemaVersion": 1,
        }
        what = f"index holder {symbol}/{account_id}"
        try:
            results = await _translate(
                lambda: proxy.execute_item_batch(
                    [("upsert", (body,)), ("read", ("@mark",))], partition_key=symbol
                ),
                what,
            )
        except CosmosBatchOperationError as exc:
            if exc.error_index != 1 or _batch_status(exc, 1) != 404:
                raise TransientStoreError(
                    f"{what}: the batch failed at operation {exc.error_index}: {exc.message}"
                ) from exc
            await _translate(lambda: proxy.upsert_item(body=body), what)
            return await self.read_mark(symbol)
        mark = results[1].get("resourceBody")
        return mark if isinstance(mark, dict) else None

    async def delete_holder(self, symbol: str, account_id: str, etag: str) -> bool:
        proxy = await self.container("marks")
        try:
            await _translate(
                lambda: proxy.delete_item(
                    item=f"holder:{account_id}",
                    partition_key=symbol,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                ),
                f"delete holder {symbol}/{account_id}",
            )
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            return False
        return True

    async def read_deadletter(self, queue: str, deadletter_id: str) -> Mapping[str, Any] | None:
        return await self._read("deadletters", deadletter_id, queue)

    # -- writes ------------------------------------------------------------------------

    async def _write(
        self, container: str, document: Mapping[str, Any], etag: str | None
    ) -> dict[str, Any]:
        proxy = await self.container(container)
        body = dict(document)
        try:
            if etag is None:
                return await _translate(lambda: proxy.create_item(body=body), f"create {container}")
            return await _translate(
                lambda: proxy.replace_item(
                    item=body["id"],
                    body=body,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                ),
                f"replace {container}",
            )
        except (CosmosAccessConditionFailedError, CosmosResourceExistsError) as exc:
            raise StaleAccountState(f"{container} {body.get('id')} changed concurrently") from exc
        except CosmosResourceNotFoundError as exc:  # replaced a document deleted meanwhile
            raise StaleAccountState(f"{container} {body.get('id')} vanished") from exc

    async def write_account(self, document: Mapping[str, Any], etag: str | None) -> str | None:
        account_id = str(document["accountId"])
        try:
            written = await self._write("ledger", document, etag)
        except BaseException:
            # A conflict, or a write whose fate is unknown: the next read goes to Cosmos.
            self.accounts.drop(account_id)
            raise
        new_etag = written.get("_etag") if isinstance(written, dict) else None
        if isinstance(new_etag, str):
            try:
                self.accounts.put(account_from_document({**document, "_etag": new_etag}))
            except UnreadableDocument:  # pragma: no cover - we wrote it ourselves
                self.accounts.drop(account_id)
            return new_etag
        self.accounts.drop(account_id)
        return None

    async def write_mark(self, document: Mapping[str, Any], etag: str | None) -> None:
        await self._write("marks", document, etag)

    async def create_record(self, record: Mapping[str, Any]) -> bool:
        proxy = await self.container("ledger")
        try:
            await _translate(lambda: proxy.create_item(body=dict(record)), "create record")
        except CosmosResourceExistsError:
            return False
        return True

    async def record_deadletter(self, document: Mapping[str, Any]) -> bool:
        proxy = await self.container("deadletters")
        for _ in range(20):
            try:
                await _translate(
                    lambda: proxy.create_item(body=dict(document)), "create deadletter"
                )
                return True
            except CosmosResourceExistsError:
                pass
            current = await self.read_deadletter(str(document["queue"]), str(document["id"]))
            if current is None:
                continue
            updated = {k: v for k, v in current.items() if not k.startswith("_")}
            updated["count"] = int(current.get("count", 1)) + 1
            updated["lastSeen"] = document["lastSeen"]
            if document.get("lastError"):
                updated["lastError"] = document["lastError"]
            try:
                await self._write("deadletters", updated, current["_etag"])
                return False
            except StaleAccountState:
                continue
        raise TransientStoreError(f"deadletter {document['id']}: too many concurrent updates")
