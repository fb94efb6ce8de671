"""An account's risk bands and its entries in the holder index.

Every account write keeps the bands it finds while they still hold for the new ledger
(:func:`handlers.core.bands.box_holds`), else sets new ones around the marks it valued at
(:func:`handlers.core.bands.band_box`, ``bands_version`` = the account's new version).
New bands are written to the index after the account (:func:`write_index`): one entry
per symbol, ``holder:<accountId>:<bandsVersion>`` in the account's shard, replacing the
previous version's in the same request where they share a partition.

Soundness across writers rests on one order: a mark is stored before its pass queries the
index, and an entry is written before its writer reads the mark again (the post-check).
Whichever comes second sees the other: the pass finds the new band, or the writer finds a
mark outside it and re-values the account at once (a catch-up). An older version's entry
that outlives its account version (a crash, two writers racing) only makes a mark visit
the account once more, and that visit removes it.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from handlers.core.bands import Band, band_box, box_holds
from handlers.core.documents import AccountDoc, HolderEntry, MarkDoc
from handlers.core.state import Ledger, apply_mark
from handlers.flows.deps import Deps
from handlers.flows.stored_marks import read_mark

__all__ = [
    "IndexWrites",
    "apply_index",
    "at_latest_marks",
    "banded",
    "entries_of",
    "held_symbols",
    "latest_marks",
    "list_leavers",
    "shard_of",
    "write_index",
]


#: The band of a symbol no mark has reached yet (its positions are valued at their fill
#: prices, ``markSource`` FILL_PRICE): every mark leaves it (low > high), the index lists
#: it for every query, and the symbol's first mark re-values the account.
EVERY_MARK_LEAVES: Band = (Decimal(1), Decimal(0))


def shard_of(account_id: str, shards: int) -> int:
    """The index shard of an account (stable across processes: CRC-32 of its id)."""
    return zlib.crc32(account_id.encode()) % shards if shards > 1 else 0


def held_symbols(ledger: Ledger) -> list[str]:
    """The symbols of the ledger's open positions, sorted."""
    return sorted({p.symbol for p in ledger.positions if p.is_open})


def banded(deps: Deps, before: AccountDoc, after: AccountDoc) -> AccountDoc:
    """``after`` with bands for its ledger: ``before``'s while they still hold (same open
    symbols, every state provably constant over the box), else a new box around the
    positions' marks, under the account's new version."""
    ledger = after.ledger
    catalog, ratio = deps.catalog, deps.settings.margin_call_ratio
    open_symbols = [s for s in held_symbols(ledger) if catalog.get(s) is not None]
    stored = before.bands
    if sorted(stored) == open_symbols and (
        not open_symbols or box_holds(ledger, catalog, ratio, stored)
    ):
        return replace(after, bands=stored, bands_version=before.bands_version)
    bands = band_box(ledger, catalog, ratio, deps.settings.risk_band_width) if open_symbols else {}
    # Valued at a fill price: its first mark re-values it. (This also covers the one case
    # without a sound band, legs at different marks: a mark moves every leg of a symbol,
    # so only legs no mark has reached can differ.)
    for symbol in open_symbols:
        if any(p.is_open and p.symbol == symbol and p.mark_price is None for p in ledger.positions):
            bands[symbol] = EVERY_MARK_LEAVES
    return replace(after, bands=bands, bands_version=after.version)


def entries_of(deps: Deps, account: AccountDoc) -> list[HolderEntry]:
    """The index entries ``account``'s bands call for."""
    shard = shard_of(account.account_id, deps.settings.marks_index_shards)
    return [
        HolderEntry(symbol, shard, account.account_id, band, account.bands_version)
        for symbol, band in sorted(account.bands.items())
    ]


def _previous(deps: Deps, before: AccountDoc, symbol: str) -> HolderEntry | None:
    """The entry ``before`` left for ``symbol`` (one written before bands: the legacy
    ``holder:<accountId>`` of shard 0)."""
    if symbol in before.bands:
        shard = shard_of(before.account_id, deps.settings.marks_index_shards)
        return HolderEntry(symbol, shard, before.account_id, None, before.bands_version)
    if any(p.is_open and p.symbol == symbol for p in before.ledger.positions):
        return HolderEntry(symbol, 0, before.account_id, None, None)
    return None


@dataclass
class IndexWrites:
    """Index writes gathered from one or many account writes, by partition (symbol,
    shard): the entries to upsert, then those to delete."""

    puts: dict[tuple[str, int], list[HolderEntry]] = field(default_factory=dict)
    drops: dict[tuple[str, int], list[HolderEntry]] = field(default_factory=dict)

    def put(self, entry: HolderEntry) -> None:
        self.puts.setdefault((entry.symbol, entry.shard), []).append(entry)

    def drop(self, entry: HolderEntry) -> None:
        self.drops.setdefault((entry.symbol, entry.shard), []).append(entry)

    def add(self, deps: Deps, before: AccountDoc | None, after: AccountDoc) -> list[str]:
        """What writing ``after`` (over ``before``; None re-asserts every entry, for a
        retry) asks of the index: its entries when its bands are new, replacing
        ``before``'s, and the removal of the entries of symbols it no longer holds.
        Returns the symbols whose entries it writes.
        """
        if before is not None and after.bands_version == before.bands_version:
            return []
        written = []
        for entry in entries_of(deps, after):
            self.put(entry)
            written.append(entry.symbol)
            replaces = _previous(deps, before, entry.symbol) if before is not None else None
            if replaces is not None and replaces.entry_id != entry.entry_id:
                self.drop(replaces)
        if before is not None:
            for symbol in held_symbols(before.ledger):
                if symbol not in after.bands and (old := _previous(deps, before, symbol)):
                    self.drop(old)
        return written


async def apply_index(deps: Deps, writes: IndexWrites, read: bool) -> dict[str, MarkDoc | None]:
    """Run the gathered writes: per partition, its upserts then its deletes (then, on
    shard 0, the mark's read: free there), partitions concurrently. Returns each symbol
    with an entry written and its mark as read after it (None: not read — ``read`` False,
    or another shard: the caller reads after all of them).

    Raises:
        TransientStoreError: the store failed.
    """
    parts = sorted(set(writes.puts) | set(writes.drops))

    async def one(part: tuple[str, int]) -> MarkDoc | None:
        symbol, shard = part
        puts, drops = writes.puts.get(part, []), writes.drops.get(part, [])
        return await deps.store.index_holders(symbol, shard, puts, drops, read and bool(puts))

    found = await asyncio.gather(*(one(p) for p in parts))
    marks: dict[str, MarkDoc | None] = {s: None for s, _ in writes.puts}
    for (symbol, _), mark in zip(parts, found, strict=True):
        if mark is not None:
            marks[symbol] = mark
            deps.runtime.marks.put(symbol, mark, deps.clock())
    return marks


async def write_index(
    deps: Deps, before: AccountDoc | None, after: AccountDoc, read: bool = True
) -> dict[str, MarkDoc | None]:
    """Write ``after``'s index entries when its bands are new (replacing ``before``'s;
    ``before`` None re-asserts them all, for a retry), and drop the entries of symbols it
    no longer holds. Returns each written symbol's stored mark as read after its entry
    (``read`` False: only where the read comes free; the caller reads after many).

    Raises:
        TransientStoreError: the store failed (the caller's message is retried, and the
            retry re-asserts the entries).
    """
    writes = IndexWrites()
    if not writes.add(deps, before, after) and not writes.drops:
        return {}
    marks = await apply_index(deps, writes, read=True)
    if read:
        unread = [s for s, m in marks.items() if m is None]
        for symbol in unread:
            marks[symbol] = await read_mark(deps, symbol)
    return marks


async def list_leavers(
    deps: Deps, symbol: str, prices: Sequence[Decimal], stored_shards: int, everyone: bool
) -> list[HolderEntry]:
    """The index entries of ``symbol`` whose band one of ``prices`` leaves (every entry
    when ``everyone``: a retry must find the accounts its failed try re-valued, whose new
    bands hold its marks), over every shard a writer may have used (one query each,
    concurrently).

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
    """
    low = min(prices, default=Decimal(0))
    high = max(prices, default=Decimal(0))
    if everyone or not prices:
        low = high = Decimal(0)  # every band lies above 0: every entry
    count = max(deps.settings.marks_index_shards, stored_shards)
    found = await asyncio.gather(
        *(deps.store.query_holders(symbol, k, low, high) for k in range(count))
    )
    return [
        e
        for shard in found
        for e in shard
        if everyone or e.band is None or e.band[0] > low or e.band[1] < high
    ]


async def latest_marks(
    deps: Deps, symbols: Iterable[str], max_age: float = 0.0
) -> dict[str, MarkDoc]:
    """The stored mark of each symbol that has one (one read-many request for several;
    this process's copy when at most ``max_age`` seconds old: ``MARK_CACHE_SECONDS``, an
    event's first look only — its post-check reads the stored one).

    Raises:
        TransientStoreError, UnreadableDocument: the store failed.
    """
    wanted = sorted(set(symbols))
    if len(wanted) == 1 or max_age > 0:
        found = await asyncio.gather(*(read_mark(deps, s, max_age) for s in wanted))
        return {s: m for s, m in zip(wanted, found, strict=True) if m is not None}
    now = deps.clock()
    marks = await deps.store.read_marks(wanted)  # one request for them all
    for symbol in wanted:
        deps.runtime.marks.put(symbol, marks.get(symbol), now)
    return marks


def at_latest_marks(ledger: Ledger, marks: Mapping[str, MarkDoc]) -> Ledger:
    """``ledger`` with each position moved to the stored mark of its symbol where that is
    newer than its own (a mark never moves a position back)."""
    for symbol, mark in sorted(marks.items()):
        ledger = apply_mark(ledger, symbol, mark.price, mark.timestamp)
    return ledger


def outside_band(bands: Mapping[str, Band], symbol: str, price: Decimal) -> bool:
    """Whether ``price`` leaves the account's band on ``symbol`` (no band: it does)."""
    band = bands.get(symbol)
    return band is None or price < band[0] or price > band[1]
