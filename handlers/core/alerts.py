"""Alert decisions (pure): what an event raises, and the deterministic alert id.

``alertId`` = SHA-256 hex of the compact JSON ``[sourceId, type, accountId, scope]``, so a
redelivered event re-sends the same ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from handlers.core.catalog import Instrument
from handlers.core.contracts import Alert, AlertType, Fill, Reason
from handlers.core.decimals import format_decimal, m_abs, m_div, m_sub
from handlers.core.state import Ledger, RiskState
from handlers.core.valuation import PositionView, Valuation

__all__ = [
    "SEVERITY",
    "AlertSpec",
    "Thresholds",
    "alert_id",
    "build_alert",
    "fill_alerts",
    "risk_alerts",
]

SEVERITY: Mapping[str, str] = {
    "TRADE_REJECTED": "WARNING",
    "POISON_MESSAGE": "CRITICAL",
    "INSUFFICIENT_MARGIN": "CRITICAL",
    "LEVERAGE_BRACKET_BREACH": "WARNING",
    "POSITION_LIMIT": "WARNING",
    "PRICE_DEVIATION": "INFO",
    "LARGE_TRADE": "INFO",
    "MARGIN_CALL": "WARNING",
    "LIQUIDATION_RISK": "CRITICAL",
    "RISK_RECOVERED": "INFO",
    "STALE_MARK": "WARNING",
    "TRADING_STATE_CHANGED": "INFO",
}


@dataclass(frozen=True)
class Thresholds:
    """Configured alert thresholds."""

    margin_call_ratio: Decimal = Decimal("0.80")
    large_trade_notional: Mapping[str, Decimal] = field(default_factory=dict)
    position_limit_notional: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertSpec:
    """An alert decided by the core, before ids and timestamps are attached."""

    type: AlertType
    scope: str | None = None
    symbol: str | None = None
    reasons: tuple[tuple[str, str], ...] = ()
    metrics: Mapping[str, Decimal | None] = field(default_factory=dict)


def alert_id(source_id: str, alert_type: str, account_id: str | None, scope: str | None) -> str:
    """64 lowercase hex of SHA-256 over ``[sourceId, type, accountId, scope]`` (compact)."""
    text = json.dumps([source_id, alert_type, account_id, scope], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_alert(
    spec: AlertSpec,
    *,
    source_id: str,
    account_id: str | None,
    correlation_id: str | None,
    created_at: datetime,
) -> Alert:
    """Attach identity and time to a decided alert."""
    return Alert(
        alertId=alert_id(source_id, spec.type, account_id, spec.scope),
        type=spec.type,
        severity=SEVERITY[spec.type],  # type: ignore[arg-type]
        accountId=account_id,
        symbol=spec.symbol,
        scope=spec.scope,
        sourceId=source_id,
        correlationId=correlation_id,
        reasons=tuple(Reason(code=c, message=m) for c, m in spec.reasons),
        metrics={k: format_decimal(v) for k, v in spec.metrics.items() if v is not None},
        createdAt=created_at,
    )


def _position_metrics(view: PositionView) -> dict[str, Decimal | None]:
    return {
        "markPrice": view.mark,
        "notional": view.notional,
        "leverage": Decimal(view.position.leverage),
        "initialMargin": view.initial_margin,
        "maintMargin": view.maint_margin,
        "liquidationPrice": view.liquidation.price if view.liquidation else None,
        "marginBalance": view.margin_balance,
        "marginRatio": view.margin_ratio,
    }


def fill_alerts(
    fill: Fill,
    instrument: Instrument,
    stored_mark: Decimal | None,
    after: Valuation,
    thresholds: Thresholds,
) -> list[AlertSpec]:
    """Alerts an applied FILL raises by itself (risk-state changes come from
    :func:`risk_alerts`)."""
    out: list[AlertSpec] = []
    asset = instrument.settle_asset
    symbol = fill.symbol
    side = fill.positionSide
    scope = f"{symbol}:{side}"
    view = None
    for found in after.positions:  # as Valuation.position: the first of the key
        p = found.position
        if p.symbol == symbol and p.position_side == side:
            view = found
            break
    wallet = after.wallets.get(asset)
    # Every operation below in MONEY (m_*); comparisons need no context.
    if wallet is not None and wallet.cross_initial_margin > wallet.cross_margin_balance:
        out.append(
            AlertSpec(
                "INSUFFICIENT_MARGIN",
                scope=asset,
                symbol=symbol,
                reasons=(
                    (
                        "INSUFFICIENT_MARGIN",
                        f"cross initial margin {format_decimal(wallet.cross_initial_margin)} "
                        f"> cross margin balance {format_decimal(wallet.cross_margin_balance)} {asset}",
                    ),
                ),
                metrics={
                    "initialMargin": wallet.cross_initial_margin,
                    "marginBalance": wallet.cross_margin_balance,
                    "maintMargin": wallet.cross_maint_margin,
                    "marginRatio": wallet.margin_ratio,
                },
            )
        )
    if view is not None:
        leverage = view.position.leverage
        cap = instrument.leverage_cap(leverage)  # the last bracket allowing it; 0: none
        if view.notional >= cap:
            out.append(
                AlertSpec(
                    "LEVERAGE_BRACKET_BREACH",
                    scope=scope,
                    symbol=symbol,
                    reasons=(
                        (
                            "LEVERAGE_BRACKET_BREACH",
                            f"notional {format_decimal(view.notional)} ≥ {format_decimal(cap)}, "
                            f"the cap for leverage {leverage}",
                        ),
                    ),
                    metrics=_position_metrics(view),
                )
            )
    if stored_mark is not None:
        deviation = m_div(m_abs(m_sub(fill.price, stored_mark)), stored_mark)
        if deviation > instrument.price_band:
            out.append(
                AlertSpec(
                    "PRICE_DEVIATION",
                    scope=scope,
                    symbol=symbol,
                    reasons=(
                        (
                            "PRICE_DEVIATION",
                            f"fill price {format_decimal(fill.price)} is "
                            f"{format_decimal(deviation)} from the mark "
                            f"{format_decimal(stored_mark)} (band {format_decimal(instrument.price_band)})",
                        ),
                    ),
                    metrics={"markPrice": stored_mark},
                )
            )
    limit = thresholds.position_limit_notional.get(asset)
    if view is not None and limit is not None and view.notional > limit:
        out.append(
            AlertSpec(
                "POSITION_LIMIT",
                scope=scope,
                symbol=symbol,
                reasons=(
                    (
                        "POSITION_LIMIT",
                        f"position notional {format_decimal(view.notional)} > limit "
                        f"{format_decimal(limit)} {asset}",
                    ),
                ),
                metrics=_position_metrics(view),
            )
        )
    large = thresholds.large_trade_notional.get(asset)
    fill_notional = instrument.notional(fill.quantity, fill.price)
    if large is not None and fill_notional >= large:
        out.append(
            AlertSpec(
                "LARGE_TRADE",
                scope=scope,
                symbol=symbol,
                reasons=(
                    (
                        "LARGE_TRADE",
                        f"fill notional {format_decimal(fill_notional)} ≥ "
                        f"{format_decimal(large)} {asset}",
                    ),
                ),
                metrics={"notional": fill_notional, "leverage": Decimal(fill.leverage)},
            )
        )
    return out


_TRANSITIONS: Mapping[tuple[str, str], AlertType] = {
    ("NORMAL", "MARGIN_CALL"): "MARGIN_CALL",
    ("NORMAL", "LIQUIDATION"): "LIQUIDATION_RISK",
    ("MARGIN_CALL", "LIQUIDATION"): "LIQUIDATION_RISK",
    ("MARGIN_CALL", "NORMAL"): "RISK_RECOVERED",
    ("LIQUIDATION", "NORMAL"): "RISK_RECOVERED",
}


def risk_alerts(before: Ledger, after: Valuation) -> list[AlertSpec]:
    """Risk-state changes between the stored states of ``before`` and the valuation.

    One state per cross wallet (scope: the settle asset) and per isolated position (scope:
    ``SYMBOL:POSITIONSIDE``); an isolated position that is gone or closed counts as NORMAL.
    """
    out: list[AlertSpec] = []
    before_wallets = before.wallets
    after_wallets = after.wallets
    for asset in sorted(before_wallets.keys() | after_wallets.keys()):
        held = before_wallets.get(asset)
        old = held.risk_state if held is not None else "NORMAL"
        view = after_wallets.get(asset)
        new = view.risk_state if view else "NORMAL"
        if old == new:  # no transition
            continue
        kind = _TRANSITIONS.get((old, new))
        if kind and view is not None:
            out.append(
                AlertSpec(
                    kind,
                    scope=asset,
                    reasons=((kind, f"cross {asset} wallet: {old} → {new}"),),
                    metrics={
                        "marginRatio": view.margin_ratio,
                        "marginBalance": view.cross_margin_balance,
                        "maintMargin": view.cross_maint_margin,
                        "initialMargin": view.cross_initial_margin,
                    },
                )
            )
    old_iso: dict[tuple[str, str], RiskState] = {}
    for p in before.positions:
        if p.margin_mode == "ISOLATED" and p.quantity != 0:
            old_iso[(p.symbol, p.position_side)] = p.risk_state
    new_iso: dict[tuple[str, str], PositionView] = {}
    for v in after.positions:
        if v.position.margin_mode == "ISOLATED":
            new_iso[(v.position.symbol, v.position.position_side)] = v
    if not old_iso and not new_iso:
        return out
    for key in sorted(old_iso.keys() | new_iso.keys()):
        old = old_iso.get(key, "NORMAL")
        iso_view = new_iso.get(key)
        new = iso_view.risk_state if iso_view else "NORMAL"
        kind = _TRANSITIONS.get((old, new))
        if kind:
            scope = f"{key[0]}:{key[1]}"
            out.append(
                AlertSpec(
                    kind,
                    scope=scope,
                    symbol=key[0],
                    reasons=((kind, f"isolated {scope}: {old} → {new}"),),
                    metrics=_position_metrics(iso_view) if iso_view else {},
                )
            )
    return out
