"""Derived numbers of a ledger at its marks: per position, per settle-asset wallet, risk.

Per settle asset: walletBalance = cross wallet + Σ isolated margins; crossWalletBalance =
walletBalance − Σ isolatedMargin; cross margin balance = crossWalletBalance + Σ cross
uPnL; availableBalance = cross margin balance − Σ cross initial margin; marginRatio = Σ
cross maintenance margin / cross margin balance. The wallet's ``marginBalance``,
``totalInitialMargin`` and ``totalMaintMargin`` are Binance's account totals (all
positions of the asset, isolated included). Risk states: see :func:`value`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from handlers.core.catalog import Catalog, Instrument
from handlers.core.decimals import m_abs, m_add, m_div, m_mul, m_sub
from handlers.core.margin import Leg, Liquidation, liquidation_price, one_leg_liquidation
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
_ONE = Decimal(1)


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
            p = view.position
            if p.symbol == symbol and p.position_side == side:
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


def _row(p: Position, inst: Instrument) -> _Row:
    """(position, instrument, mark, notional, IM, MM, uPnL): the MONEY operations of
    ``Instrument.notional``, ``initial_margin``, ``maint_margin`` and ``Instrument.pnl``,
    in their order, written out."""
    mark = p.mark_price
    if mark is None:
        mark = p.last_fill_price
    quantity = p.quantity
    cs = inst.contract_size
    size = m_mul(m_abs(quantity), cs)
    scaled = m_mul(quantity, cs)
    if inst.is_inverse:
        notional = m_div(size, mark)
        upnl = m_mul(scaled, m_sub(m_div(_ONE, p.entry_price), m_div(_ONE, mark)))
    else:
        notional = m_mul(size, mark)
        upnl = m_mul(scaled, m_sub(mark, p.entry_price))
    if notional == 0:
        maint = ZERO
    else:
        index = bisect_right(inst.caps, notional)
        brackets = inst.brackets
        bracket = brackets[index] if index < len(brackets) else brackets[-1]
        maint = m_sub(m_mul(notional, bracket.maint_margin_ratio), bracket.maint_amount)
    return (p, inst, mark, notional, m_div(notional, p.leverage), maint, upnl)


def _value_group(
    asset: str, balance: Decimal, rows: list[_Row], margin_call_ratio: Decimal
) -> _Group:
    """One settle asset: its wallet and its positions (``rows`` in ledger order).

    Every sum starts at 0 and adds its terms in ledger order, whichever pass adds them.
    """
    cross: list[_Row] = []
    iso_sum = cross_upnl = cross_im = cross_mm = ZERO
    all_upnl = all_im = all_mm = ZERO
    for row in rows:
        im, mm, upnl = row[4], row[5], row[6]
        mode = row[0].margin_mode
        if mode == "CROSS":
            cross.append(row)
            cross_upnl = m_add(cross_upnl, upnl)
            cross_im = m_add(cross_im, im)
            cross_mm = m_add(cross_mm, mm)
        elif mode == "ISOLATED":
            iso_sum = m_add(iso_sum, row[0].isolated_margin)
        all_upnl = m_add(all_upnl, upnl)
        all_im = m_add(all_im, im)
        all_mm = m_add(all_mm, mm)
    cross_wallet = m_sub(balance, iso_sum)
    cross_mb = m_add(cross_wallet, cross_upnl)
    state: RiskState = "NORMAL"
    ratio: Decimal | None
    cross_liq: dict[str, Liquidation | None] = {}
    if cross:
        ratio = m_div(cross_mm, cross_mb) if cross_mb > 0 else None
        # Cross liquidation price per symbol: other symbols enter with MM and uPnL.
        reached = False
        symbols = [r[0].symbol for r in cross]
        for symbol in sorted(set(symbols)) if len(symbols) > 1 else symbols:
            mine: list[_Row] = []
            other_mm = other_upnl = ZERO
            for r in cross:
                if r[0].symbol == symbol:
                    mine.append(r)
                else:
                    other_mm = m_add(other_mm, r[5])
                    other_upnl = m_add(other_upnl, r[6])
            first = mine[0]
            if len(mine) == 1:
                p = first[0]
                liq = one_leg_liquidation(
                    first[1],
                    p.quantity,
                    p.entry_price,
                    first[2],
                    cross_wallet,
                    other_mm,
                    other_upnl,
                )
            else:
                legs = [Leg(r[0].quantity, r[0].entry_price) for r in mine]
                liq = liquidation_price(
                    first[1], legs, first[2], cross_wallet, other_mm, other_upnl
                )
            cross_liq[symbol] = liq
            if liq is not None and liq.reached_by(first[2]):
                reached = True
        state = _state(ratio, reached, margin_call_ratio)
    else:
        ratio = ZERO if cross_mb > 0 else None
    wallet = WalletView(
        asset,
        balance,
        cross_wallet,
        cross_mb,
        m_add(balance, all_upnl),
        m_sub(cross_mb, cross_im),
        cross_im,
        cross_mm,
        all_im,
        all_mm,
        ratio,
        bool(cross),
        state,
    )
    views: list[PositionView] = []
    for p, inst, mark, notional, im, mm, upnl in rows:
        if p.margin_mode == "CROSS":  # the wallet's liquidation price, margin and state
            views.append(
                PositionView(
                    p,
                    inst,
                    mark,
                    notional,
                    im,
                    mm,
                    upnl,
                    cross_liq.get(p.symbol),
                    None,
                    None,
                    state,
                )
            )
            continue
        mb = m_add(p.isolated_margin, upnl)
        pos_ratio = m_div(mm, mb) if mb > 0 else None
        liq = one_leg_liquidation(inst, p.quantity, p.entry_price, mark, p.isolated_margin)
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
                pos_ratio,
                _state(pos_ratio, reached, margin_call_ratio),
            )
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
    instruments = catalog.instruments
    groups: dict[str, list[Position]] = {}
    order: list[str] = []  # the settle asset of each valued position, in ledger order
    for p in ledger.positions:
        inst = instruments.get(p.symbol)
        if inst is None or p.quantity == 0:
            continue
        asset = inst.settle_asset
        order.append(asset)
        mine = groups.get(asset)
        if mine is None:
            groups[asset] = [p]
        else:
            mine.append(p)
    wallets_in = ledger.wallets
    cache = catalog.valuation_cache
    wallets: dict[str, WalletView] = {}
    views: dict[str, tuple[PositionView, ...]] = {}
    for asset in sorted(groups.keys() | wallets_in.keys()):
        mine = groups.get(asset)
        positions = tuple(mine) if mine is not None else ()
        held = wallets_in.get(asset)
        balance = held.balance if held is not None else ZERO
        parts = (asset, margin_call_ratio, balance, positions)
        key = _new_key(_Key, (hash(parts), *parts))
        group = cache.get(key)
        if group is None:
            rows = [_row(p, instruments[p.symbol]) for p in positions]
            group = _value_group(asset, balance, rows, margin_call_ratio)
            cache.put(key, group)
        wallets[asset], views[asset] = group
    ordered: tuple[PositionView, ...]
    if len(groups) > 1:  # ledger order across assets
        taken = {asset: iter(views[asset]) for asset in groups}
        ordered = tuple([next(taken[asset]) for asset in order])
    else:
        ordered = views[order[0]] if order else ()
    return Valuation(positions=ordered, wallets=wallets, catalog=catalog)


class _Key(tuple[object, ...]):
    """A memo key: (its hash, asset, call ratio, balance, positions), built by
    ``_new_key(_Key, (hash(parts), *parts))``. Its hash is computed once (a tuple computes
    its own at every dict operation); equal keys compare equal element by element, the
    hash first."""

    __slots__ = ()

    def __hash__(self) -> int:
        return self[0]  # type: ignore[return-value]


_new_key = tuple.__new__


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
        p = v.position
        key = (p.symbol, p.position_side)
        if key not in states:
            states[key] = v.risk_state
    held = ledger.positions
    positions: list[Position] | None = None  # None while every position keeps its state
    for n, p in enumerate(held):
        state = states.get((p.symbol, p.position_side), "NORMAL")
        if p.risk_state != state:
            if positions is None:
                positions = list(held[:n])
            positions.append(replace(p, risk_state=state))
        elif positions is not None:
            positions.append(p)
    return Ledger(wallets=wallets, positions=held if positions is None else tuple(positions))
