"""A mark message's pass over the holders of its symbols, and its fan-out units.

The pass visits each listed account once (:func:`visit_accounts`: one conditional write
per account it changes, under the entry key ``marks:<digest>``). When there are more
holders than ``MARKS_FANOUT_BATCH``, the mark invocation visits the first batch itself and
hands the rest to ``MARKS_FANOUT_QUEUE`` in units (:func:`unit_texts`); a unit carries the
body digest and its accounts (with the index entries' ETags), and the marks come from the
pass document stored first (:class:`~handlers.core.documents.MarkPass`). Units are
idempotent: a unit delivered twice, or one that meets an account a newer mark already
moved, changes nothing more.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from handlers.core.contracts import Alert
from handlers.core.decode import BodyError, JsonNumber
from handlers.core.documents import HolderEntry, MarkPass, PassMark
from handlers.flows.deadletters import BodyRef
from handlers.flows.delivery import Delivery, Identity
from handlers.flows.deps import Deps, Outcome
from handlers.flows.rejections import reject
from handlers.flows.revaluation import Board, Deferred, Visit, finish_pass, revalue
from handlers.flows.stored_marks import read_mark

__all__ = [
    "UNIT_TYPE",
    "Holding",
    "Unit",
    "handle_fanout",
    "handle_unit",
    "parse_unit",
    "pass_key",
    "read_unit",
    "unit_texts",
    "visit_accounts",
]

#: Accounts one mark invocation re-values at once (each is one read and one write).
MARK_CONCURRENCY = 16
UNIT_TYPE = "MARK_PASS"
#: The JSON text of one unit stays below this (a queue message holds 64 KiB, base64 grows
#: it by a third).
UNIT_BYTES = 40_000
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def pass_key(body_digest: str) -> str:
    """The outbox key of a mark message's write on an account (record ``@marks:<digest>``)."""
    return f"marks:{body_digest}"


@dataclass(frozen=True)
class Holding:
    """One listed account and the index entries that listed it (a mark leaves their
    band)."""

    account_id: str
    entries: tuple[HolderEntry, ...]

    @property
    def shard(self) -> int:
        """The index shard that listed it (the lowest, should entries disagree)."""
        return min((e.shard for e in self.entries), default=0)


@dataclass(frozen=True)
class Unit:
    """A fan-out unit: the accounts of one mark pass a unit invocation visits; ``retry``
    when a retry (or the poison path) of the mark message handed it on, so that it may
    finish what the failed try left on them."""

    body_digest: str
    holdings: tuple[Holding, ...]
    retry: bool = False


def unit_texts(
    body_digest: str, holdings: Sequence[Holding], batch: int, retry: bool = False
) -> list[str]:
    """The fan-out messages for ``holdings`` (ordered by shard): the accounts of one shard
    each, at most ``batch`` of them and about :data:`UNIT_BYTES` of JSON — so a unit's
    index writes go to one partition per symbol."""
    texts: list[str] = []
    rows: list[list[Any]] = []
    size = 0
    shard = holdings[0].shard if holdings else 0

    def flush() -> None:
        if rows:
            unit: dict[str, Any] = {"type": UNIT_TYPE, "schemaVersion": 1}
            unit["bodyDigest"] = body_digest
            if retry:
                unit["retry"] = True
            texts.append(json.dumps({**unit, "accounts": rows}, separators=(",", ":")))

    for holding in holdings:
        row = [
            holding.account_id,
            [[e.symbol, e.shard, e.version, e.etag] for e in holding.entries],
        ]
        cost = len(json.dumps(row)) + 1
        if rows and (len(rows) >= batch or size + cost > UNIT_BYTES or holding.shard != shard):
            flush()
            rows, size = [], 0
        shard = holding.shard
        rows.append(row)
        size += cost
    flush()
    return texts


def parse_unit(obj: Mapping[str, Any]) -> Unit:
    """Read a fan-out unit body (a JSON object).

    Raises:
        BodyError: not a unit this app writes (``SCHEMA_INVALID``).
    """
    digest = obj.get("bodyDigest")
    rows = obj.get("accounts")
    version = obj.get("schemaVersion")
    retry = obj.get("retry", False)
    if (
        obj.get("type") != UNIT_TYPE
        or not isinstance(retry, bool)
        or not (isinstance(version, JsonNumber) and version.text == "1")
        or not isinstance(digest, str)
        or not _DIGEST_RE.fullmatch(digest)
        or not isinstance(rows, list)
    ):
        raise BodyError("SCHEMA_INVALID", f"not a {UNIT_TYPE} unit of this app")
    holdings = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 2 or not isinstance(row[0], str):
            raise BodyError("SCHEMA_INVALID", "a unit account must be [accountId, entries]")
        holdings.append(Holding(row[0], _entries(row[0], row[1])))
    return Unit(digest, tuple(holdings), retry)


def _entries(account_id: str, raw: object) -> tuple[HolderEntry, ...]:
    """A unit row's index entries: ``[[symbol, shard, version, etag], …]`` (or, from a unit
    written before bands, ``{symbol: etag}``).

    Raises:
        BodyError: neither shape.
    """
    if isinstance(raw, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        return tuple(HolderEntry(k, 0, account_id, None, None, v) for k, v in raw.items())
    if not isinstance(raw, list):
        raise BodyError("SCHEMA_INVALID", "a unit account's entries must be a list")
    out = []
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 4
            and isinstance(item[0], str)
            and isinstance(item[1], JsonNumber)
            and item[1].text.isdigit()
            and (item[2] is None or (isinstance(item[2], JsonNumber) and item[2].text.isdigit()))
            and (item[3] is None or isinstance(item[3], str))
        ):
            raise BodyError("SCHEMA_INVALID", "a unit entry must be [symbol, shard, version, etag]")
        version = None if item[2] is None else int(item[2].text)
        out.append(HolderEntry(item[0], int(item[1].text), account_id, None, version, item[3]))
    return tuple(out)


async def visit_accounts(
    deps: Deps,
    mark_pass: MarkPass,
    holdings: Sequence[Holding],
    delivery: Delivery,
    queue: str,
) -> tuple[int, dict[str, list[Alert]]]:
    """Visit every holding: apply the pass's marks of the symbols it is listed under (in
    order), complete what this message left on it, and drop its index entries when it
    holds none of them any more (conditionally on the listed ETag: a re-open wins). Returns
    how many accounts were written and the alerts sent, by sourceId (mark id).

    Raises:
        StaleAccountState, TransientStoreError: an account could not be visited (the
            message or unit fails and is retried: visits already made stay made).
        Exception: the alerts queue failed.
    """
    key = pass_key(mark_pass.body_digest)
    body = BodyRef(mark_pass.body_digest, mark_pass.raw_body, queue)
    board = Board(deps, {m.symbol: m for m in mark_pass.prior} | _unknown(mark_pass))
    gate = asyncio.Semaphore(MARK_CONCURRENCY)
    deferred = Deferred(key)
    sent: dict[str, list[Alert]] = {}
    written = 0

    async def one(holding: Holding) -> None:
        nonlocal written
        visit = Visit(mark_pass.marks, key, key, delivery, body, board, holding.entries, deferred)
        async with gate:
            result = await revalue(deps, holding.account_id, visit)
        if result is None:
            return
        written += result.wrote
        for alert in result.alerts:
            sent.setdefault(alert.sourceId, []).append(alert)

    # Accounts are independent (one conditional write each): visit them concurrently,
    # wait for all, finish what was written (index, alerts, one sent marker), then fail
    # with the first error (the host retries the whole message).
    results = await asyncio.gather(*(one(h) for h in holdings), return_exceptions=True)
    for alert in await finish_pass(deps, deferred):
        sent.setdefault(alert.sourceId, []).append(alert)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return written, sent


async def handle_unit(deps: Deps, delivery: Delivery, unit: Unit) -> Outcome:
    """Run one fan-out unit of a pass. A retry (or the poison path) that finds a symbol's
    stored mark newer than the pass's only completes what the pass left on its accounts.

    Raises:
        StaleAccountState, TransientStoreError, UnreadableDocument: retry by the host.
        Exception: the alerts queue failed.
    """
    delivery = replace(delivery, redelivered=delivery.redelivered or unit.retry)
    mark_pass = await deps.store.read_pass(unit.body_digest)
    if mark_pass is None:
        return Outcome("IGNORED", unit.body_digest, detail="its pass document is gone")
    marks: tuple[PassMark, ...] = mark_pass.marks
    if delivery.retry:
        current = []
        for symbol in sorted({m.symbol for m in marks}):
            stored = await read_mark(deps, symbol)
            newest = max(m.timestamp for m in marks if m.symbol == symbol)
            if stored is None or stored.timestamp <= newest:
                current.append(symbol)
        marks = tuple(m for m in marks if m.symbol in current)
    applied = replace(mark_pass, marks=marks)
    written, sent = await visit_accounts(
        deps, applied, unit.holdings, delivery, deps.settings.marks_queue
    )
    alerts = tuple(a for found in sent.values() for a in found)
    detail = f"{written} of {len(unit.holdings)} account(s) re-valued"
    return Outcome("APPLIED", pass_key(unit.body_digest), alerts=alerts, detail=detail)


def _unknown(mark_pass: MarkPass) -> dict[str, PassMark | None]:
    """The pass's symbols that had no stored mark before it (valued at none)."""
    known = {m.symbol for m in mark_pass.prior}
    return {m.symbol: None for m in mark_pass.marks if m.symbol not in known}


def read_unit(delivery: Delivery) -> Unit | BodyError:
    """The unit a fan-out body carries, or why it carries none."""
    decoded, error = delivery.decode()
    if decoded is None:
        assert error is not None
        return error
    try:
        return parse_unit(decoded.obj)
    except BodyError as exc:
        return exc


async def handle_fanout(deps: Deps, delivery: Delivery) -> Outcome:
    """A fan-out body: run its unit, or reject a body that is none (as on any queue).

    Raises:
        StaleAccountState, TransientStoreError, UnreadableDocument: retry by the host.
        Exception: the alerts queue failed.
    """
    unit = read_unit(delivery)
    if isinstance(unit, BodyError):
        ident = Identity(delivery.digest, None)
        return await reject(deps, delivery, ident, [(unit.code, unit.message)])
    return await handle_unit(deps, delivery, unit)
