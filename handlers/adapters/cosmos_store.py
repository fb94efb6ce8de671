"""LedgerStore on Azure Cosmos DB (SQL API, asyncio): typed documents in, typed documents
out (mapped by :mod:`handlers.adapters.mapping`), ETag writes, error translation.

One client per process and event loop (built by :mod:`handlers.bootstrap`). Containers are
created when missing: ``ledger`` (/accountId), ``marks`` (/symbol), ``deadletters`` (/queue).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from handlers.adapters.cosmos_client import (
    ACCOUNT_CACHE_SIZE,
    CONTAINERS,
    AccountCache,
    batch_status,
    connect,
    translate,
)
from handlers.adapters.mapping import (
    PASSES_PARTITION,
    account_from_document,
    account_to_document,
    deadletter_from_document,
    deadletter_to_document,
    failure_to_document,
    mark_from_document,
    mark_to_document,
    pass_from_document,
    pass_to_document,
    record_from_document,
    record_to_document,
    watch_from_document,
    watch_to_document,
)
from handlers.core.documents import (
    ACCOUNT_ID,
    AccountDoc,
    DeadLetter,
    FailureNote,
    MarkDoc,
    MarkPass,
    Record,
    SentMarker,
    StaleWatch,
)
from handlers.core.valuation import Valuation
from handlers.errors import StaleAccountState, TransientStoreError, UnreadableDocument

__all__ = ["ACCOUNT_CACHE_SIZE", "CONTAINERS", "AccountCache", "CosmosLedgerStore", "connect"]


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
                await translate(create, "create containers")

    async def container(self, name: str) -> ContainerProxy:
        if name not in self._containers:
            await self.ensure()
        return self._containers[name]

    # -- plumbing ----------------------------------------------------------------------

    async def _read(self, container: str, item: str, partition: str) -> dict[str, Any] | None:
        proxy = await self.container(container)
        try:
            return await translate(
                lambda: proxy.read_item(item=item, partition_key=partition),
                f"read {container}/{partition}/{item}",
            )
        except CosmosResourceNotFoundError:
            return None

    async def _write(
        self, container: str, document: Mapping[str, Any], etag: str | None
    ) -> str | None:
        """Create (no ETag) or replace-if-unchanged; the new ETag.

        Raises:
            StaleAccountState: it exists (create), changed or vanished (replace).
            TransientStoreError: Cosmos is unavailable.
        """
        proxy = await self.container(container)
        body = dict(document)
        try:
            if etag is None:
                written = await translate(
                    lambda: proxy.create_item(body=body), f"create {container}"
                )
            else:
                written = await translate(
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
        new_etag = written.get("_etag") if isinstance(written, dict) else None
        return new_etag if isinstance(new_etag, str) else None

    async def _upsert(self, container: str, document: Mapping[str, Any], what: str) -> None:
        proxy = await self.container(container)
        await translate(lambda: proxy.upsert_item(body=dict(document)), what)

    # -- accounts ----------------------------------------------------------------------

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

    async def write_account(
        self, account: AccountDoc, valuation: Valuation, etag: str | None
    ) -> str | None:
        document = account_to_document(account, valuation)
        try:
            new_etag = await self._write("ledger", document, etag)
        except BaseException:
            # A conflict, or a write whose fate is unknown: the next read goes to Cosmos.
            self.accounts.drop(account.account_id)
            raise
        self.accounts.put(replace(account, etag=new_etag))
        return new_etag

    # -- records -----------------------------------------------------------------------

    async def read_record(self, partition: str, record_id: str) -> Record | None:
        doc = await self._read("ledger", record_id, partition)
        return None if doc is None else record_from_document(doc)

    async def existing_records(self, partition: str, record_ids: Sequence[str]) -> set[str]:
        if not record_ids:
            return set()
        proxy = await self.container("ledger")

        async def query() -> list[Any]:
            pages = proxy.query_items(
                "SELECT VALUE c.id FROM c WHERE ARRAY_CONTAINS(@ids, c.id)",
                parameters=[{"name": "@ids", "value": list(record_ids)}],
                partition_key=partition,
            )
            return [row async for row in pages]

        rows = await translate(query, f"find records of {partition}")
        return {str(r) for r in rows}

    async def create_record(self, record: Record | SentMarker) -> bool:
        proxy = await self.container("ledger")
        body = record_to_document(record)
        try:
            await translate(lambda: proxy.create_item(body=body), "create record")
        except CosmosResourceExistsError:
            return False
        return True

    # -- marks -------------------------------------------------------------------------

    async def read_mark(self, symbol: str) -> MarkDoc | None:
        doc = await self._read("marks", "@mark", symbol)
        return None if doc is None else mark_from_document(doc)

    async def write_mark(self, mark: MarkDoc, etag: str | None) -> str | None:
        return await self._write("marks", mark_to_document(mark), etag)

    async def read_watch(self, symbol: str) -> StaleWatch | None:
        doc = await self._read("marks", "@stale", symbol)
        return None if doc is None else watch_from_document(doc)

    async def write_watch(self, watch: StaleWatch, etag: str | None) -> str | None:
        return await self._write("marks", watch_to_document(watch), etag)

    async def save_pass(self, mark_pass: MarkPass) -> None:
        await self._upsert("marks", pass_to_document(mark_pass), "save mark pass")

    async def read_pass(self, body_digest: str) -> MarkPass | None:
        doc = await self._read("marks", body_digest, PASSES_PARTITION)
        return None if doc is None else pass_from_document(doc)

    # -- the holder index ----------------------------------------------------------------

    async def list_holders(self, symbol: str) -> list[tuple[str, str]]:
        proxy = await self.container("marks")

        async def query() -> list[dict[str, Any]]:
            pages = proxy.query_items(
                "SELECT c.accountId, c._etag FROM c WHERE c.symbol = @symbol AND c.type = 'holder'",
                parameters=[{"name": "@symbol", "value": symbol}],
                partition_key=symbol,
            )
            return [row async for row in pages]

        rows = await translate(query, f"list holders of {symbol}")
        return [(str(r["accountId"]), str(r["_etag"])) for r in rows]

    async def index_holder(self, symbol: str, account_id: str) -> MarkDoc | None:
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
            results = await translate(
                lambda: proxy.execute_item_batch(
                    [("upsert", (body,)), ("read", ("@mark",))], partition_key=symbol
                ),
                what,
            )
        except CosmosBatchOperationError as exc:
            if exc.error_index != 1 or batch_status(exc, 1) != 404:
                raise TransientStoreError(
                    f"{what}: the batch failed at operation {exc.error_index}: {exc.message}"
                ) from exc
            await translate(lambda: proxy.upsert_item(body=body), what)
            return await self.read_mark(symbol)
        mark = results[1].get("resourceBody")
        return mark_from_document(mark) if isinstance(mark, dict) else None

    async def delete_holder(self, symbol: str, account_id: str, etag: str) -> bool:
        proxy = await self.container("marks")
        try:
            await translate(
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

    # -- deadletters -------------------------------------------------------------------

    async def read_deadletter(self, queue: str, deadletter_id: str) -> DeadLetter | None:
        doc = await self._read("deadletters", deadletter_id, queue)
        return None if doc is None else deadletter_from_document(doc)

    async def write_deadletter(self, letter: DeadLetter, etag: str | None) -> str | None:
        return await self._write("deadletters", deadletter_to_document(letter), etag)

    async def note_failure(self, note: FailureNote) -> None:
        await self._upsert("deadletters", failure_to_document(note), "note a failure")

    async def read_failure(self, queue: str, body_digest: str) -> str | None:
        doc = await self._read("deadletters", f"failure:{body_digest}", queue)
        error = doc.get("lastError") if doc is not None else None
        return error if isinstance(error, str) else None
