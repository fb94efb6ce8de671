"""CosmosLedgerStore.put_holder against a container proxy that behaves as Cosmos does
with a transactional batch: all or nothing (the local stand-in does not roll back, so the
integration tests cannot show the fallback's order)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from azure.cosmos.exceptions import CosmosBatchOperationError, CosmosResourceNotFoundError

from handlers.adapters.cosmos_store import CosmosLedgerStore
from handlers.adapters.mapping import mark_from_document
from handlers.core.documents import HolderEntry
from handlers.errors import TransientStoreError
from tests.aio import run

MARK = {
    "id": "@mark",
    "symbol": "BTCUSDT",
    "type": "mark",
    "schemaVersion": 1,
    "markId": "BTCUSDT@2024-10-01T00:00:00.000Z",
    "markPrice": "60000",
    "timestamp": "2024-10-01T00:00:00.000Z",
}
#: What the store hands back for MARK (typed, as the flows read it).
STORED = mark_from_document(MARK)


class AtomicMarks:
    """The ``marks`` container of one partition, with Cosmos's batch semantics. Calls are
    logged; ``stored_during_upsert`` is a mark another instance stores while the
    fallback's upsert is in flight."""

    def __init__(self, mark: dict[str, Any] | None = None) -> None:
        self.items: dict[str, dict[str, Any]] = {} if mark is None else {"@mark": dict(mark)}
        self.calls: list[str] = []
        self.stored_during_upsert: dict[str, Any] | None = None
        self.fail_upsert_in_batch = False

    async def execute_item_batch(
        self, operations: Sequence[tuple[str, tuple[Any, ...]]], partition_key: str
    ) -> list[dict[str, Any]]:
        self.calls.append("batch")
        staged = dict(self.items)
        responses: list[dict[str, Any]] = []
        for index, (kind, args) in enumerate(operations):
            if kind == "upsert" and self.fail_upsert_in_batch:
                status = 503
            elif kind == "upsert":
                staged[args[0]["id"]] = dict(args[0])
                status = 200
            elif kind == "delete":
                status = 204 if staged.pop(args[0], None) is not None else 404
            else:
                status = 200 if args[0] in staged else 404
            if status >= 400:  # all or nothing: nothing of the batch is kept
                failed = [{"statusCode": 424}] * len(operations)
                failed[index] = {"statusCode": status}
                raise CosmosBatchOperationError(
                    error_index=index,
                    headers={},
                    status_code=status,
                    message="batch failed",
                    operation_responses=failed,
                )
            responses.append(
                {
                    "statusCode": status,
                    "resourceBody": staged.get(args[0]) if kind == "read" else args[0],
                }
            )
        self.items = staged
        return responses

    async def upsert_item(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("upsert")
        self.items[body["id"]] = dict(body)
        if self.stored_during_upsert is not None:
            self.items["@mark"] = dict(self.stored_during_upsert)
        return body

    async def delete_item(self, item: str, partition_key: str, **_: Any) -> None:
        self.calls.append("delete")
        if self.items.pop(item, None) is None:
            raise CosmosResourceNotFoundError(message="not found")

    async def read_item(self, item: str, partition_key: str) -> dict[str, Any]:
        self.calls.append("read")
        if item not in self.items:
            raise CosmosResourceNotFoundError(message="not found")
        return dict(self.items[item])


def store_with(container: AtomicMarks) -> CosmosLedgerStore:
    store = CosmosLedgerStore(client=None, database="t")  # type: ignore[arg-type]
    store._containers = {"ledger": None, "marks": container, "deadletters": None}  # type: ignore[dict-item]
    return store


def entry(version: int, shard: int = 0) -> HolderEntry:
    return HolderEntry("BTCUSDT", shard, "a1", (Decimal(59000), Decimal(61000)), version)


def test_one_request_writes_the_entry_drops_the_old_one_and_reads_the_stored_mark() -> None:
    marks = AtomicMarks(MARK)
    marks.items["holder:a1:3"] = {"id": "holder:a1:3"}
    found = run(store_with(marks).put_holder(entry(4), entry(3)))
    assert found == STORED
    assert marks.calls == ["batch"]
    assert marks.items["holder:a1:4"]["accountId"] == "a1"
    assert marks.items["holder:a1:4"]["low"] == "59000"
    assert "holder:a1:3" not in marks.items


def test_without_a_mark_the_entry_is_upserted_alone_then_the_mark_read() -> None:
    marks = AtomicMarks()
    marks.stored_during_upsert = MARK  # the first mark lands while the entry is written
    found = run(store_with(marks).put_holder(entry(1), None))
    assert marks.calls == ["batch", "upsert", "read"]
    assert "holder:a1:1" in marks.items
    assert found == STORED  # read after the entry exists: that mark cannot miss the account


def test_a_replaced_entry_already_gone_is_fine() -> None:
    marks = AtomicMarks(MARK)
    assert run(store_with(marks).put_holder(entry(4), entry(3))) == STORED
    assert marks.calls == ["batch", "upsert", "delete", "read"]
    assert "holder:a1:4" in marks.items


def test_with_no_mark_at_all_it_returns_none() -> None:
    marks = AtomicMarks()
    assert run(store_with(marks).put_holder(entry(1), None)) is None
    assert marks.calls == ["batch", "upsert", "read"]


def test_another_shard_reads_the_mark_after_its_batch() -> None:
    marks = AtomicMarks(MARK)  # (one container object stands for every partition here)
    assert run(store_with(marks).put_holder(entry(2, shard=3), None)) == STORED
    assert marks.calls == ["batch", "read"]


def test_any_other_batch_failure_is_transient() -> None:
    marks = AtomicMarks(MARK)
    marks.fail_upsert_in_batch = True
    with pytest.raises(TransientStoreError, match="operation 0"):
        run(store_with(marks).put_holder(entry(1), None))
    assert marks.calls == ["batch"]
