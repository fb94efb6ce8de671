"""Stateless checks of a FILL against its instrument (handlers.core.validation)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from handlers.core.catalog import Instrument
from handlers.core.validation import check_fill, is_multiple

from .builders import D, fill


def codes(instrument: Instrument, **changes: object) -> list[str]:
    return [code for code, _ in check_fill(fill(symbol=instrument.symbol, **changes), instrument)]


def test_a_good_fill_passes(btcusdt: Instrument) -> None:
    assert codes(btcusdt) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"price": "60000.05"}, ["PRICE_TICK"]),
        ({"price": "60000.10"}, []),
        ({"price": "6.000005E+4"}, ["PRICE_TICK"]),
        ({"price": "6.00001E+4"}, []),
        ({"quantity": "0.1015"}, ["QTY_STEP"]),
        ({"quantity": "1000.001"}, ["QTY_BOUNDS"]),
        ({"quantity": "1000"}, []),
        ({"quantity": "0.001", "price": "99999.9"}, ["MIN_NOTIONAL"]),  # 99.9999 < 100
        ({"quantity": "0.001", "price": "60000"}, ["MIN_NOTIONAL"]),  # 60 < 100 USDT
        ({"quantity": "0.001", "price": "100000"}, []),  # exactly 100
        (
            {"quantity": "0.0005", "price": "60000.05"},
            ["PRICE_TICK", "QTY_STEP", "QTY_BOUNDS", "MIN_NOTIONAL"],
        ),
    ],
)
def test_codes_in_a_fixed_order(
    btcusdt: Instrument, changes: dict[str, object], expected: list[str]
) -> None:
    assert codes(btcusdt, **changes) == expected


def test_leverage_above_the_instrument_max(btcusdt: Instrument) -> None:
    capped = replace(btcusdt, max_leverage=20)
    assert codes(capped, leverage=20) == []
    assert codes(capped, leverage=21) == ["LEVERAGE_ABOVE_MAX"]


def test_inverse_min_qty_and_step(btcusd_perp: Instrument) -> None:
    assert codes(btcusd_perp, quantity="1", price="50000") == []
    assert codes(btcusd_perp, quantity="1.5", price="50000") == ["QTY_STEP"]


@pytest.mark.parametrize(
    ("value", "step", "ok"),
    [
        ("0.3", "0.1", True),
        ("0.35", "0.1", False),
        ("1E+3", "0.001", True),
        ("123456789012345678901234567890.1", "0.1", True),
        ("0.000000000000000000000000000001", "0.1", False),
        ("60000.1", "0.1", True),
    ],
)
def test_is_multiple(value: str, step: str, ok: bool) -> None:
    assert is_multiple(D(value), Decimal(step)) is ok
