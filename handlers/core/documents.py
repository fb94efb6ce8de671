"""Cosmos document shapes (pure mapping, no SDK): account, records, marks, deadletters.

Every document carries ``type`` and ``schemaVersion``; decimals are strings. A stored
document of another version or shape raises :class:`UnreadableDocument` and is never
overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from handlers.core.contracts import Alert, format_timestamp, parse_timestamp
from handlers.core.decimals import format_decimal, parse_decimal
from handlers.core.state import Ledger, Position, RiskState, Wallet
from handlers.core.valuation import Valuation
from handlers.errors import UnreadableDocument

__all__ = [
    "ACCOUNT_ID",
    "MAX_RECENT_IDS",
    "SCHEMA_VERSION",
    "UNATTRIBUTED",
    "AccountDoc",
    "Pending",
    "account_from_document",
    "account_to_document",
    "dec_or_none",
]

ACCOUNT_ID = "@account"
UNATTRIBUTED = "_unattributed"
SCHEMA_VERSION = 1
MAX_RECENT_IDS = 1000
#: Significant digits accepted when reading back decimals the app wrote: values are written
#: without exponent, so an accepted "1e999" (or a product of two) comes back with ~2,000
#: digits; messages are held to the contract's 40.
STORED_DIGITS = 4096
_RISK = ("NORMAL", "MARGIN_CALL", "LIQUIDATION")


@dataclass(frozen=True)
class Pending:
    """An event whose state is written but whose record may not be: the record to write
    (with its copy of the alerts) and the alerts to send."""

    event_id: str
    record: Mapping[str, Any]
    holders: tuple[str, ...] = ()

    @property
    def alerts(self) -> list[Alert]:
        return [Alert.model_validate(a, strict=False) for a in self.record.get("alerts", [])]


@dataclass(frozen=True)
class AccountDoc:
    """The account document as the app holds it between read and conditional write."""

    account_id: str
    ledger: Ledger = field(default_factory=Ledger)
    recent_ids: tuple[str, ...] = ()
    pending: tuple[Pending, ...] = ()
    evicted: bool = False
    version: int = 0
    etag: str | None = None
    updated_at: datetime | None = None

    def pending_for(self, event_id: str) -> Pending | None:
        for item in self.pending:
            if item.event_id == event_id:
                return item
        return None

    def with_event(
        self, event_id: str, record: Mapping[str, Any] | None, holders: tuple[str, ...] = ()
    ) -> AccountDoc:
        """Add an event id to the recent ids (and its pending record), trimming the oldest
        ids whose records exist (those not pending)."""
        ids = [*self.recent_ids, event_id]
        pending = self.pending + (
            (Pending(event_id, record, holders),) if record is not None else ()
        )
        keep = {p.event_id for p in pending}
        evicted = self.evicted
        while len(ids) > MAX_RECENT_IDS:
            for i, old in enumerate(ids):
                if old not in keep:
                    del ids[i]
                    evicted = True
                    break
            else:
                break
        return replace(self, recent_ids=tuple(ids), pending=pending, evicted=evicted)

    def with_pending(self, pending: Pending) -> AccountDoc:
        """Add a pending entry that is no event (a mark re-valuation's alerts)."""
        return replace(self, pending=(*self.pending, pending))

    def without_pending(self, done: set[str]) -> AccountDoc:
        return replace(self, pending=tuple(p for p in self.pending if p.event_id not in done))


def dec_or_none(value: Decimal | None) -> str | None:
    """A decimal as contract text, or None."""
    return None if value is None else format_decimal(value)


def _dec(raw: object, what: str) -> Decimal:
    if not isinstance(raw, str):
        raise UnreadableDocument(f"{what} must be a decimal string")
    try:
        return parse_decimal(raw, max_digits=STORED_DIGITS)
    except ValueError as exc:
        raise UnreadableDocument(f"{what}: {exc}") from exc


def _opt_dec(raw: object, what: str) -> Decimal | None:
    return None if raw is None else _dec(raw, what)


def _ts(raw: object, what: str) -> datetime:
    try:
        return parse_timestamp(raw)
    except ValueError as exc:
        raise UnreadableDocument(f"{what}: {exc}") from exc


def _risk(raw: object, what: str) -> RiskState:
    if raw not in _RISK:
        raise UnreadableDocument(f"{what}: unknown risk state {raw!r}")
    return raw  # type: ignore[return-value]


def account_from_document(doc: Mapping[str, Any]) -> AccountDoc:
    """Read a stored account document.

    Raises:
        UnreadableDocument: unknown ``schemaVersion`` or a wrong shape.
    """
    if doc.get("type") != "account" or doc.get("schemaVersion") != SCHEMA_VERSION:
        raise UnreadableDocument(
            f"account document of type {doc.get('type')!r} version {doc.get('schemaVersion')!r}"
        )
    try:
        wallets = {
            asset: Wallet(
                asset,
                _dec(w["walletBalance"], f"wallets.{asset}.walletBalance"),
                _risk(w["riskState"], f"wallets.{asset}.riskState"),
            )
            for asset, w in doc["wallets"].items()
        }
        positions = tuple(
            Position(
                symbol=str(p["symbol"]),
                position_side=str(p["positionSide"]),
                margin_mode=str(p["marginMode"]),
                quantity=_dec(p["quantity"], "quantity"),
                entry_price=_dec(p["entryPrice"], "entryPrice"),
                leverage=int(p["leverage"]),
                isolated_margin=_dec(p["isolatedMargin"], "isolatedMargin"),
                realized_pnl=_dec(p["realizedPnl"], "realizedPnl"),
                last_fill_price=_dec(p["lastFillPrice"], "lastFillPrice"),
                mark_price=_opt_dec(p["markPrice"], "markPrice"),
                mark_time=None if p.get("markTime") is None else _ts(p["markTime"], "markTime"),
                risk_state=_risk(p["riskState"], "position riskState"),
                updated_at=_ts(p["updatedAt"], "updatedAt"),
            )
            for p in doc["positions"]
        )
        recent = tuple(str(i) for i in doc["recentEventIds"])
        pending = tuple(
            Pending(
                str(p["eventId"]), dict(p["record"]), tuple(str(h) for h in p.get("holders", ()))
            )
            for p in doc["pending"]
        )
        version = int(doc.get("version", 0))
        evicted = bool(doc.get("recentIdsEvicted", False))
        updated = None if doc.get("updatedAt") is None else _ts(doc["updatedAt"], "updatedAt")
    except UnreadableDocument:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnreadableDocument(f"account document has a wrong shape: {exc!r}") from exc
    return AccountDoc(
        account_id=str(doc.get("accountId")),
        ledger=Ledger(wallets=wallets, positions=positions),
        recent_ids=recent,
        pending=pending,
        evicted=evicted,
        version=version,
        etag=doc.get("_etag"),
        updated_at=updated,
    )


def account_to_document(account: AccountDoc, valuation: Valuation, now: datetime) -> dict[str, Any]:
    """The account document to write: stored ledger plus every derived number."""
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
    return {
        "id": ACCOUNT_ID,
        "accountId": account.account_id,
        "type": "account",
        "schemaVersion": SCHEMA_VERSION,
        "wallets": wallets,
        "positions": positions,
        "riskState": valuation.risk_state,
        "updatedAt": format_timestamp(now),
        "version": account.version,
        "recentEventIds": list(account.recent_ids),
        "recentIdsEvicted": account.evicted,
        "pending": [
            {"eventId": p.event_id, "record": dict(p.record), "holders": list(p.holders)}
            for p in account.pending
        ],
    }


def settle_risk_states(ledger: Ledger, valuation: Valuation) -> Ledger:
    """Store the valuation's risk states on the ledger (cross wallets, isolated positions;
    a cross position carries its wallet's state). What keeps its state is kept as is."""
    views = valuation.wallets
    wallets: dict[str, Wallet] = {}
    for asset, w in ledger.wallets.items():
        wview = views.get(asset)
        if wview is None or wview.risk_state == w.risk_state:
            wallets[asset] = w
        else:
            wallets[asset] = Wallet(w.asset, w.balance, wview.risk_state)
    for asset, view in views.items():
        if asset not in wallets:
            wallets[asset] = Wallet(asset, view.wallet_balance, view.risk_state)
    states: dict[tuple[str, str], RiskState] = {}
    for v in valuation.positions:  # the first view of a key, as Valuation.position finds it
        states.setdefault((v.position.symbol, v.position.position_side), v.risk_state)
    positions: list[Position] = []
    for p in ledger.positions:
        state = states.get((p.symbol, p.position_side), "NORMAL")
        positions.append(p if p.risk_state == state else replace(p, risk_state=state))
    return Ledger(wallets=wallets, positions=tuple(positions))


def alerts_json(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """Alerts as stored in documents (JSON mode)."""
    return [a.model_dump(mode="json") for a in alerts]
