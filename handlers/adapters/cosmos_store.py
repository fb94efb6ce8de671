"""LedgerStore on Azure Cosmos DB (SQL API, asyncio): typed documents in, typed documents
out (mapped by :mod:`handlers.adapters.mapping`), ETag writes, error translation.

One client per process and event loop (built by :mod:`handlers.bootstrap`). Containers are
created when missing: ``ledger`` (/accountId), ``marks`` (/symbol), ``deadletters`` (/queue).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
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
    holder_from_document,
    holder_partition,
    holder_to_document,
    mark_from_document,
    mark_to_document,
    pass_from_document,
    pass_sent_from_document,
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
    HolderEntry,
    MarkDoc,
    MarkPass,
    PassSent,
    Record,
    SentMarker,
    StaleWatch,
)
from handlers.core.valuation import Valuation
from handlers.errors import StaleAccountState, TransientStoreError, UnreadableDocument

#: Operations in one transactional batch (Cosmos allows 100).
BATCH_OPS = 100

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
        self,
        account: AccountDoc,
        valuation: Valuation,
        etag: str | None,
        record: Record | None = None,
    ) -> str | None:
        document = account_to_document(account, valuation)
        try:
            if record is None:
                new_etag = await self._write("ledger", document, etag)
            else:
                new_etag = await self._write_with(document, etag, record)
        except BaseException:
            # A conflict, or a write whose fate is unknown: the next read goes to Cosmos.
            self.accounts.drop(account.account_id)
            raise
        self.accounts.put(replace(account, etag=new_etag))
        return new_etag

    async def _write_with(
        self, document: Mapping[str, Any], etag: str | None, record: Record
    ) -> str | None:
        """The account write, then the record's creation, in one transactional batch.
        Nothing relies on its atomicity (the stand-in does not roll back): a failure at
        the record leaves at worst the outbox's crash point [1], which a retry finishes.

        Raises:
            StaleAccountState: the account exists (create) or changed (replace).
            TransientStoreError: Cosmos is unavailable, or the record's creation failed.
        """
        proxy = await self.container("ledger")
        body = dict(document)
        first: tuple[str, tuple[Any, ...], dict[str, Any]] = (
            ("create", (body,), {})
            if etag is None
            else ("replace", (body["id"], body), {"if_match_etag": etag})
        )
        ops = [first, ("create", (record_to_document(record),), {})]
        what = f"write account {body.get('accountId')} with record {record.id}"
        try:
            results = await translate(
                lambda: proxy.execute_item_batch(ops, partition_key=body["accountId"]), what
            )
        except CosmosBatchOperationError as exc:
            status = batch_status(exc, exc.error_index)
            if exc.error_index == 0 and status in (404, 409, 412):
                raise StaleAccountState(f"account {body.get('accountId')}: {status}") from exc
            raise TransientStoreError(
                f"{what}: the batch failed at operation {exc.error_index}: {exc.message}"
            ) from exc
        new_etag = results[0].get("eTag") or (results[0].get("resourceBody") or {}).get("_etag")
        return new_etag if isinstance(new_etag, str) else None

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

    async def read_pass_sent(self, partition: str, marker_id: str) -> PassSent | None:
        doc = await self._read("ledger", marker_id, partition)
        return None if doc is None else pass_sent_from_document(doc)

    async def create_record(self, record: Record | SentMarker | PassSent) -> bool:
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

    async def read_marks(self, symbols: Sequence[str]) -> dict[str, MarkDoc]:
        if len(symbols) == 1:
            one = await self.read_mark(symbols[0])
            return {} if one is None else {one.symbol: one}
        proxy = await self.container("marks")
        wanted = [("@mark", s) for s in symbols]
        rows = await translate(lambda: proxy.read_items(wanted), f"read the marks of {symbols}")
        found = [mark_from_document(row) for row in rows if isinstance(row, dict)]
        return {m.symbol: m for m in found}

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

    async def query_holders(
        self, symbol: str, shard: int, low: Decimal, high: Decimal
    ) -> list[HolderEntry]:
        """One query in the shard's partition: the entries whose band does not hold both
        ``low`` and ``high`` (on the narrowed floats, so a few more), and the entries
        without a band."""
        proxy = await self.container("marks")
        partition = holder_partition(symbol, shard)

        async def query() -> list[dict[str, Any]]:
            pages = proxy.query_items(
                "SELECT * FROM c WHERE c.type = 'holder' AND "
                "(NOT IS_DEFINED(c.lowF) OR c.lowF > @low OR c.highF < @high)",
                parameters=[
                    {"name": "@low", "value": float(low)},
                    {"name": "@high", "value": float(high)},
                ],
                partition_key=partition,
            )
            return [row async for row in pages]

        found = await translate(query, f"query holders of {partition}")
        return [holder_from_document(r, symbol, shard) for r in found]

    async def index_holders(
        self,
        symbol: str,
        shard: int,
        puts: Sequence[HolderEntry],
        drops: Sequence[HolderEntry],
        read: bool,
    ) -> MarkDoc | None:
        """Upserts, then deletes, then (shard 0) the ``@mark`` read, in transactional
        batches of at most :data:`BATCH_OPS` operations. A batch that fails at a delete
        (gone, or changed: 404 / 412) or at the read (no mark yet: 404) runs again one
        operation at a time, in the same order (the stand-in does not roll a batch back;
        every operation here is safe to repeat)."""
        proxy = await self.container("marks")
        partition = holder_partition(symbol, shard)
        what = f"index holders of {partition}"
        ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("upsert", (holder_to_document(e),), {}) for e in puts
        ]
        ops += [
            ("delete", (e.entry_id,), {"if_match_etag": e.etag} if e.etag else {}) for e in drops
        ]
        reads = read and shard == 0
        if reads:
            ops.append(("read", ("@mark",), {}))
        mark: Any = None
        for start in range(0, len(ops), BATCH_OPS):
            batch = ops[start : start + BATCH_OPS]
            try:
                results = await translate(self._batch_call(proxy, partition, batch), what)
            except CosmosBatchOperationError as exc:
                status = batch_status(exc, exc.error_index)
                if batch[exc.error_index][0] == "upsert" or status not in (404, 412):
                    raise TransientStoreError(
                        f"{what}: the batch failed at operation {exc.error_index}: {exc.message}"
                    ) from exc
                mark = await self._one_by_one(proxy, partition, batch, symbol, what)
                continue
            if batch[-1][0] == "read":
                mark = results[-1].get("resourceBody")
        if isinstance(mark, MarkDoc):
            return mark
        return mark_from_document(mark) if isinstance(mark, dict) else None

    @staticmethod
    def _batch_call(
        proxy: ContainerProxy, partition: str, batch: Sequence[Any]
    ) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
        return lambda: proxy.execute_item_batch(batch, partition_key=partition)

    @staticmethod
    def _upsert_call(
        proxy: ContainerProxy, body: dict[str, Any]
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        return lambda: proxy.upsert_item(body=body)

    async def _one_by_one(
        self,
        proxy: ContainerProxy,
        partition: str,
        batch: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]],
        symbol: str,
        what: str,
    ) -> MarkDoc | None:
        """The operations of a failed batch, one request each (see :meth:`index_holders`)."""
        mark = None
        for kind, args, options in batch:
            if kind == "upsert":
                body = args[0]
                await translate(self._upsert_call(proxy, body), what)
            elif kind == "delete":
                await self._delete_id(proxy, partition, args[0], options.get("if_match_etag"))
            else:
                mark = await self.read_mark(symbol)
        return mark

    async def _delete_id(
        self, proxy: ContainerProxy, partition: str, entry_id: str, etag: str | None
    ) -> bool:
        condition: dict[str, Any] = {}
        if etag is not None:  # only while unchanged
            condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await translate(
                lambda: proxy.delete_item(item=entry_id, partition_key=partition, **condition),
                f"delete holder {partition}/{entry_id}",
            )
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            return False
        return True

    async def delete_holder(self, entry: HolderEntry) -> bool:
        proxy = await self.container("marks")
        partition = holder_partition(entry.symbol, entry.shard)
        return await self._delete_id(proxy, partition, entry.entry_id, entry.etag)

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
