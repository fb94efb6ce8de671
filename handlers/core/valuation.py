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
from dataclasses import dataclass, field, replace
from decimal import Decimal

from handlers.core.catalog import Catalog, Instrument
from handlers.core.decimals import m_add, m_div, m_sub
from handlers.core.margin import Leg, Liquidation, initial_margin, liquidation_price, maint_margin
from handlers.core.state import RISK_ORDER, Ledger, Position, RiskState, Wallet

__all__ = [
    "GROUP_CACHE_SIZE",
    "PositionView",
    "Valuation",
    "WalletView",
    "settle_risk_states",
    "value",
]

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
    #: The catalog it was valued with (None for one built by hand): the account
    #: document's writer settles each open order's reservation in its symbol's asset by it
    #: (``openOrderMargin``), so the write needs no other catalog than the valuation's.
    catalog: Catalog | None = field(default=None, compare=False, repr=False)

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


_Row = tuple[Position, Instrument, Decimal, Decimal, Decimal, Decimal, Decimal]
_Group = tuple[WalletView, tuple[PositionView, ...]]
#: Per-asset valuations kept per catalog (see :func:`value`).
GROUP_CACHE_SIZE = 4096


def _sum(values: list[Decimal]) -> Decimal:
    """``sum(values, ZERO)`` in MONEY (the same additions, in order)."""
    total = ZERO
    for item in values:
        total = m_add(total, item)
    return total


def _row(p: Position, inst: Instrument) -> _Row:
    mark = p.effective_mark
    notional = inst.notional(p.quantity, mark)
    return (
        p,
        inst,
        mark,
        notional,
        initial_margin(notional, p.leverage),
        maint_margin(inst, notional),
        inst.pnl(p.quantity, p.entry_price, mark),
    )


def _value_group(
    asset: str, balance: Decimal, rows: list[_Row], margin_call_ratio: Decimal
) -> _Group:
    """One settle asset: its wallet and its positions (``rows`` in ledger order)."""
    cross = [r for r in rows if r[0].margin_mode == "CROSS"]
    iso_sum = _sum([r[0].isolated_margin for r in rows if r[0].margin_mode == "ISOLATED"])
    cross_wallet = m_sub(balance, iso_sum)
    cross_upnl = _sum([r[6] for r in cross])
    cross_mb = m_add(cross_wallet, cross_upnl)
    cross_im = _sum([r[4] for r in cross])
    cross_mm = _sum([r[5] for r in cross])
    ratio = m_div(cross_mm, cross_mb) if cross_mb > 0 else None
    # Cross liquidation price per symbol: other symbols enter with MM and uPnL.
    reached = False
    cross_liq: dict[str, Liquidation | None] = {}
    for symbol in sorted({r[0].symbol for r in cross}):
        mine = [r for r in cross if r[0].symbol == symbol]
        others = [r for r in cross if r[0].symbol != symbol]
        liq = liquidation_price(
            mine[0][1],
            [Leg(r[0].quantity, r[0].entry_price) for r in mine],
            mine[0][2],
            cross_wallet,
            _sum([r[5] for r in others]),
            _sum([r[6] for r in others]),
        )
        cross_liq[symbol] = liq
        if liq is not None and liq.reached_by(mine[0][2]):
            reached = True
    state: RiskState
    if cross:
        state = _state(ratio, reached, margin_call_ratio)
    else:
        state = "NORMAL"
        ratio = ZERO if cross_mb > 0 else None
    wallet = WalletView(
        asset=asset,
        wallet_balance=balance,
        cross_wallet_balance=cross_wallet,
        cross_margin_balance=cross_mb,
        margin_balance=m_add(balance, _sum([r[6] for r in rows])),
        available_balance=m_sub(cross_mb, cross_im),
        cross_initial_margin=cross_im,
        cross_maint_margin=cross_mm,
        total_initial_margin=_sum([r[4] for r in rows]),
        total_maint_margin=_sum([r[5] for r in rows]),
        margin_ratio=ratio,
        has_cross_position=bool(cross),
        risk_state=state,
    )
    views: list[PositionView] = []
    for p, inst, mark, notional, im, mm, upnl in rows:
        if p.margin_mode == "CROSS":  # the wallet's liquidation price, margin and state
            liq, mb, pos_ratio, pos_state = cross_liq.get(p.symbol), None, None, state
        else:
            mb = m_add(p.isolated_margin, upnl)
            pos_ratio = m_div(mm, mb) if mb > 0 else None
            legs = [Leg(p.quantity, p.entry_price)]
            liq = liquidation_price(inst, legs, mark, p.isolated_margin)
            reached = liq is not None and liq.reached_by(mark)
            pos_state = _state(pos_ratio, reached, margin_call_ratio)
        views.append(
            PositionView(p, inst, mark, notional, im, mm, upnl, liq, mb, pos_ratio, pos_state)
        )
    return wallet, tuple(views)


def value(ledger: Ledger, catalog: Catalog, margin_call_ratio: Decimal) -> Valuation:
    """Value every position at its effective mark and derive wallets and risk states.

    A position whose symbol left the catalog is valued at nothing (no instrument): it is
    skipped from the numbers but kept in the ledger.

    Risk states: a cross wallet with open cross positions is LIQUIDATION when its cross
    margin balance ≤ 0 (ratio null), its ratio ≥ 1, or a mark is at or beyond a cross
    liquidation price; MARGIN_CALL when the ratio ≥ ``margin_call_ratio``; else NORMAL.
    An isolated position likewise, with its own margin balance (isolatedMargin + uPnL).

    Each settle asset is valued from its wallet balance and its open positions alone, so
    its result is kept (per catalog, the last :data:`GROUP_CACHE_SIZE`) under exactly
    those inputs — the balance and the positions, compared whole — and an event re-values
    only the asset it changed: a fill its settle asset, a mark its symbol's.
    """
    groups: dict[str, list[Position]] = {}
    instruments = catalog.instruments
    for p in ledger.positions:
        inst = instruments.get(p.symbol)
        if inst is None or p.quantity == 0:
            continue
        mine = groups.get(inst.settle_asset)
        if mine is None:
            groups[inst.settle_asset] = [p]
        else:
            mine.append(p)
    wallets_in = ledger.wallets
    cache = catalog.valuation_cache
    wallets: dict[str, WalletView] = {}
    views: dict[str, tuple[PositionView, ...]] = {}
    for asset in sorted(groups.keys() | wallets_in.keys()):
        positions = tuple(groups.get(asset, ()))
        held = wallets_in.get(asset)
        balance = held.balance if held is not None else ZERO
        key = (asset, margin_call_ratio, balance, positions)
        group = cache.get(key)
        if group is None:
            rows = [_row(p, instruments[p.symbol]) for p in positions]
            group = _value_group(asset, balance, rows, margin_call_ratio)
            cache.put(key, group)
        wallets[asset], views[asset] = group
    if len(views) == 1:
        ordered = next(iter(views.values()))
    else:  # ledger order across assets
        taken = dict.fromkeys(views, 0)
        out: list[PositionView] = []
        for p in ledger.positions:
            inst = instruments.get(p.symbol)
            if inst is None or p.quantity == 0:
                continue
            asset = inst.settle_asset
            out.append(views[asset][taken[asset]])
            taken[asset] += 1
        ordered = tuple(out)
    return Valuation(positions=ordered, wallets=wallets, catalog=catalog)


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
