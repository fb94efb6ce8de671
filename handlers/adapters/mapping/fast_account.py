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
    MARGIN_MODES,
    ORDER_SIDES,
    ORDER_TYPES,
    POSITION_SIDES,
    TRADING_STATES,
    decimal_text,
    figure_text,
    header,
    stamp_text,
    stored_decimal,
    stored_time,
)
from handlers.core.catalog import Catalog
from handlers.core.decimals import m_add, m_sub
from handlers.core.documents import ACCOUNT_ID, AccountDoc, Entry
from handlers.core.orders import OpenOrder
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


def _open_order(o: object) -> OpenOrder | None:
    """An ``openOrders`` entry of the exact shape the reference reads, else None."""
    if type(o) is not dict:
        return None
    get = o.get
    order_id, symbol, leverage = get("orderId"), get("symbol"), get("leverage")
    side, position_side = get("side"), get("positionSide")
    margin_mode, order_type = get("marginMode"), get("orderType")
    if type(order_id) is not str or type(symbol) is not str or type(leverage) is not int:
        return None
    if side not in ORDER_SIDES or position_side not in POSITION_SIDES:
        return None
    if margin_mode not in MARGIN_MODES or order_type not in ORDER_TYPES:
        return None
    price, quantity = stored_decimal(get("price")), stored_decimal(get("quantity"))
    opening, reserved = stored_decimal(get("openingQuantity")), stored_decimal(get("reserved"))
    submitted = stored_time(get("submittedAt"))
    if price is None or quantity is None or opening is None or reserved is None:
        return None
    if submitted is None:
        return None
    return OpenOrder(
        order_id,
        symbol,
        side,
        position_side,
        margin_mode,
        order_type,
        price,
        leverage,
        quantity,
        opening,
        reserved,
        submitted,
    )


def _orders(doc: dict[str, Any]) -> tuple[tuple[OpenOrder, ...], tuple[datetime, ...]] | None:
    """The open orders and order times (empty when absent), or None when either is not
    of the usual shape."""
    raw_orders, raw_times = doc.get("openOrders", []), doc.get("orderTimes", [])
    if type(raw_orders) is not list or type(raw_times) is not list:
        return None
    orders: list[OpenOrder] = []
    for o in raw_orders:
        order = _open_order(o)
        if order is None:
            return None
        orders.append(order)
    times: list[datetime] = []
    for t in raw_times:
        moment = stored_time(t)
        if moment is None:
            return None
        times.append(moment)
    return tuple(orders), tuple(times)


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
    trading_state, raw_state_at = doc.get("tradingState", "ACTIVE"), doc.get("tradingStateAt")
    if trading_state not in TRADING_STATES:
        return None
    state_at: datetime | None = None
    if raw_state_at is not None:
        state_at = stored_time(raw_state_at)
        if state_at is None:
            return None
    orders = _orders(doc)
    if orders is None:
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
        trading_state=trading_state,
        trading_state_at=state_at,
        open_orders=orders[0],
        order_times=orders[1],
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


def _order_margins(open_orders: tuple[OpenOrder, ...], catalog: Catalog) -> dict[str, Decimal]:
    """Σ reserved per settle asset, in one pass: per asset the same additions, in the same
    order, as :func:`handlers.core.orders.open_order_margin` (symbols the catalog does not
    hold count nowhere)."""
    margins: dict[str, Decimal] = {}
    instruments = catalog.instruments
    for o in open_orders:
        instrument = instruments.get(o.symbol)
        if instrument is not None:
            asset = instrument.settle_asset
            margins[asset] = m_add(margins.get(asset, _ZERO), o.reserved)
    return margins


def _open_order_document(o: OpenOrder) -> dict[str, Any]:
    text = decimal_text
    return {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "side": o.side,
        "positionSide": o.position_side,
        "marginMode": o.margin_mode,
        "orderType": o.order_type,
        "price": text(o.price),
        "leverage": o.leverage,
        "quantity": text(o.quantity),
        "openingQuantity": text(o.opening_quantity),
        "reserved": text(o.reserved),
        "submittedAt": stamp_text(o.submitted_at),
    }


def write_account(account: AccountDoc, valuation: Valuation, version: int) -> dict[str, Any]:
    """The reference's document (schema ``version``), key for key and text for text.

    Stored figures, which mostly repeat (a position's own numbers, a mark's price), are
    written through the remembered :func:`decimal_text`; the figures of the valuation,
    new at every mark, through :func:`figure_text`. A wallet's ``openOrderMargin`` and its
    ``availableBalance`` net of it are the reference's (by the valuation's catalog).

    Raises:
        ValueError: the account holds open orders and ``valuation`` carries no catalog.
    """
    assert account.updated_at is not None
    text, fresh = decimal_text, figure_text
    margins: dict[str, Decimal] = {}
    if account.open_orders:
        if valuation.catalog is None:
            raise ValueError("open orders are settled by the valuation's catalog: it has none")
        margins = _order_margins(account.open_orders, valuation.catalog)
    wallets: dict[str, Any] = {}
    views = valuation.wallets
    for asset, wallet in sorted(account.ledger.wallets.items()):
        view = views.get(asset)
        balance = text(wallet.balance)
        reserved = margins.get(asset, _ZERO)
        held = not reserved.is_zero()  # else availableBalance is the valuation's as it is
        if view is None:
            wallets[asset] = {
                "walletBalance": balance,
                "crossWalletBalance": balance,
                "marginBalance": balance,
                "availableBalance": fresh(m_sub(wallet.balance, reserved)) if held else balance,
                "openOrderMargin": fresh(reserved),
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
            "availableBalance": fresh(
                m_sub(view.available_balance, reserved) if held else view.available_balance
            ),
            "openOrderMargin": fresh(reserved),
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
    at = account.trading_state_at
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
        "tradingState": account.trading_state,
        "tradingStateAt": None if at is None else stamp_text(at),
        "openOrders": [_open_order_document(o) for o in account.open_orders],
        "orderTimes": [stamp_text(t) for t in account.order_times],
    }
