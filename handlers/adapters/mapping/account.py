"""The account document: the stored ledger, every derived figure, ids and entries.

:func:`account_from_document` and :func:`account_to_document` take the fast codec
(:mod:`handlers.adapters.mapping.fast_account`); the reference mapping it must match,
byte for byte, stays here (:func:`reference_account_from_document`,
:func:`reference_account_to_document`): it reads every document the fast reader leaves
to it and says why one is unreadable.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from handlers.adapters.mapping.fast_account import read_account, write_account
from handlers.adapters.mapping.records import entry_to_document, read_entries
from handlers.adapters.mapping.values import (
    dec,
    dec_or_none,
    header,
    opt_dec,
    reading,
    risk,
    ts,
)
from handlers.core.contracts import format_timestamp
from handlers.core.decimals import format_decimal
from handlers.core.documents import ACCOUNT_ID, AccountDoc
from handlers.core.state import Ledger, Position, Wallet
from handlers.core.valuation import Valuation

__all__ = [
    "ACCOUNT_SCHEMA_VERSION",
    "account_from_document",
    "account_to_document",
    "reference_account_from_document",
    "reference_account_to_document",
]

#: Account documents are written as version 2 (``valuedAt``, ``riskBands``); version 1
#: documents are read (without bands: the next write sets them) and upgraded on write.
ACCOUNT_SCHEMA_VERSION = 2


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
    set."""
    return write_account(account, valuation, ACCOUNT_SCHEMA_VERSION)


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
    )


def reference_account_to_document(account: AccountDoc, valuation: Valuation) -> dict[str, Any]:
    """The account document to write: the stored ledger plus every derived number (as of
    ``account.updated_at``, which must be set); the reference writing."""
    assert account.updated_at is not None
    wallets: dict[str, Any] = {}
    for asset, wallet in sorted(account.ledger.wallets.items()):
        view = valuation.wallets.get(asset)
        wallets[asset] = {
            "walletBalance": format_decimal(wallet.balance),
            "crossWalletBalance": format_decimal(
                view.cross_wallet_balance if view else wallet.balance
            ),
            "marginBalance": format_decimal(view.margin_balance if view else wallet.balance),
            "availableBalance": format_decimal(view.available_balance if view else wallet.balance),
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
    }
