"""CosmosLedgerStore.index_holders against a container proxy that behaves as Cosmos does
with a transactional batch: all or nothing (the local stand-in does not roll back, so the
integration tests cannot show the fallback's order)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosResourceNotFoundError,
)

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
        self.batch_sizes: list[int] = []
        self.stored_during_upsert: dict[str, Any] | None = None
        self.fail_upsert_in_batch = False

    async def execute_item_batch(
        self, operations: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]], partition_key: str
    ) -> list[dict[str, Any]]:
        self.calls.append("batch")
        self.batch_sizes.append(len(operations))
        staged = dict(self.items)
        responses: list[dict[str, Any]] = []
        for index, (kind, args, options) in enumerate(operations):
            if kind == "upsert" and self.fail_upsert_in_batch:
                status = 503
            elif kind == "upsert":
                staged[args[0]["id"]] = dict(args[0])
                status = 200
            elif kind == "delete":
                etag = options.get("if_match_etag")
                if args[0] not in staged:
                    status = 404
                elif etag is not None and staged[args[0]].get("_etag") != etag:
                    status = 412
                else:
                    status = 204
                    del staged[args[0]]
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

    async def delete_item(self, item: str, partition_key: str, **condition: Any) -> None:
        self.calls.append("delete")
        if item not in self.items:
            raise CosmosResourceNotFoundError(message="not found")
        if "etag" in condition and self.items[item].get("_etag") != condition["etag"]:
            raise CosmosAccessConditionFailedError(message="changed")
        del self.items[item]

    async def read_item(self, item: str, partition_key: str) -> dict[str, Any]:
        self.calls.append("read")
        if item not in self.items:
            raise CosmosResourceNotFoundError(message="not found")
        return dict(self.items[item])


def store_with(container: AtomicMarks) -> CosmosLedgerStore:
    store = CosmosLedgerStore(client=None, database="t")  # type: ignore[arg-type]
    store._containers = {"ledger": None, "marks": container, "deadletters": None}  # type: ignore[dict-item]
    return store


def entry(
    version: int, shard: int = 0, account: str = "a1", etag: str | None = None
) -> HolderEntry:
    return HolderEntry("BTCUSDT", shard, account, (Decimal(59000), Decimal(61000)), version, etag)


def index(
    marks: AtomicMarks,
    puts: list[HolderEntry],
    drops: list[HolderEntry] = [],  # noqa: B006 - never mutated
    shard: int = 0,
) -> Any:
    return run(store_with(marks).index_holders("BTCUSDT", shard, puts, drops, True))


def test_one_request_writes_the_entry_drops_the_old_one_and_reads_the_stored_mark() -> None:
    marks = AtomicMarks(MARK)
    marks.items["holder:a1:3"] = {"id": "holder:a1:3"}
    assert index(marks, [entry(4)], [entry(3)]) == STORED
    assert marks.calls == ["batch"]
    assert marks.items["holder:a1:4"]["accountId"] == "a1"
    assert marks.items["holder:a1:4"]["low"] == "59000"
    assert "holder:a1:3" not in marks.items


def test_without_a_mark_the_entry_is_upserted_alone_then_the_mark_read() -> None:
    marks = AtomicMarks()
    marks.stored_during_upsert = MARK  # the first mark lands while the entry is written
    found = index(marks, [entry(1)])
    assert marks.calls == ["batch", "upsert", "read"]
    assert "holder:a1:1" in marks.items
    assert found == STORED  # read after the entry exists: that mark cannot miss the account


def test_a_replaced_entry_already_gone_is_fine() -> None:
    marks = AtomicMarks(MARK)
    assert index(marks, [entry(4)], [entry(3)]) == STORED
    assert marks.calls == ["batch", "upsert", "delete", "read"]
    assert "holder:a1:4" in marks.items


def test_a_stale_entry_that_changed_since_it_was_listed_stays() -> None:
    marks = AtomicMarks(MARK)
    marks.items["holder:a2:1"] = {"id": "holder:a2:1", "_etag": "new"}  # re-written since
    assert index(marks, [entry(4)], [entry(1, account="a2", etag="old")]) == STORED
    assert marks.calls == ["batch", "upsert", "delete", "read"]
    assert "holder:a2:1" in marks.items


def test_with_no_mark_at_all_it_returns_none() -> None:
    marks = AtomicMarks()
    assert index(marks, [entry(1)]) is None
    assert marks.calls == ["batch", "upsert", "read"]


def test_another_shard_writes_in_one_batch_and_reads_nothing() -> None:
    marks = AtomicMarks(MARK)  # (one container object stands for every partition here)
    assert index(marks, [entry(2, shard=3)], shard=3) is None  # the caller reads after all
    assert marks.calls == ["batch"]


def test_many_accounts_go_in_batches_of_at_most_100_operations() -> None:
    marks = AtomicMarks(MARK)
    for n in range(70):
        marks.items[f"holder:a{n}:1"] = {"id": f"holder:a{n}:1"}
    puts = [entry(2, account=f"a{n}") for n in range(70)]
    drops = [entry(1, account=f"a{n}") for n in range(70)]
    assert index(marks, puts, drops) == STORED
    assert marks.batch_sizes == [100, 41]  # 70 upserts, 70 deletes, the read last
    assert sorted(marks.items) == sorted(["@mark", *(f"holder:a{n}:2" for n in range(70))])


def test_any_other_batch_failure_is_transient() -> None:
    marks = AtomicMarks(MARK)
    marks.fail_upsert_in_batch = True
    with pytest.raises(TransientStoreError, match="operation 0"):
        index(marks, [entry(1)])
    assert marks.calls == ["batch"]
