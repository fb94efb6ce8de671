"""Derived numbers of a ledger at its marks: per position, per settle-asset wallet, risk.

Per settle asset: walletBalance = cross wallet + Σ isolated margins; crossWalletBalance =
walletBalance − Σ isolatedMargin; cross margin balance = crossWalletBalance + Σ cross
uPnL; availableBalance = cross margin balance − Σ cross initial margin; marginRatio = Σ
cross maintenance margin / cross margin balance. The wallet's ``marginBalance``,
``totalInitialMargin`` and ``totalMaintMargin`` are Binance's account totals (all
positions of the asset, isolated included). Risk states: see :func:`value`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext

from handlers.core.catalog import Catalog, Instrument
from handlers.core.decimals import MONEY
from handlers.core.margin import Leg, Liquidation, initial_margin, liquidation_price, maint_margin
from handlers.core.state import RISK_ORDER, Ledger, Position, RiskState

__all__ = ["PositionView", "Valuation", "WalletView", "value"]

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class PositionView:
    """A position with its numbers at its effective mark."""

    position: Position
    instrument: Instrument
    mark: Decimal
    notional: Decimal
    initial_margin: Decimal
    maint_margin: Decimal
    unrealized_pnl: Decimal
    liquidation: Liquidation | None
    margin_balance: Decimal | None  # isolated only
    margin_ratio: Decimal | None  # isolated only
    risk_state: RiskState

    @property
    def scope(self) -> str:
        return f"{self.position.symbol}:{self.position.position_side}"


@dataclass(frozen=True, slots=True)
class WalletView:
    """One settle asset's wallet numbers; margin ratio and risk state are the cross wallet's."""

    asset: str
    wallet_balance: Decimal
    cross_wallet_balance: Decimal
    cross_margin_balance: Decimal
    margin_balance: Decimal
    available_balance: Decimal
    cross_initial_margin: Decimal
    cross_maint_margin: Decimal
    total_initial_margin: Decimal
    total_maint_margin: Decimal
    margin_ratio: Decimal | None
    has_cross_position: bool
    risk_state: RiskState


@dataclass(frozen=True)
class Valuation:
    """Every derived number of a ledger."""

    positions: tuple[PositionView, ...]
    wallets: Mapping[str, WalletView]

    @property
    def risk_state(self) -> RiskState:
        states: list[RiskState] = [w.risk_state for w in self.wallets.values()]
        states += [p.risk_state for p in self.positions if p.position.margin_mode == "ISOLATED"]
        return max(states, key=lambda s: RISK_ORDER[s], default="NORMAL")

    def position(self, symbol: str, side: str) -> PositionView | None:
        for view in self.positions:
            if view.position.key == (symbol, side):
                return view
        return None


def _state(ratio: Decimal | None, reached: bool, call_ratio: Decimal) -> RiskState:
    if ratio is None or reached or ratio >= 1:
        return "LIQUIDATION"
    return "MARGIN_CALL" if ratio >= call_ratio else "NORMAL"


def value(ledger: Ledger, catalog: Catalog, margin_call_ratio: Decimal) -> Valuation:
    """Value every position at its effective mark and derive wallets and risk states.

    A position whose symbol left the catalog is valued at nothing (no instrument): it is
    skipped from the numbers but kept in the ledger.

    Risk states: a cross wallet with open cross positions is LIQUIDATION when its cross
    margin balance ≤ 0 (ratio null), its ratio ≥ 1, or a mark is at or beyond a cross
    liquidation price; MARGIN_CALL when the ratio ≥ ``margin_call_ratio``; else NORMAL.
    An isolated position likewise, with its own margin balance (isolatedMargin + uPnL).
    """
    with localcontext(MONEY):
        base: list[tuple[Position, Instrument, Decimal, Decimal, Decimal, Decimal, Decimal]] = []
        for p in ledger.positions:
            inst = catalog.get(p.symbol)
            if inst is None or not p.is_open:
                continue
            mark = p.effective_mark
            notional = inst.notional(p.quantity, mark)
            base.append(
                (
                    p,
                    inst,
                    mark,
                    notional,
                    initial_margin(notional, p.leverage),
                    maint_margin(inst, notional),
                    inst.pnl(p.quantity, p.entry_price, mark),
                )
            )
        assets = set(ledger.wallets) | {inst.settle_asset for _, inst, *_ in base}
        wallets: dict[str, WalletView] = {}
        cross_liq: dict[str, Liquidation | None] = {}
        views: list[PositionView] = []
        for asset in sorted(assets):
            rows = [r for r in base if r[1].settle_asset == asset]
            cross = [r for r in rows if r[0].margin_mode == "CROSS"]
            iso_sum = sum(
                (r[0].isolated_margin for r in rows if r[0].margin_mode == "ISOLATED"), ZERO
            )
            balance = ledger.wallet(asset).balance
            cross_wallet = balance - iso_sum
            cross_upnl = sum((r[6] for r in cross), ZERO)
            cross_mb = cross_wallet + cross_upnl
            cross_im = sum((r[4] for r in cross), ZERO)
            cross_mm = sum((r[5] for r in cross), ZERO)
            ratio = cross_mm / cross_mb if cross_mb > 0 else None
            # Cross liquidation price per symbol: other symbols enter with MM and uPnL.
            reached = False
            for symbol in sorted({r[0].symbol for r in cross}):
                mine = [r for r in cross if r[0].symbol == symbol]
                others = [r for r in cross if r[0].symbol != symbol]
                liq = liquidation_price(
                    mine[0][1],
                    [Leg(r[0].quantity, r[0].entry_price) for r in mine],
                    mine[0][2],
                    cross_wallet,
                    sum((r[5] for r in others), ZERO),
                    sum((r[6] for r in others), ZERO),
                )
                cross_liq[symbol] = liq
                if liq is not None and liq.reached_by(mine[0][2]):
                    reached = True
            if cross:
                state = _state(ratio, reached, margin_call_ratio)
            else:
                state = "NORMAL"
                ratio = ZERO if cross_mb > 0 else None
            wallets[asset] = WalletView(
                asset=asset,
                wallet_balance=balance,
                cross_wallet_balance=cross_wallet,
                cross_margin_balance=cross_mb,
                margin_balance=balance + sum((r[6] for r in rows), ZERO),
                available_balance=cross_mb - cross_im,
                cross_initial_margin=cross_im,
                cross_maint_margin=cross_mm,
                total_initial_margin=sum((r[4] for r in rows), ZERO),
                total_maint_margin=sum((r[5] for r in rows), ZERO),
                margin_ratio=ratio,
                has_cross_position=bool(cross),
                risk_state=state,
            )
        for p, inst, mark, notional, im, mm, upnl in base:
            if p.margin_mode == "CROSS":
                liq = cross_liq.get(p.symbol)
                views.append(
                    PositionView(
                        p,
                        inst,
                        mark,
                        notional,
                        im,
                        mm,
                        upnl,
                        liq,
                        None,
                        None,
                        wallets[inst.settle_asset].risk_state,
                    )
                )
                continue
            mb = p.isolated_margin + upnl
            iso_ratio = mm / mb if mb > 0 else None
            liq = liquidation_price(inst, [Leg(p.quantity, p.entry_price)], mark, p.isolated_margin)
            reached = liq is not None and liq.reached_by(mark)
            views.append(
                PositionView(
                    p,
                    inst,
                    mark,
                    notional,
                    im,
                    mm,
                    upnl,
                    liq,
                    mb,
                    iso_ratio,
                    _state(iso_ratio, reached, margin_call_ratio),
                )
            )
    return Valuation(positions=tuple(views), wallets=wallets)
