"""State transitions: apply_fill, apply_transfer, apply_mark (handlers.core.state)."""

from __future__ import annotations

from datetime import timedelta
from decimal import localcontext

import pytest

from handlers.core.catalog import Instrument
from handlers.core.decimals import MONEY
from handlers.core.state import Ledger, Position, Rejected, apply_fill, apply_mark, apply_transfer

from .builders import T0, D, deposit, fill, transfer


def open_(ledger: Ledger, inst: Instrument, **changes: object) -> Ledger:
    return apply_fill(ledger, fill(symbol=inst.symbol, **changes), inst, None)


def pos(ledger: Ledger, symbol: str = "BTCUSDT", side: str = "BOTH") -> Position:
    p = ledger.position(symbol, side)
    assert p is not None
    return p


def rejected(code: str, ledger: Ledger, inst: Instrument, **changes: object) -> None:
    with pytest.raises(Rejected) as info:
        open_(ledger, inst, **changes)
    assert info.value.code == code


@pytest.fixture
def funded() -> Ledger:
    return deposit(Ledger(), "1000")


# --- linear, one-way -------------------------------------------------------------------


def test_open_long(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1", price="60000", leverage=10, fee="2.4")
    p = pos(ledger)
    assert p.quantity == D("0.1")
    assert p.entry_price == D(60000)
    assert p.leverage == 10
    assert p.margin_mode == "CROSS"
    assert p.isolated_margin == 0
    assert p.realized_pnl == 0
    assert p.mark_price is None
    assert p.effective_mark == D(60000)  # the fill price until a mark arrives
    assert p.updated_at == T0
    assert ledger.wallet("USDT").balance == D("997.6")  # the fee reduces the wallet


def test_open_short_is_negative(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, side="SELL", quantity="0.25")
    assert pos(ledger).quantity == D("-0.25")


def test_add_uses_quantity_weighted_entry_and_last_leverage(
    funded: Ledger, btcusdt: Instrument
) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1", price="60000", leverage=10)
    ledger = open_(ledger, btcusdt, quantity="0.3", price="62000", leverage=20)
    p = pos(ledger)
    assert p.quantity == D("0.4")
    assert p.entry_price == D(61500)  # (0.1×60000 + 0.3×62000) / 0.4
    assert p.leverage == 20


def test_reduce_realizes_pnl_at_entry_and_keeps_entry(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, quantity="0.4", price="61500", leverage=20)
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.1", price="63000", leverage=5, fee="1")
    p = pos(ledger)
    assert p.quantity == D("0.3")
    assert p.entry_price == D(61500)
    assert p.leverage == 20  # a reducing fill does not change the leverage
    assert p.realized_pnl == D(150)  # 0.1 × (63000 − 61500)
    assert ledger.wallet("USDT").balance == D(1000) + 150 - 1


def test_reduce_short_at_a_loss(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, side="SELL", quantity="0.2", price="60000")
    ledger = open_(ledger, btcusdt, side="BUY", quantity="0.05", price="62000")
    p = pos(ledger)
    assert p.quantity == D("-0.15")
    assert p.realized_pnl == D(-100)  # −0.05 × (62000 − 60000)
    assert ledger.wallet("USDT").balance == D(900)


def test_full_close_keeps_the_position_for_its_realized_pnl(
    funded: Ledger, btcusdt: Instrument
) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1", price="60000")
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.1", price="59000")
    p = pos(ledger)
    assert not p.is_open
    assert p.quantity == 0
    assert p.entry_price == 0
    assert p.realized_pnl == D(-100)
    assert ledger.wallet("USDT").balance == D(900)


def test_flip_closes_and_opens_the_remainder_at_the_fill_price(
    funded: Ledger, btcusdt: Instrument
) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1", price="60000", leverage=10)
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.3", price="61000", leverage=7)
    p = pos(ledger)
    assert p.quantity == D("-0.2")
    assert p.entry_price == D(61000)
    assert p.leverage == 7
    assert p.realized_pnl == D(100)  # 0.1 × (61000 − 60000) on the closed part only
    assert ledger.wallet("USDT").balance == D(1100)


def test_reopen_after_close_starts_a_new_entry(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1", price="60000")
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.1", price="61000")
    ledger = open_(ledger, btcusdt, quantity="0.2", price="50000", leverage=3)
    p = pos(ledger)
    assert p.quantity == D("0.2")
    assert p.entry_price == D(50000)
    assert p.leverage == 3
    assert p.realized_pnl == D(100)  # kept across the close


# --- reduce-only, hedge ---------------------------------------------------------------


def test_reduce_only_open_in_one_way_is_rejected(funded: Ledger, btcusdt: Instrument) -> None:
    rejected("REDUCE_ONLY_VIOLATION", funded, btcusdt, reduceOnly=True)


def test_reduce_only_increase_in_one_way_is_rejected(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1")
    rejected("REDUCE_ONLY_VIOLATION", ledger, btcusdt, quantity="0.1", reduceOnly=True)


def test_reduce_only_flip_in_one_way_is_rejected(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1")
    rejected("REDUCE_ONLY_VIOLATION", ledger, btcusdt, side="SELL", quantity="0.2", reduceOnly=True)


def test_reduce_only_close_in_one_way_is_allowed(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1")
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.04", reduceOnly=True)
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.06", reduceOnly=True)
    assert pos(ledger).quantity == 0


def test_reduce_only_open_in_hedge_is_rejected(funded: Ledger, btcusdt: Instrument) -> None:
    rejected("REDUCE_ONLY_VIOLATION", funded, btcusdt, positionSide="LONG", reduceOnly=True)
    rejected(
        "REDUCE_ONLY_VIOLATION",
        funded,
        btcusdt,
        side="SELL",
        positionSide="SHORT",
        reduceOnly=True,
    )


def test_hedge_long_and_short_coexist(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, positionSide="LONG", quantity="0.2", price="60000")
    ledger = open_(
        ledger, btcusdt, positionSide="SHORT", side="SELL", quantity="0.1", price="61000"
    )
    assert pos(ledger, side="LONG").quantity == D("0.2")
    assert pos(ledger, side="SHORT").quantity == D("-0.1")
    ledger = open_(ledger, btcusdt, positionSide="SHORT", side="BUY", quantity="0.1", price="60000")
    assert pos(ledger, side="SHORT").quantity == 0
    assert pos(ledger, side="SHORT").realized_pnl == D(100)
    assert pos(ledger, side="LONG").quantity == D("0.2")


@pytest.mark.parametrize("reduce_only", [False, True])
def test_hedge_close_beyond_held_is_rejected(
    funded: Ledger, btcusdt: Instrument, reduce_only: bool
) -> None:
    ledger = open_(funded, btcusdt, positionSide="LONG", quantity="0.1")
    rejected(
        "REDUCE_ONLY_VIOLATION",
        ledger,
        btcusdt,
        positionSide="LONG",
        side="SELL",
        quantity="0.2",
        reduceOnly=reduce_only,
    )
    rejected("REDUCE_ONLY_VIOLATION", ledger, btcusdt, positionSide="SHORT", side="BUY")


def test_hedge_close_of_exactly_held_is_allowed(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, positionSide="LONG", quantity="0.1")
    ledger = open_(
        ledger, btcusdt, positionSide="LONG", side="SELL", quantity="0.1", reduceOnly=True
    )
    assert pos(ledger, side="LONG").quantity == 0


# --- mode mismatches ------------------------------------------------------------------


def test_one_way_fill_on_open_hedge_symbol_is_a_mismatch(
    funded: Ledger, btcusdt: Instrument
) -> None:
    ledger = open_(funded, btcusdt, positionSide="LONG")
    rejected("POSITION_SIDE_MISMATCH", ledger, btcusdt, positionSide="BOTH")


def test_hedge_fill_on_open_one_way_symbol_is_a_mismatch(
    funded: Ledger, btcusdt: Instrument
) -> None:
    ledger = open_(funded, btcusdt)
    rejected("POSITION_SIDE_MISMATCH", ledger, btcusdt, positionSide="LONG")
    rejected("POSITION_SIDE_MISMATCH", ledger, btcusdt, positionSide="SHORT", side="SELL")


@pytest.mark.parametrize(("first", "second"), [("CROSS", "ISOLATED"), ("ISOLATED", "CROSS")])
def test_margin_mode_mismatch_while_open(
    funded: Ledger, btcusdt: Instrument, first: str, second: str
) -> None:
    ledger = open_(funded, btcusdt, marginMode=first)
    rejected("POSITION_SIDE_MISMATCH", ledger, btcusdt, marginMode=second)
    # a reducing fill of the other margin mode is a mismatch too
    rejected("POSITION_SIDE_MISMATCH", ledger, btcusdt, marginMode=second, side="SELL")


def test_hedge_margin_mode_mismatch_across_sides(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, positionSide="LONG", marginMode="ISOLATED")
    rejected(
        "POSITION_SIDE_MISMATCH",
        ledger,
        btcusdt,
        positionSide="SHORT",
        side="SELL",
        marginMode="CROSS",
    )


def test_modes_may_change_once_closed(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1")
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.1")
    ledger = open_(ledger, btcusdt, positionSide="LONG", marginMode="ISOLATED")
    assert pos(ledger, side="LONG").margin_mode == "ISOLATED"
    ledger = open_(ledger, btcusdt, positionSide="LONG", side="SELL", marginMode="ISOLATED")
    ledger = open_(ledger, btcusdt, positionSide="BOTH", marginMode="CROSS", quantity="0.5")
    assert pos(ledger).quantity == D("0.5")


def test_modes_are_per_symbol(funded: Ledger, btcusdt: Instrument, ethusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, positionSide="LONG", marginMode="ISOLATED")
    ledger = open_(ledger, ethusdt, price="2500", quantity="1", marginMode="CROSS")
    assert pos(ledger, "ETHUSDT").margin_mode == "CROSS"


# --- isolated margin ------------------------------------------------------------------


def test_isolated_margin_added_and_released_pro_rata(funded: Ledger, btcusdt: Instrument) -> None:
    iso = {"marginMode": "ISOLATED"}
    ledger = open_(funded, btcusdt, quantity="0.1", price="60000", leverage=10, **iso)
    assert pos(ledger).isolated_margin == D(600)  # 6000 / 10
    ledger = open_(ledger, btcusdt, quantity="0.1", price="62000", leverage=20, **iso)
    assert pos(ledger).isolated_margin == D(910)  # + 6200 / 20
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.05", price="70000", **iso)
    assert pos(ledger).isolated_margin == D("682.5")  # 910 × (1 − 0.05/0.2)
    assert ledger.wallet("USDT").balance == D(1000) + D("0.05") * (70000 - 61000)
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.15", price="61000", **iso)
    assert pos(ledger).isolated_margin == 0


def test_isolated_flip_margins_the_remainder(funded: Ledger, btcusdt: Instrument) -> None:
    iso = {"marginMode": "ISOLATED"}
    ledger = open_(funded, btcusdt, quantity="0.1", price="60000", leverage=10, **iso)
    ledger = open_(ledger, btcusdt, side="SELL", quantity="0.3", price="61000", leverage=5, **iso)
    p = pos(ledger)
    assert p.quantity == D("-0.2")
    assert p.isolated_margin == D(2440)  # 0.2 × 61000 / 5
    assert ledger.wallet("USDT").balance == D(1100)


def test_cross_position_has_no_isolated_margin(funded: Ledger, btcusdt: Instrument) -> None:
    ledger = open_(funded, btcusdt, quantity="0.1", price="60000", leverage=10)
    assert pos(ledger).isolated_margin == 0


# --- inverse --------------------------------------------------------------------------


def test_inverse_entry_is_harmonic(btcusd_perp: Instrument) -> None:
    ledger = deposit(Ledger(), "1", "BTC")
    ledger = open_(ledger, btcusd_perp, quantity="100", price="50000")
    ledger = open_(ledger, btcusd_perp, quantity="200", price="40000")
    p = pos(ledger, "BTCUSD_PERP")
    assert p.quantity == D(300)
    # Σ contracts / Σ (contracts / price) = 300 / (100/50000 + 200/40000) = 300000/7
    with localcontext(MONEY):
        exact = D(300000) / 7
    assert abs(p.entry_price - exact) <= D("0.5e-18")
    assert p.entry_price == D("42857.142857142857142857")


def test_inverse_pnl_in_coin(btcusd_perp: Instrument) -> None:
    ledger = deposit(Ledger(), "1", "BTC")
    ledger = open_(ledger, btcusd_perp, quantity="100", price="50000", fee="0.0001")
    ledger = open_(ledger, btcusd_perp, side="SELL", quantity="100", price="40000")
    # contracts × 100 × (1/entry − 1/exit) = 10000 × (1/50000 − 1/40000) = −0.05 BTC
    assert pos(ledger, "BTCUSD_PERP").realized_pnl == D("-0.05")
    assert ledger.wallet("BTC").balance == D(1) - D("0.05") - D("0.0001")
    assert ledger.wallet("USDT").balance == 0


def test_inverse_short_profit(btcusd_perp: Instrument) -> None:
    ledger = deposit(Ledger(), "1", "BTC")
    ledger = open_(ledger, btcusd_perp, side="SELL", quantity="200", price="50000")
    ledger = open_(ledger, btcusd_perp, side="BUY", quantity="50", price="40000")
    # −50 × 100 × (1/50000 − 1/40000) = +0.025
    assert pos(ledger, "BTCUSD_PERP").realized_pnl == D("0.025")
    assert pos(ledger, "BTCUSD_PERP").quantity == D(-150)


def test_inverse_isolated_margin_in_coin(btcusd_perp: Instrument) -> None:
    ledger = deposit(Ledger(), "1", "BTC")
    ledger = open_(
        ledger, btcusd_perp, quantity="100", price="50000", leverage=10, marginMode="ISOLATED"
    )
    assert pos(ledger, "BTCUSD_PERP").isolated_margin == D("0.02")  # 10000/50000/10


# --- transfers ------------------------------------------------------------------------


def test_deposit_and_withdrawal() -> None:
    ledger = apply_transfer(Ledger(), transfer("1000"), None)
    assert ledger.wallet("USDT").balance == D(1000)
    ledger = apply_transfer(ledger, transfer("-400", "WITHDRAWAL"), D(1000))
    assert ledger.wallet("USDT").balance == D(600)
    ledger = apply_transfer(ledger, transfer("-600", "WITHDRAWAL"), D(600))  # exactly all
    assert ledger.wallet("USDT").balance == 0


def test_withdrawal_beyond_available_is_rejected() -> None:
    ledger = deposit(Ledger(), "1000")
    with pytest.raises(Rejected) as info:
        # the wallet holds 1000 but only 400 is available (margin is in use)
        apply_transfer(ledger, transfer("-400.01", "WITHDRAWAL"), D(400))
    assert info.value.code == "INSUFFICIENT_AVAILABLE_BALANCE"
    assert apply_transfer(ledger, transfer("-400", "WITHDRAWAL"), D(400)).wallet(
        "USDT"
    ).balance == D(600)


def test_withdrawal_from_an_empty_wallet_is_rejected() -> None:
    with pytest.raises(Rejected) as info:
        apply_transfer(Ledger(), transfer("-1", "WITHDRAWAL"), None)
    assert info.value.code == "INSUFFICIENT_AVAILABLE_BALANCE"


@pytest.mark.parametrize("reason", ["FUNDING", "ADJUSTMENT"])
def test_funding_and_adjustment_are_always_applied(reason: str) -> None:
    ledger = deposit(Ledger(), "10")
    ledger = apply_transfer(ledger, transfer("-25", reason), D(0))
    assert ledger.wallet("USDT").balance == D(-15)


def test_transfers_are_per_asset() -> None:
    ledger = deposit(deposit(Ledger(), "1000"), "0.5", "BTC")
    assert ledger.wallet("USDT").balance == D(1000)
    assert ledger.wallet("BTC").balance == D("0.5")
    with pytest.raises(Rejected):
        apply_transfer(ledger, transfer("-0.6", "WITHDRAWAL", asset="BTC"), None)


# --- marks ----------------------------------------------------------------------------


def test_apply_mark_only_newer_marks(
    funded: Ledger, btcusdt: Instrument, ethusdt: Instrument
) -> None:
    ledger = open_(funded, btcusdt)
    ledger = open_(ledger, ethusdt, price="2500", quantity="1")
    later = T0 + timedelta(minutes=5)
    ledger = apply_mark(ledger, "BTCUSDT", D(61000), later)
    assert pos(ledger).mark_price == D(61000)
    assert pos(ledger).effective_mark == D(61000)
    assert pos(ledger, "ETHUSDT").mark_price is None
    assert apply_mark(ledger, "BTCUSDT", D(1), later) == ledger  # equal time: ignored
    ledger = apply_mark(ledger, "BTCUSDT", D(1), later - timedelta(seconds=1))
    assert pos(ledger).mark_price == D(61000)


def test_fill_takes_the_stored_mark(funded: Ledger, btcusdt: Instrument) -> None:
    when = T0 - timedelta(minutes=1)
    ledger = apply_fill(funded, fill(), btcusdt, (D(59000), when))
    assert pos(ledger).mark_price == D(59000)
    assert pos(ledger).mark_time == when


def test_state_is_immutable(funded: Ledger, btcusdt: Instrument) -> None:
    before = funded
    after = open_(funded, btcusdt)
    assert before.positions == ()
    assert before.wallet("USDT").balance == D(1000)
    assert after is not before
