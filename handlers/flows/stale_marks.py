"""The stale-mark watch (a timer, every minute): one STALE_MARK alert per stale mark.

A catalog symbol that accounts hold while its stored mark is older than
``STALE_MARK_AFTER_SECONDS`` (or missing) raises STALE_MARK (sourceId the stale mark's
id, ``<symbol>@none`` without one). The symbol's watch document (``@stale``) is the
alert's outbox: it is written naming the stale mark, with the alert pending; the alert is
sent; a second write clears it. The host runs one tick at a time, so a tick that finds an
alert pending knows the tick that committed it is gone, and sends it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from handlers.core.alerts import AlertSpec
from handlers.core.contracts import format_timestamp
from handlers.core.documents import Entry, StaleWatch
from handlers.errors import StaleAccountState
from handlers.flows import outbox
from handlers.flows.banding import list_leavers
from handlers.flows.delivery import Identity, alerts_for
from handlers.flows.deps import Deps, Outcome
from handlers.flows.stored_marks import read_mark

__all__ = ["check_stale_marks"]


async def _send_and_clear(deps: Deps, watch: StaleWatch) -> None:
    async def clear(n: int) -> None:
        current = watch if n == 0 else await deps.store.read_watch(watch.symbol)
        if current is not None and current.pending:
            await deps.store.write_watch(replace(current, pending=()), current.etag)

    await outbox.finish_unrecorded(deps, watch.pending, clear, f"stale watch {watch.symbol}")


async def check_stale_marks(deps: Deps) -> list[Outcome]:
    """Alert STALE_MARK once per stale mark of a held symbol.

    Raises:
        TransientStoreError, UnreadableDocument: the store is unavailable (the timer fires
            again later).
        Exception: the alerts queue failed (the next tick sends the pending alert).
    """
    now = deps.clock()
    limit = timedelta(seconds=deps.settings.stale_mark_after_seconds)
    outcomes: list[Outcome] = []
    for symbol in sorted(deps.catalog.instruments):
        watch = await deps.store.read_watch(symbol)
        if watch is not None and watch.pending:
            await _send_and_clear(deps, watch)
            alerts = tuple(a for e in watch.pending for a in e.alerts)
            outcomes.append(Outcome("APPLIED", watch.alerted, alerts=alerts, detail="stale mark"))
            watch = await deps.store.read_watch(symbol)  # as cleared (its new ETag)
        mark = await read_mark(deps, symbol)
        stamp = mark.timestamp if mark is not None else None
        if stamp is not None and now - stamp <= limit:
            continue
        source = mark.mark_id if mark is not None else f"{symbol}@none"
        alerted = watch.alerted if watch else (mark.stale_alerted if mark else None)
        if alerted == source:  # (a mark document of an earlier version names it itself)
            continue
        if not await list_leavers(deps, symbol, [], mark.shards if mark else 1, everyone=True):
            continue
        age = "no mark yet" if stamp is None else f"last mark {format_timestamp(stamp)}"
        spec = AlertSpec(
            "STALE_MARK",
            scope=symbol,
            symbol=symbol,
            reasons=(("STALE_MARK", f"{symbol}: {age}, older than {limit.total_seconds():g} s"),),
            metrics={"markPrice": mark.price if mark is not None else None},
        )
        alerts = alerts_for([spec], Identity(source, None, None, symbol), now)
        committed = StaleWatch(symbol, source, (Entry("stale", source, alerts, now),))
        try:
            etag = await deps.store.write_watch(committed, watch.etag if watch else None)
        except StaleAccountState:
            continue  # another tick decided it: that one sends it
        await _send_and_clear(deps, replace(committed, etag=etag))
        outcomes.append(Outcome("APPLIED", source, alerts=alerts, detail="stale mark"))
    return outcomes
