"""The stored mark of each symbol (``@mark`` in ``marks``): reading it (or this process's
copy, when ``MARK_CACHE_SECONDS`` allows) and storing a newer one.

A stored mark only moves forward: :func:`store_newest` writes conditionally on the ETag of
what it read, and a mark not newer than the stored one is not written.
"""

from __future__ import annotations

from dataclasses import replace

from handlers.core.documents import MarkDoc, PassMark
from handlers.flows.conflicts import until_written
from handlers.flows.deps import Deps

__all__ = ["read_mark", "store_newest"]


async def read_mark(deps: Deps, symbol: str, max_age: float = 0.0) -> MarkDoc | None:
    """The stored mark of ``symbol``: this process's copy when it is at most ``max_age``
    seconds old (``MARK_CACHE_SECONDS``, for a fill's first look only), else a read, which
    the copy then keeps.

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
    """
    now = deps.clock()
    if max_age > 0:
        hit = deps.runtime.marks.get(symbol, now, max_age)
        if hit is not None:
            return hit[0]
    mark = await deps.store.read_mark(symbol)
    deps.runtime.marks.put(symbol, mark, now)
    return mark


async def store_newest(deps: Deps, mark: PassMark, known: MarkDoc | None = None) -> MarkDoc:
    """Store ``mark`` unless the stored one is as new or newer; returns the stored mark
    after the call (this one, or the one that was already there). ``known`` is the stored
    mark as the caller just read it: the first attempt writes conditionally on its ETag
    (a stale one costs a 412 and a fresh read), later ones read again.

    Raises:
        StaleAccountState: every attempt lost its race.
        TransientStoreError, UnreadableDocument: the store failed.
    """

    async def attempt(n: int) -> MarkDoc:
        current = known if n == 0 and known is not None else await read_mark(deps, mark.symbol)
        if current is not None and current.timestamp >= mark.timestamp:
            return current
        now = deps.clock()
        doc = MarkDoc(
            symbol=mark.symbol,
            mark_id=mark.mark_id,
            price=mark.price,
            timestamp=mark.timestamp,
            updated_at=now,
            shards=max(current.shards if current else 1, deps.settings.marks_index_shards),
        )
        etag = await deps.store.write_mark(doc, current.etag if current else None)
        stored = replace(doc, etag=etag)
        deps.runtime.marks.put(mark.symbol, stored, now)
        return stored

    return await until_written(attempt, deps.sleep, f"mark of {mark.symbol}")
