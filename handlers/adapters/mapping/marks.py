"""The ``marks`` container's documents: ``@mark``, ``@stale`` and mark passes."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from handlers.adapters.mapping.records import entry_to_document, read_entries
from handlers.adapters.mapping.values import dec, header, reading, ts
from handlers.core.contracts import format_timestamp
from handlers.core.decimals import format_decimal
from handlers.core.documents import HolderEntry, MarkDoc, MarkPass, PassMark, StaleWatch

__all__ = [
    "PASSES_PARTITION",
    "PASS_TTL_SECONDS",
    "holder_from_document",
    "holder_partition",
    "holder_to_document",
    "mark_from_document",
    "mark_to_document",
    "pass_from_document",
    "pass_to_document",
    "watch_from_document",
    "watch_to_document",
]

#: The partition of ``marks`` that keeps mark passes ('@' is outside the symbol charset).
PASSES_PARTITION = "@passes"
#: How long a mark pass document is kept in Azure (a fan-out unit runs within minutes).
PASS_TTL_SECONDS = 7 * 24 * 3600


def mark_to_document(mark: MarkDoc) -> dict[str, Any]:
    """The ``@mark`` document of a symbol."""
    return {
        **header("@mark", "mark", symbol=mark.symbol),
        "markId": mark.mark_id,
        "markPrice": format_decimal(mark.price),
        "timestamp": format_timestamp(mark.timestamp),
        "updatedAt": format_timestamp(mark.updated_at),
        "indexShards": mark.shards,
    }


def mark_from_document(doc: Mapping[str, Any]) -> MarkDoc:
    """Read a stored ``@mark`` document.

    Raises:
        UnreadableDocument: a wrong shape.
    """
    symbol = str(doc.get("symbol"))
    with reading(f"mark document of {symbol}"):
        return MarkDoc(
            symbol=symbol,
            mark_id=str(doc["markId"]),
            price=dec(str(doc["markPrice"]), f"mark of {symbol}"),
            timestamp=ts(doc["timestamp"], f"mark of {symbol}"),
            updated_at=ts(doc.get("updatedAt", doc["timestamp"]), f"mark of {symbol}"),
            etag=doc.get("_etag"),
            shards=int(doc.get("indexShards", 1)),
            stale_alerted=None if doc.get("staleAlerted") is None else str(doc["staleAlerted"]),
        )


def watch_to_document(watch: StaleWatch) -> dict[str, Any]:
    """The ``@stale`` document of a symbol."""
    return {
        **header("@stale", "staleWatch", symbol=watch.symbol),
        "alerted": watch.alerted,
        "pending": [entry_to_document(e) for e in watch.pending],
    }


def watch_from_document(doc: Mapping[str, Any]) -> StaleWatch:
    """Read a stored ``@stale`` document (raises UnreadableDocument: another version or
    a wrong shape).
    """
    with reading("stale watch document", doc, "staleWatch"):
        return StaleWatch(
            symbol=str(doc["symbol"]),
            alerted=str(doc["alerted"]),
            pending=read_entries(doc.get("pending", [])),
            etag=doc.get("_etag"),
        )


def _pass_mark(m: PassMark) -> dict[str, Any]:
    return {
        "symbol": m.symbol,
        "markPrice": format_decimal(m.price),
        "timestamp": format_timestamp(m.timestamp),
        "markId": m.mark_id,
    }


def _read_pass_mark(m: Mapping[str, Any]) -> PassMark:
    return PassMark(
        str(m["symbol"]),
        dec(m["markPrice"], "markPrice"),
        ts(m["timestamp"], "timestamp"),
        str(m["markId"]),
    )


def pass_to_document(mark_pass: MarkPass) -> dict[str, Any]:
    """A mark pass document (partition ``@passes`` of ``marks``, id the body digest)."""
    return {
        **header(mark_pass.body_digest, "markPass", symbol=PASSES_PARTITION),
        "bodyDigest": mark_pass.body_digest,
        "marks": [_pass_mark(m) for m in mark_pass.marks],
        "prior": [_pass_mark(m) for m in mark_pass.prior],
        "symbols": list(mark_pass.symbols),
        "rawBody": mark_pass.raw_body,
        "createdAt": format_timestamp(mark_pass.created_at),
        "ttl": PASS_TTL_SECONDS,
    }


def pass_from_document(doc: Mapping[str, Any]) -> MarkPass:
    """Read a mark pass document (raises UnreadableDocument: another version or a wrong shape)."""
    with reading("mark pass document", doc, "markPass"):
        return MarkPass(
            body_digest=str(doc["bodyDigest"]),
            marks=tuple(_read_pass_mark(m) for m in doc["marks"]),
            prior=tuple(_read_pass_mark(m) for m in doc.get("prior", ())),
            symbols=tuple(str(s) for s in doc["symbols"]),
            raw_body=str(doc.get("rawBody", "")),
            created_at=ts(doc["createdAt"], "createdAt"),
        )


#: Float bounds are narrowed by this fraction each way, so that the query on them (a float
#: comparison) returns every entry the mark leaves, and a few it does not (filtered exactly).
_NARROW = 1e-9


def holder_partition(symbol: str, shard: int) -> str:
    """The partition of ``marks`` that holds shard ``shard`` of a symbol's holder index
    (shard 0 is the symbol's own partition, next to its ``@mark``; '~' is outside the
    symbol charset)."""
    return symbol if shard == 0 else f"{symbol}~{shard}"


def holder_to_document(entry: HolderEntry) -> dict[str, Any]:
    """An index entry: the account's band on the symbol, as decimal strings (exact) and
    as narrowed floats (``lowF`` ≥ low, ``highF`` ≤ high) for the query."""
    assert entry.band is not None
    assert entry.version is not None
    low, high = entry.band
    low_f, high_f = _narrowed(low, high)
    return {
        **header(entry.entry_id, "holder", symbol=holder_partition(entry.symbol, entry.shard)),
        "market": entry.symbol,
        "accountId": entry.account_id,
        "bandsVersion": entry.version,
        "low": format_decimal(low),
        "high": format_decimal(high),
        "lowF": low_f,
        "highF": high_f,
    }


def _narrowed(low: Decimal, high: Decimal) -> tuple[float, float]:
    """The float bounds of a band, narrowed; a band a float cannot hold (beyond its range
    or below its precision) gets bounds every query returns (then checked exactly)."""
    low_f, high_f = float(low) * (1 + _NARROW), float(high) * (1 - _NARROW)
    if not (math.isfinite(low_f) and math.isfinite(high_f) and 0 < low_f <= high_f):
        return sys.float_info.max, -1.0
    return low_f, high_f


def holder_from_document(doc: Mapping[str, Any], symbol: str, shard: int) -> HolderEntry:
    """Read an index entry (one written before bands has neither band nor version).

    Raises:
        UnreadableDocument: a wrong shape.
    """
    account_id = str(doc.get("accountId"))
    with reading(f"index entry of {account_id} on {symbol}"):
        band = None
        if doc.get("low") is not None:
            band = (dec(doc["low"], "low"), dec(doc["high"], "high"))
        version = None if doc.get("bandsVersion") is None else int(doc["bandsVersion"])
        return HolderEntry(symbol, shard, account_id, band, version, doc.get("_etag"))
