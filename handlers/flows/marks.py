"""The marks queue: MARK and MARKS. Each accepted mark re-values the open positions on its
symbol.

Route of one body: validate each entry (a bad one is rejected alone) → per symbol, store
the newest of the message's marks FIRST, if it is newer than the stored one → list the
holders of the stored symbols → visit each holder once (:mod:`handlers.flows.mark_pass`),
the first ``MARKS_FANOUT_BATCH`` here and the rest as fan-out units.

Because the mark is stored before its pass, an event that lands while the pass runs sees
it: a fill that opens the symbol reads it (or, if it read the older one first, its
catch-up after indexing itself reads this one), and a visit never moves a position back to
an older mark. A retry of a message whose mark is stored runs the pass again (completing
what the failed try left); a first delivery finding its mark stored is a copy and ignores
it; a retry finding a newer mark stored only completes its own entries on the holders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from handlers.core.contracts import Mark, MarkEntry, Marks, mark_id, validate_inbound
from handlers.core.documents import HolderEntry, MarkDoc, MarkPass, PassMark
from handlers.flows.banding import list_leavers
from handlers.flows.delivery import (
    Delivery,
    Identity,
    identity,
    raw_text,
    schema_reasons,
    well_formed_symbol,
)
from handlers.flows.deps import Deps, Outcome
from handlers.flows.mark_pass import Holding, unit_texts, visit_accounts
from handlers.flows.rejections import reject
from handlers.flows.stored_marks import read_mark, store_newest

__all__ = ["apply_marks", "handle_marks", "parse_marks"]


def parse_marks(obj: dict[str, Any]) -> list[tuple[Any, str | None, bool]] | None:
    """The entries of a MARK or MARKS body: (entry, fallback sourceId suffix, single);
    None when the body is neither (or a MARKS whose shape is wrong as a whole)."""
    kind = obj.get("type")
    if kind == "MARK":
        return [(obj, None, True)]
    if kind != "MARKS":
        return None
    try:
        batch = validate_inbound(obj)
    except ValidationError:
        return None
    assert isinstance(batch, Marks)
    return [(e, str(i), False) for i, e in enumerate(batch.marks)]


async def handle_marks(deps: Deps, delivery: Delivery) -> list[Outcome]:
    """Validate a marks body, reject its bad entries, apply the others.

    Raises:
        TransientStoreError, StaleAccountState: retry by the host.
        Exception: the alerts or fan-out queue failed.
    """
    digest = delivery.digest
    decoded, error = delivery.decode()
    if decoded is None:
        assert error is not None
        return [await reject(deps, delivery, Identity(digest, None), [(error.code, error.message)])]
    obj = decoded.obj
    entries = parse_marks(obj)
    if entries is None:
        if obj.get("type") == "MARKS":
            try:
                validate_inbound(obj)
            except ValidationError as exc:
                return [await reject(deps, delivery, Identity(digest, None), schema_reasons(exc))]
        kind = str(obj.get("type"))[:40]
        reason = f"type must be MARK or MARKS on this queue, got {kind!r}"
        return [await reject(deps, delivery, identity(obj, digest), [("SCHEMA_INVALID", reason)])]
    outcomes: list[Outcome] = []
    valid: list[PassMark] = []
    for entry, index, single in entries:
        checked = await _validate_entry(deps, delivery, entry, index, single)
        if isinstance(checked, Outcome):
            outcomes.append(checked)
        else:
            valid.append(checked)
    return outcomes + (await apply_marks(deps, valid, delivery) if valid else [])


def _ident(obj: object, index: str | None, digest: str) -> Identity:
    symbol = obj.get("symbol") if isinstance(obj, dict) else None
    mid = mark_id(symbol, obj.get("timestamp")) if isinstance(obj, dict) else None
    fallback = digest if index is None else f"{digest}:{index}"
    return Identity(mid or fallback, None, None, well_formed_symbol(symbol))


async def _validate_entry(
    deps: Deps, delivery: Delivery, obj: Any, index: str | None, single: bool
) -> PassMark | Outcome:
    """A mark to apply, or the outcome of its rejection."""
    ident = _ident(obj, index, delivery.digest)
    if not isinstance(obj, dict):
        return await reject(
            deps, delivery, ident, [("SCHEMA_INVALID", "a MARKS entry must be an object")]
        )
    try:
        entry: Mark | MarkEntry = (
            validate_inbound(obj) if single else MarkEntry.model_validate(obj)  # type: ignore[assignment]
        )
    except ValidationError as exc:
        return await reject(deps, delivery, ident, schema_reasons(exc))
    if deps.catalog.get(entry.symbol) is None:
        reason = f"symbol {entry.symbol[:40]!r} is not in the instrument catalog"
        return await reject(deps, delivery, ident, [("UNKNOWN_SYMBOL", reason)])
    return PassMark(entry.symbol, entry.markPrice, entry.timestamp, ident.source_id)


def _is(stored: MarkDoc | None, mark: PassMark) -> bool:
    return stored is not None and stored.timestamp == mark.timestamp and stored.price == mark.price


async def apply_marks(deps: Deps, marks: Sequence[PassMark], delivery: Delivery) -> list[Outcome]:
    """Store each symbol's newest mark (when newer than the stored one), then run the pass
    over the holders of the symbols this message applies (or, on a retry, left entries on).

    Raises:
        TransientStoreError, StaleAccountState: retry by the host.
        Exception: the alerts or fan-out queue failed.
    """
    ordered: list[PassMark] = []
    for m in sorted(marks, key=lambda m: (m.timestamp, m.symbol)):
        if m.mark_id not in {o.mark_id for o in ordered}:
            ordered.append(m)
    by_symbol: dict[str, list[PassMark]] = {}
    for m in ordered:
        by_symbol.setdefault(m.symbol, []).append(m)
    applied: list[PassMark] = []
    finish: set[str] = set()
    prior: list[PassMark] = []
    shards: dict[str, int] = {}
    for symbol, mine in sorted(by_symbol.items()):
        before = await read_mark(deps, symbol)
        newer = [m for m in mine if before is None or m.timestamp > before.timestamp]
        if before is not None:
            shards[symbol] = before.shards
        if before is not None and not _is(before, mine[-1]):
            prior.append(PassMark(symbol, before.price, before.timestamp, before.mark_id))
        if newer:  # stored first: whatever lands from now on sees it
            stored = await store_newest(deps, newer[-1], before)
            shards[symbol] = stored.shards
            applied += newer
        elif delivery.retry and _is(before, mine[-1]):
            applied += mine  # its own mark is stored: run the pass again
        elif delivery.retry:
            finish.add(symbol)  # superseded: complete what the failed tries left
    ids = {m.mark_id for m in applied}
    outcomes = [
        Outcome("IGNORED", m.mark_id, detail="not newer than the stored mark")
        for m in ordered
        if m.mark_id not in ids
    ]
    symbols = sorted({m.symbol for m in applied} | finish)
    if not symbols:
        return outcomes
    listed: dict[str, list[HolderEntry]] = {}
    for symbol in symbols:
        prices = [m.price for m in applied if m.symbol == symbol]
        for entry in await list_leavers(
            deps, symbol, prices, shards.get(symbol, 1), delivery.retry
        ):
            listed.setdefault(entry.account_id, []).append(entry)
    holdings = sorted(
        (Holding(a, tuple(listed[a])) for a in listed), key=lambda h: (h.shard, h.account_id)
    )
    mark_pass = MarkPass(
        delivery.digest,
        tuple(sorted(applied, key=lambda m: (m.timestamp, m.symbol))),
        tuple(symbols),
        raw_text(delivery.raw),
        deps.clock(),
        tuple(prior),
    )
    batch = deps.settings.marks_fanout_batch
    here, rest = holdings[:batch], holdings[batch:]
    handed = ""
    if rest:  # stored before the units go out: a unit reads the pass
        await deps.store.save_pass(mark_pass)
        texts = unit_texts(delivery.digest, rest, batch, delivery.retry)
        await deps.fanout.send_texts(texts)
        handed = f"; {len(rest)} handed on in {len(texts)} unit(s)"
    written, sent = await visit_accounts(deps, mark_pass, here, delivery, delivery.queue)
    for m in applied:
        outcomes.append(
            Outcome(
                "APPLIED",
                m.mark_id,
                alerts=tuple(sent.get(m.mark_id, ())),
                detail=f"{written} account(s) re-valued{handed}",
            )
        )
    return outcomes
