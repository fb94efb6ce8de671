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
from handlers.core.documents import MarkPass, PassMark
from handlers.flows.deadletters import BodyRef
from handlers.flows.delivery import Delivery, Identity
from handlers.flows.deps import Deps, Outcome
from handlers.flows.rejections import reject
from handlers.flows.revaluation import Visit, revalue
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
    """One listed account and, per symbol it is listed under, its index entry's ETag."""

    account_id: str
    etags: Mapping[str, str]


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
    """The fan-out messages for ``holdings``: at most ``batch`` accounts and about
    :data:`UNIT_BYTES` of JSON each."""
    texts: list[str] = []
    rows: list[list[Any]] = []
    size = 0

    def flush() -> None:
        if rows:
            unit: dict[str, Any] = {"type": UNIT_TYPE, "schemaVersion": 1}
            unit["bodyDigest"] = body_digest
            if retry:
                unit["retry"] = True
            texts.append(json.dumps({**unit, "accounts": rows}, separators=(",", ":")))

    for holding in holdings:
        row = [holding.account_id, dict(holding.etags)]
        cost = len(json.dumps(row)) + 1
        if rows and (len(rows) >= batch or size + cost > UNIT_BYTES):
            flush()
            rows, size = [], 0
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
        if (
            not isinstance(row, list)
            or len(row) != 2
            or not isinstance(row[0], str)
            or not isinstance(row[1], dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in row[1].items())
        ):
            raise BodyError("SCHEMA_INVALID", "a unit account must be [accountId, {symbol: etag}]")
        holdings.append(Holding(row[0], dict(row[1])))
    return Unit(digest, tuple(holdings), retry)


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
    gate = asyncio.Semaphore(MARK_CONCURRENCY)
    sent: dict[str, list[Alert]] = {}
    written = 0

    async def one(holding: Holding) -> None:
        nonlocal written
        marks = tuple(m for m in mark_pass.marks if m.symbol in holding.etags)
        async with gate:
            result = await revalue(deps, holding.account_id, Visit(marks, key, key, delivery, body))
            if result is None:
                return
            if marks and not result.holds:
                for symbol in sorted({m.symbol for m in marks}):
                    etag = holding.etags[symbol]
                    await deps.store.delete_holder(symbol, holding.account_id, etag)
        written += result.wrote
        for alert in result.alerts:
            sent.setdefault(alert.sourceId, []).append(alert)

    # Accounts are independent (one conditional write each): visit them concurrently,
    # wait for all, then fail with the first error (the host retries the whole message).
    results = await asyncio.gather(*(one(h) for h in holdings), return_exceptions=True)
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
    applied = MarkPass(
        mark_pass.body_digest, marks, mark_pass.symbols, mark_pass.raw_body, mark_pass.created_at
    )
    written, sent = await visit_accounts(
        deps, applied, unit.holdings, delivery, deps.settings.marks_queue
    )
    alerts = tuple(a for found in sent.values() for a in found)
    detail = f"{written} of {len(unit.holdings)} account(s) re-valued"
    return Outcome("APPLIED", pass_key(unit.body_digest), alerts=alerts, detail=detail)


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
