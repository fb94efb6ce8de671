"""Cosmos requests per applied fill on the real stand-in, counted at the SDK's container
proxies (so a read the process's caches answer is no request): 2 for a fill on a held
symbol; 4 for one that opens a symbol, 3 when MARK_CACHE_SECONDS lets it take the
process's copy of the mark (60 s here, the most it allows, so a slow machine cannot age
the copy out); and the holder index's one-request batch (upsert, then read
the mark) with and without a stored mark."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from handlers.core.contracts import format_timestamp
from handlers.core.decimals import format_decimal
from handlers.flows import Deps
from tests.aio import process_mark_message, process_trade_message, run
from tests.integration.test_marks import mark
from tests.integration.test_marks_scale import CountingStore, body, in_process
from tests.integration.test_pipeline import deposit, fill
from tests.support import AppUnderTest

pytestmark = pytest.mark.services


class Requests:
    """Counts the calls made on the store's SDK container proxies, by container.method."""

    def __init__(self, store: CountingStore) -> None:
        self.calls: Counter[str] = Counter()
        inner = store.inner
        run(inner.ensure())
        for name, proxy in list(inner._containers.items()):
            inner._containers[name] = self._wrap(name, proxy)

    def _wrap(self, container: str, proxy: Any) -> Any:
        calls = self.calls

        class Counted:
            def __getattr__(self, method: str) -> Any:
                attr = getattr(proxy, method)
                if not callable(attr):
                    return attr

                def counted(*args: Any, **kwargs: Any) -> Any:
                    calls[f"{container}.{method}"] += 1
                    return attr(*args, **kwargs)

                return counted

        return Counted()

    def during(self, action: Callable[[], Any]) -> Counter[str]:
        self.calls.clear()
        action()
        return Counter(self.calls)


def applied(deps: Deps, message: dict[str, Any]) -> None:
    outcome = process_trade_message(body(message), deps)
    assert outcome.kind == "APPLIED", outcome


@pytest.fixture
def local(app: AppUnderTest) -> Iterator[tuple[Deps, CountingStore]]:
    deps, store = in_process(app)
    try:
        yield deps, store
    finally:
        run(store.inner.close())


@pytest.mark.parametrize("copy_seconds", [0.0, 60.0])
def test_requests_per_applied_fill(local: tuple[Deps, CountingStore], copy_seconds: float) -> None:
    deps, store = local
    deps = replace(deps, settings=replace(deps.settings, mark_cache_seconds=copy_seconds))
    requests = Requests(store)
    (stored,) = process_mark_message(body(mark("BTCUSDT", "60000", 30)), deps)
    assert stored.kind == "APPLIED"
    applied(deps, deposit("req-1", "100000", "dep-req-1"))
    # (the process's copy of the mark is the one it just stored)

    opening = requests.during(lambda: applied(deps, fill("req-1", "t-open")))
    expected = Counter(
        {
            "ledger.replace_item": 1,  # the account, conditional on its ETag
            "marks.execute_item_batch": 1,  # index the holder, then read the mark
            "ledger.create_item": 1,  # the trade record
        }
    )
    if not copy_seconds:  # MARK_CACHE_SECONDS=0 (the default): the first look reads
        expected["marks.read_item"] = 1
    assert opening == expected, opening
    held = requests.during(lambda: applied(deps, fill("req-1", "t-held")))
    assert held == Counter({"ledger.replace_item": 1, "ledger.create_item": 1}), held

    account = run(store.inner.read_account("req-1"))
    assert account is not None
    (position,) = account.ledger.positions
    assert (position.quantity, position.mark_price) == (Decimal("0.2"), Decimal(60000))


def test_indexing_a_holder_reads_the_mark_in_the_same_request(
    local: tuple[Deps, CountingStore],
) -> None:
    deps, store = local
    inner = store.inner
    # No mark stored: the batch fails on its read; the entry is indexed all the same.
    assert run(inner.index_holder("ETHUSDT", "idx-1")) is None
    assert [a for a, _ in run(inner.list_holders("ETHUSDT"))] == ["idx-1"]
    (stored,) = process_mark_message(body(mark("ETHUSDT", "2500.5", 40)), deps)
    assert stored.kind == "APPLIED"
    found = run(inner.index_holder("ETHUSDT", "idx-2"))
    assert found is not None
    assert (found.mark_id, format_decimal(found.price), format_timestamp(found.timestamp)) == (
        "ETHUSDT@2024-10-01T00:00:40.000Z",
        "2500.5",
        "2024-10-01T00:00:40.000Z",
    )
    # (the mark dropped idx-1: no such account holds ETHUSDT)
    assert [a for a, _ in run(inner.list_holders("ETHUSDT"))] == ["idx-2"]
