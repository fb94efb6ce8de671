"""The bounded per-process account cache of the Cosmos adapter."""

from __future__ import annotations

from handlers.adapters.cosmos_store import AccountCache
from handlers.core.documents import AccountDoc


def doc(account_id: str, etag: str | None = '"1"') -> AccountDoc:
    return AccountDoc(account_id, etag=etag)


def test_keeps_the_most_recently_used() -> None:
    cache = AccountCache(size=2)
    cache.put(doc("a"))
    cache.put(doc("b"))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put(doc("c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2


def test_a_copy_without_an_etag_is_not_kept() -> None:
    cache = AccountCache()
    cache.put(doc("a"))
    cache.put(doc("a", etag=None))  # cannot back a conditional write
    assert cache.get("a") is None


def test_drop_forgets() -> None:
    cache = AccountCache()
    cache.put(doc("a"))
    cache.drop("a")
    cache.drop("never-there")
    assert cache.get("a") is None
