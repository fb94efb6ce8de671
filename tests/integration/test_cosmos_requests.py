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

from handlers.core.documents import HolderEntry
from handlers.flows import Deps
from handlers.flows.banding import shard_of
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
    shard = shard_of("req-1", deps.settings.marks_index_shards)
    expected = Counter(
        {
            "ledger.execute_item_batch": 1,  # the account (on its ETag) and its record
            "marks.execute_item_batch": 1,  # its index entry (shard 0: and the mark read)
        }
    )
    # The decision's look at the mark (unless MARK_CACHE_SECONDS lets it use this
    # process's copy), and the post-check's read after the entry (in the batch on shard 0).
    expected["marks.read_item"] = (0 if copy_seconds else 1) + (0 if shard == 0 else 1)
    assert +opening == +expected, opening
    held = requests.during(lambda: applied(deps, fill("req-1", "t-held")))
    # The account and its record in one batch (no alert to send before the record).
    expected_held = Counter({"ledger.execute_item_batch": 1})
    expected_held["marks.read_item"] = 0 if copy_seconds else 1  # decides at the stored mark
    assert +held == +expected_held, held  # its bands still hold: no index write

    account = run(store.inner.read_account("req-1"))
    assert account is not None
    (position,) = account.ledger.positions
    assert (position.quantity, position.mark_price) == (Decimal("0.2"), Decimal(60000))


def test_an_index_entry_is_written_with_its_band_and_found_by_a_mark_that_leaves_it(
    local: tuple[Deps, CountingStore],
) -> None:
    _, store = local
    inner = store.inner
    band = (Decimal("2400"), Decimal("2600.5"))
    # No mark stored: the batch fails on its read; the entry is written all the same.
    first = HolderEntry("ETHUSDT", 0, "idx-1", band, 1)
    assert run(inner.index_holders("ETHUSDT", 0, [first], [], True)) is None
    on_two = HolderEntry("ETHUSDT", 2, "idx-2", band, 5)
    assert run(inner.index_holders("ETHUSDT", 2, [on_two], [], True)) is None
    inside = run(inner.query_holders("ETHUSDT", 0, Decimal("2500"), Decimal("2600")))
    assert inside == []  # (at 2600.5 itself the narrowed float may list it: checked exactly)
    below = run(inner.query_holders("ETHUSDT", 0, Decimal("2399.9"), Decimal("2500")))
    assert [(e.account_id, e.band, e.version) for e in below] == [("idx-1", band, 1)]
    [above] = run(inner.query_holders("ETHUSDT", 2, Decimal("2600.6"), Decimal("2600.6")))
    assert (above.account_id, above.entry_id) == ("idx-2", "holder:idx-2:5")
    # A new version replaces the old one in the same request.
    newer = HolderEntry("ETHUSDT", 2, "idx-2", (Decimal("2500"), Decimal("2700")), 6)
    run(inner.index_holders("ETHUSDT", 2, [newer], [above], True))
    [found] = run(inner.query_holders("ETHUSDT", 2, Decimal(0), Decimal(0)))
    assert found.entry_id == "holder:idx-2:6"
    assert run(inner.delete_holder(found))
    assert run(inner.query_holders("ETHUSDT", 2, Decimal(0), Decimal(0))) == []
