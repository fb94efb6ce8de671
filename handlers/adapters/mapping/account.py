"""The account document: the stored ledger, every derived figure, ids and entries.

:func:`account_from_document` and :func:`account_to_document` take the fast codec
(:mod:`handlers.adapters.mapping.fast_account`); the reference mapping it must match,
byte for byte, stays here (:func:`reference_account_from_document`,
:func:`reference_account_to_document`): it reads every document the fast reader leaves
to it and says why one is unreadable.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from handlers.adapters.mapping.fast_account import read_account, write_account
from handlers.adapters.mapping.records import entry_to_document, read_entries
from handlers.adapters.mapping.values import (
    MARGIN_MODES,
    ORDER_SIDES,
    ORDER_TYPES,
    POSITION_SIDES,
    TRADING_STATES,
    dec,
    dec_or_none,
    header,
    opt_dec,
    reading,
    risk,
    ts,
)
from handlers.core.contracts import format_timestamp
from handlers.core.decimals import format_decimal, m_sub
from handlers.core.documents import ACCOUNT_ID, AccountDoc
from handlers.core.orders import OpenOrder, open_order_margin
from handlers.core.state import Ledger, Position, Wallet
from handlers.core.valuation import Valuation
from handlers.errors import UnreadableDocument

__all__ = [
    "ACCOUNT_SCHEMA_VERSION",
    "account_from_document",
    "account_to_document",
    "reference_account_from_document",
    "reference_account_to_document",
]

#: Account documents are written as version 2 (``valuedAt``, ``riskBands``, and for
#: orders ``tradingState``, ``tradingStateAt``, ``openOrders``, ``orderTimes`` and each
#: wallet's ``openOrderMargin``); version 1 documents, and version 2 ones written before
#: orders, are read with the defaults (no bands: the next write sets them; ACTIVE, no
#: open orders, no order times) and upgraded on write.
ACCOUNT_SCHEMA_VERSION = 2

_Choice = TypeVar("_Choice", bound=str)


def account_from_document(doc: Mapping[str, Any]) -> AccountDoc:
    """Read a stored account document: the fast reader for the usual shape, else the
    reference (:func:`reference_account_from_document`), with the same result.

    Raises:
        UnreadableDocument: unknown ``schemaVersion`` or a wrong shape.
    """
    account = read_account(doc)
    return account if account is not None else reference_account_from_document(doc)


def account_to_document(account: AccountDoc, valuation: Valuation) -> dict[str, Any]:
    """The account document to write (the same as
    :func:`reference_account_to_document`), as of ``account.updated_at``, which must be
    set.

    Raises:
        ValueError: the account holds open orders and ``valuation`` carries no catalog.
    """
    return write_account(account, valuation, ACCOUNT_SCHEMA_VERSION)


def _one_of(raw: object, allowed: tuple[_Choice, ...], what: str) -> _Choice:
    for choice in allowed:
        if raw == choice:
            return choice
    raise UnreadableDocument(f"{what}: unknown value {raw!r}")


def _text(raw: object, what: str) -> str:
    if not isinstance(raw, str):
        raise UnreadableDocument(f"{what} must be a string")
    return raw


def _integer(raw: object, what: str) -> int:
    if type(raw) is not int:
        raise UnreadableDocument(f"{what} must be an integer")
    return raw


def _list(raw: object, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise UnreadableDocument(f"{what} must be a list")
    return raw


def _open_order(o: Mapping[str, Any]) -> OpenOrder:
    """One entry of ``openOrders`` (enums, ids and the integer leverage exact)."""
    return OpenOrder(
        order_id=_text(o["orderId"], "openOrders.orderId"),
        symbol=_text(o["symbol"], "openOrders.symbol"),
        side=_one_of(o["side"], ORDER_SIDES, "openOrders.side"),
        position_side=_one_of(o["positionSide"], POSITION_SIDES, "openOrders.positionSide"),
        margin_mode=_one_of(o["marginMode"], MARGIN_MODES, "openOrders.marginMode"),
        order_type=_one_of(o["orderType"], ORDER_TYPES, "openOrders.orderType"),
        price=dec(o["price"], "openOrders.price"),
        leverage=_integer(o["leverage"], "openOrders.leverage"),
        quantity=dec(o["quantity"], "openOrders.quantity"),
        opening_quantity=dec(o["openingQuantity"], "openOrders.openingQuantity"),
        reserved=dec(o["reserved"], "openOrders.reserved"),
        submitted_at=ts(o["submittedAt"], "openOrders.submittedAt"),
    )


def reference_account_from_document(doc: Mapping[str, Any]) -> AccountDoc:
    """Read a stored account document, field by field (the reference reading).

    Raises:
        UnreadableDocument: unknown ``schemaVersion`` or a wrong shape.
    """
    with reading("account document has a wrong shape", doc, "account", (1, 2)):
        wallets = {
            asset: Wallet(
                asset,
                dec(w["walletBalance"], f"wallets.{asset}.walletBalance"),
                risk(w["riskState"], f"wallets.{asset}.riskState"),
            )
            for asset, w in doc["wallets"].items()
        }
        positions = tuple(
            Position(
                symbol=str(p["symbol"]),
                position_side=str(p["positionSide"]),
                margin_mode=str(p["marginMode"]),
                quantity=dec(p["quantity"], "quantity"),
                entry_price=dec(p["entryPrice"], "entryPrice"),
                leverage=int(p["leverage"]),
                isolated_margin=dec(p["isolatedMargin"], "isolatedMargin"),
                realized_pnl=dec(p["realizedPnl"], "realizedPnl"),
                last_fill_price=dec(p["lastFillPrice"], "lastFillPrice"),
                mark_price=opt_dec(p["markPrice"], "markPrice"),
                mark_time=None if p.get("markTime") is None else ts(p["markTime"], "markTime"),
                risk_state=risk(p["riskState"], "position riskState"),
                updated_at=ts(p["updatedAt"], "updatedAt"),
            )
            for p in doc["positions"]
        )
        recent = tuple(str(i) for i in doc["recentEventIds"])
        pending = read_entries(doc["pending"])
        version = int(doc.get("version", 0))
        evicted = bool(doc.get("recentIdsEvicted", False))
        updated = None if doc.get("updatedAt") is None else ts(doc["updatedAt"], "updatedAt")
        bands = {
            str(symbol): (dec(b[0], f"riskBands.{symbol}"), dec(b[1], f"riskBands.{symbol}"))
            for symbol, b in (doc.get("riskBands") or {}).items()
        }
        bands_version = int(doc.get("bandsVersion", 0))
        trading_state = _one_of(doc.get("tradingState", "ACTIVE"), TRADING_STATES, "tradingState")
        raw_state_at = doc.get("tradingStateAt")
        state_at = None if raw_state_at is None else ts(raw_state_at, "tradingStateAt")
        open_orders = tuple(_open_order(o) for o in _list(doc.get("openOrders", []), "openOrders"))
        order_times = tuple(
            ts(t, "orderTimes") for t in _list(doc.get("orderTimes", []), "orderTimes")
        )
    return AccountDoc(
        account_id=str(doc.get("accountId")),
        ledger=Ledger(wallets=wallets, positions=positions),
        recent_ids=recent,
        pending=pending,
        evicted=evicted,
        version=version,
        etag=doc.get("_etag"),
        updated_at=updated,
        bands=bands,
        bands_version=bands_version,
        trading_state=trading_state,
        trading_state_at=state_at,
        open_orders=open_orders,
        order_times=order_times,
    )


def _net(gross: Decimal, reserved: Decimal) -> Decimal:
    """``gross`` less what open orders reserve (unchanged when they reserve nothing)."""
    return gross if reserved.is_zero() else m_sub(gross, reserved)


def _open_order_document(o: OpenOrder) -> dict[str, Any]:
    """One entry of the document's ``openOrders``."""
    return {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "side": o.side,
        "positionSide": o.position_side,
        "marginMode": o.margin_mode,
        "orderType": o.order_type,
        "price": format_decimal(o.price),
        "leverage": o.leverage,
        "quantity": format_decimal(o.quantity),
        "openingQuantity": format_decimal(o.opening_quantity),
        "reserved": format_decimal(o.reserved),
        "submittedAt": format_timestamp(o.submitted_at),
    }


def reference_account_to_document(account: AccountDoc, valuation: Valuation) -> dict[str, Any]:
    """The account document to write: the stored ledger plus every derived number (as of
    ``account.updated_at``, which must be set); the reference writing.

    Each wallet's ``openOrderMargin`` is Σ ``reserved`` of the open orders whose symbol
    settles in its asset (:func:`handlers.core.orders.open_order_margin`, by the catalog
    the valuation was made with: an order whose symbol left it counts nowhere), and its
    ``availableBalance`` is the valuation's (cross margin balance − Σ cross initial
    margin) less that: what open orders hold is not available.

    Raises:
        ValueError: the account holds open orders and ``valuation`` carries no catalog.
    """
    assert account.updated_at is not None
    catalog = valuation.catalog
    if account.open_orders and catalog is None:
        raise ValueError("open orders are settled by the valuation's catalog: it has none")
    wallets: dict[str, Any] = {}
    for asset, wallet in sorted(account.ledger.wallets.items()):
        view = valuation.wallets.get(asset)
        reserved = (
            open_order_margin(account.open_orders, asset, catalog)
            if account.open_orders and catalog is not None
            else Decimal(0)
        )
        # The valuation's availableBalance is gross; the document's is net of the margin
        # the wallet's open orders reserve (contract v2), so a withdrawal cannot take it.
        available = _net(view.available_balance if view else wallet.balance, reserved)
        wallets[asset] = {
            "walletBalance": format_decimal(wallet.balance),
            "crossWalletBalance": format_decimal(
                view.cross_wallet_balance if view else wallet.balance
            ),
            "marginBalance": format_decimal(view.margin_balance if view else wallet.balance),
            "availableBalance": format_decimal(available),
            "openOrderMargin": format_decimal(reserved),
            "totalInitialMargin": format_decimal(view.total_initial_margin if view else Decimal(0)),
            "totalMaintMargin": format_decimal(view.total_maint_margin if view else Decimal(0)),
            "marginRatio": dec_or_none(view.margin_ratio) if view else None,
            "riskState": wallet.risk_state,
        }
    positions: list[dict[str, Any]] = []
    for p in account.ledger.positions:
        pview = valuation.position(p.symbol, p.position_side)
        zero = "0"
        positions.append(
            {
                "symbol": p.symbol,
                "positionSide": p.position_side,
                "marginMode": p.margin_mode,
                "quantity": format_decimal(p.quantity),
                "entryPrice": format_decimal(p.entry_price),
                "leverage": p.leverage,
                "isolatedMargin": format_decimal(p.isolated_margin),
                "notional": format_decimal(pview.notional) if pview else zero,
                "initialMargin": format_decimal(pview.initial_margin) if pview else zero,
                "maintMargin": format_decimal(pview.maint_margin) if pview else zero,
                "unrealizedPnl": format_decimal(pview.unrealized_pnl) if pview else zero,
                "realizedPnl": format_decimal(p.realized_pnl),
                "liquidationPrice": dec_or_none(pview.liquidation.price)
                if pview and pview.liquidation
                else None,
                "markPrice": dec_or_none(p.mark_price),
                "markSource": "MARK" if p.mark_price is not None else "FILL_PRICE",
                "markTime": format_timestamp(p.mark_time) if p.mark_time else None,
                "lastFillPrice": format_decimal(p.last_fill_price),
                "riskState": p.risk_state,
                "updatedAt": format_timestamp(p.updated_at),
            }
        )
    times = [p.mark_time for p in account.ledger.positions if p.is_open and p.mark_time]
    return {
        **header(ACCOUNT_ID, "account", accountId=account.account_id),
        "schemaVersion": ACCOUNT_SCHEMA_VERSION,
        "valuedAt": format_timestamp(max(times)) if times else None,
        "wallets": wallets,
        "positions": positions,
        "riskState": valuation.risk_state,
        "updatedAt": format_timestamp(account.updated_at),
        "version": account.version,
        "recentEventIds": list(account.recent_ids),
        "recentIdsEvicted": account.evicted,
        "pending": [entry_to_document(e) for e in account.pending],
        "riskBands": {
            symbol: [format_decimal(low), format_decimal(high)]
            for symbol, (low, high) in sorted(account.bands.items())
        },
        "bandsVersion": account.bands_version,
        "tradingState": account.trading_state,
        "tradingStateAt": _stamp_or_none(account.trading_state_at),
        "openOrders": [_open_order_document(o) for o in account.open_orders],
        "orderTimes": [format_timestamp(t) for t in account.order_times],
    }


def _stamp_or_none(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)
