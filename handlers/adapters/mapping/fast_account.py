"""The account document's fast codec: the same typed values and the same JSON as the
reference mapping (:mod:`handlers.adapters.mapping.account`), for a fraction of the CPU.

Reading builds the dataclasses straight from the usual document — exact JSON types
where the reference converts (``str()``, ``int()``), remembered decimal and timestamp
conversions — and gives up (None) on anything else, so the reference reads it and every
rejection keeps its message. Writing is the reference's layout with remembered formatting.
``tests/unit/test_fast_codec.py`` holds both to the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from handlers.adapters.mapping.records import entry_from_document, entry_to_document
from handlers.adapters.mapping.values import (
    decimal_text,
    figure_text,
    header,
    stamp_text,
    stored_decimal,
    stored_time,
)
from handlers.core.documents import ACCOUNT_ID, AccountDoc, Entry
from handlers.core.state import Ledger, Position, RiskState, Wallet
from handlers.core.valuation import Valuation

__all__ = ["read_account", "write_account"]

_RISK = ("NORMAL", "MARGIN_CALL", "LIQUIDATION")
_ZERO = Decimal(0)


def _risk(raw: object) -> RiskState | None:
    return raw if raw in _RISK else None  # type: ignore[return-value]


def _wallets(raw: object) -> dict[str, Wallet] | None:
    if type(raw) is not dict:
        return None
    wallets: dict[str, Wallet] = {}
    for asset, w in raw.items():
        if type(asset) is not str or type(w) is not dict:
            return None
        balance = stored_decimal(w.get("walletBalance"))
        state = _risk(w.get("riskState"))
        if balance is None or state is None:
            return None
        wallets[asset] = Wallet(asset, balance, state)
    return wallets


def _position(p: object) -> Position | None:
    if type(p) is not dict:
        return None
    get = p.get
    symbol, side, mode, leverage = (
        get("symbol"),
        get("positionSide"),
        get("marginMode"),
        get("leverage"),
    )
    if type(symbol) is not str or type(side) is not str or type(mode) is not str:
        return None
    if type(leverage) is not int or "markPrice" not in p:
        return None
    quantity = stored_decimal(get("quantity"))
    entry_price = stored_decimal(get("entryPrice"))
    isolated = stored_decimal(get("isolatedMargin"))
    realized = stored_decimal(get("realizedPnl"))
    last_fill = stored_decimal(get("lastFillPrice"))
    raw_mark, raw_time = p["markPrice"], get("markTime")
    mark = None if raw_mark is None else stored_decimal(raw_mark)
    mark_time = None if raw_time is None else stored_time(raw_time)
    state = _risk(get("riskState"))
    updated = stored_time(get("updatedAt"))
    if (
        quantity is None
        or entry_price is None
        or isolated is None
        or realized is None
        or last_fill is None
        or (mark is None and raw_mark is not None)
        or (mark_time is None and raw_time is not None)
        or state is None
        or updated is None
    ):
        return None
    return Position(
        symbol,
        side,
        mode,
        quantity,
        entry_price,
        leverage,
        isolated,
        realized,
        last_fill,
        mark,
        mark_time,
        state,
        updated,
    )


def _entry(e: object) -> Entry | None:
    """An entry of the usual shape (an event that raised no alert: its record's id), or
    the reference reading of any other; None for anything the reference would refuse."""
    if type(e) is not dict or "record" in e or "recordId" not in e:
        try:  # the reference decides; its errors are the strict path's to raise
            return entry_from_document(e)  # type: ignore[arg-type]
        except Exception:
            return None
    holders = e.get("holders", ())
    key, source, record_id = e.get("eventId"), e.get("source"), e["recordId"]
    committed = stored_time(e.get("committedAt"))
    if type(holders) not in (list, tuple) or committed is None:
        return None
    if type(key) is not str or type(source) is not str or type(record_id) is not str:
        return None
    return Entry(key, source, (), committed, None, tuple(map(str, holders)), record_id)


def read_account(doc: Mapping[str, Any]) -> AccountDoc | None:
    """The account document as the reference reads it, or None when it is not the usual
    shape (the caller then reads it with the reference, which raises what it raises)."""
    if type(doc) is not dict:
        return None
    if doc.get("type") != "account" or doc.get("schemaVersion") not in (1, 2):
        return None
    wallets = _wallets(doc.get("wallets"))
    raw_positions, recent = doc.get("positions"), doc.get("recentEventIds")
    raw_pending, raw_bands = doc.get("pending"), doc.get("riskBands") or {}
    version, bands_version = doc.get("version", 0), doc.get("bandsVersion", 0)
    if wallets is None or type(raw_positions) is not list or type(recent) is not list:
        return None
    if type(raw_pending) is not list or type(raw_bands) is not dict:
        return None
    if type(version) is not int or type(bands_version) is not int:
        return None
    positions: list[Position] = []
    for p in raw_positions:
        position = _position(p)
        if position is None:
            return None
        positions.append(position)
    pending: list[Entry] = []
    for e in raw_pending:
        entry = _entry(e)
        if entry is None:
            return None
        pending.append(entry)
    bands: dict[str, tuple[Decimal, Decimal]] = {}
    for symbol, band in raw_bands.items():
        if type(symbol) is not str or type(band) is not list or len(band) != 2:
            return None
        low, high = stored_decimal(band[0]), stored_decimal(band[1])
        if low is None or high is None:
            return None
        bands[symbol] = (low, high)
    raw_updated = doc.get("updatedAt")
    updated: datetime | None = None
    if raw_updated is not None:
        updated = stored_time(raw_updated)
        if updated is None:
            return None
    return AccountDoc(
        account_id=str(doc.get("accountId")),
        ledger=Ledger(wallets=wallets, positions=tuple(positions)),
        recent_ids=tuple(map(str, recent)),
        pending=tuple(pending),
        evicted=bool(doc.get("recentIdsEvicted", False)),
        version=version,
        etag=doc.get("_etag"),
        updated_at=updated,
        bands=bands,
        bands_version=bands_version,
    )


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else figure_text(value)


def _entry_document(entry: Entry) -> dict[str, Any]:
    if entry.record is None and entry.record_id is not None and entry.done_in is None:
        return {
            "eventId": entry.key,
            "source": entry.source,
            "recordId": entry.record_id,
            "committedAt": stamp_text(entry.committed_at),
            "holders": list(entry.holders),
        }
    return entry_to_document(entry)


def write_account(account: AccountDoc, valuation: Valuation, version: int) -> dict[str, Any]:
    """The reference's document (schema ``version``), key for key and text for text.

    Stored figures, which mostly repeat (a position's own numbers, a mark's price), are
    written through the remembered :func:`decimal_text`; the figures of the valuation,
    new at every mark, through :func:`figure_text`.
    """
    assert account.updated_at is not None
    text, fresh = decimal_text, figure_text
    wallets: dict[str, Any] = {}
    views = valuation.wallets
    for asset, wallet in sorted(account.ledger.wallets.items()):
        view = views.get(asset)
        balance = text(wallet.balance)
        if view is None:
            wallets[asset] = {
                "walletBalance": balance,
                "crossWalletBalance": balance,
                "marginBalance": balance,
                "availableBalance": balance,
                "totalInitialMargin": "0",
                "totalMaintMargin": "0",
                "marginRatio": None,
                "riskState": wallet.risk_state,
            }
            continue
        wallets[asset] = {
            "walletBalance": balance,
            "crossWalletBalance": fresh(view.cross_wallet_balance),
            "marginBalance": fresh(view.margin_balance),
            "availableBalance": fresh(view.available_balance),
            "totalInitialMargin": fresh(view.total_initial_margin),
            "totalMaintMargin": fresh(view.total_maint_margin),
            "marginRatio": _opt(view.margin_ratio),
            "riskState": wallet.risk_state,
        }
    positions: list[dict[str, Any]] = []
    for p in account.ledger.positions:
        pview = valuation.position(p.symbol, p.position_side)
        mark = p.mark_price
        if pview is None:
            notional = initial = maint = upnl = "0"
            liquidation = None
        else:
            notional, initial = fresh(pview.notional), fresh(pview.initial_margin)
            maint, upnl = fresh(pview.maint_margin), fresh(pview.unrealized_pnl)
            liquidation = _opt(pview.liquidation.price) if pview.liquidation else None
        positions.append(
            {
                "symbol": p.symbol,
                "positionSide": p.position_side,
                "marginMode": p.margin_mode,
                "quantity": text(p.quantity),
                "entryPrice": text(p.entry_price),
                "leverage": p.leverage,
                "isolatedMargin": text(p.isolated_margin),
                "notional": notional,
                "initialMargin": initial,
                "maintMargin": maint,
                "unrealizedPnl": upnl,
                "realizedPnl": text(p.realized_pnl),
                "liquidationPrice": liquidation,
                "markPrice": None if mark is None else text(mark),
                "markSource": "MARK" if mark is not None else "FILL_PRICE",
                "markTime": stamp_text(p.mark_time) if p.mark_time else None,
                "lastFillPrice": text(p.last_fill_price),
                "riskState": p.risk_state,
                "updatedAt": stamp_text(p.updated_at),
            }
        )
    times = [p.mark_time for p in account.ledger.positions if p.is_open and p.mark_time]
    return {
        **header(ACCOUNT_ID, "account", accountId=account.account_id),
        "schemaVersion": version,
        "valuedAt": stamp_text(max(times)) if times else None,
        "wallets": wallets,
        "positions": positions,
        "riskState": valuation.risk_state,
        "updatedAt": stamp_text(account.updated_at),
        "version": account.version,
        "recentEventIds": list(account.recent_ids),
        "recentIdsEvicted": account.evicted,
        "pending": [_entry_document(e) for e in account.pending],
        "riskBands": {
            symbol: [fresh(low), fresh(high)]
            for symbol, (low, high) in sorted(account.bands.items())
        },
        "bandsVersion": account.bands_version,
    }
