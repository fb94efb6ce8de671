"""The worked examples of docs/margin.md, computed by the core and compared as written."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from handlers.core.catalog import Catalog, load_catalog
from handlers.core.contracts import Fill
from handlers.core.decimals import format_decimal
from handlers.core.state import Ledger, Wallet, apply_fill
from handlers.core.valuation import Valuation, value
from handlers.settings import SHIPPED_CATALOG

DOC = Path(__file__).resolve().parents[2] / "docs" / "margin.md"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(SHIPPED_CATALOG)


def fill(
    symbol: str, side: str, qty: str, price: str, leverage: int, mode: str = "CROSS", n: int = 0
) -> Fill:
    return Fill(
        type="FILL",
        schemaVersion=1,
        tradeId=f"t{n}",
        accountId="a",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=Decimal(qty),
        price=Decimal(price),
        leverage=leverage,
        marginMode=mode,  # type: ignore[arg-type]
        executedAt=datetime(2024, 10, 1, tzinfo=UTC),
    )


def run(catalog: Catalog, wallet: tuple[str, str], *fills: Fill) -> Valuation:
    ledger = Ledger().with_wallet(Wallet(wallet[0], Decimal(wallet[1])))
    for f in fills:
        instrument = catalog.get(f.symbol)
        assert instrument is not None
        ledger = apply_fill(ledger, f, instrument, None)
    return value(ledger, catalog, Decimal("0.80"))


def liq(v: Valuation, symbol: str) -> str:
    view = v.position(symbol, "BOTH")
    assert view is not None and view.liquidation is not None
    return format_decimal(view.liquidation.price)


def in_doc(text: str) -> bool:
    return text in DOC.read_text(encoding="utf-8")


def test_example_1_usdm_cross_long(catalog: Catalog) -> None:
    v = run(catalog, ("USDT", "1000"), fill("BTCUSDT", "BUY", "0.1", "60000", 10))
    w = v.wallets["USDT"]
    assert (w.cross_initial_margin, w.cross_maint_margin, w.available_balance) == (600, 24, 400)
    assert w.margin_ratio == Decimal("0.024")
    assert liq(v, "BTCUSDT") == "50200.80321285140562249"
    assert in_doc("`50200.80321285140562249`")


def test_example_2_usdm_isolated_short(catalog: Catalog) -> None:
    v = run(catalog, ("USDT", "10000"), fill("BTCUSDT", "SELL", "1", "60000", 20, "ISOLATED"))
    view = v.position("BTCUSDT", "BOTH")
    assert view is not None and view.position.isolated_margin == 3000
    assert liq(v, "BTCUSDT") == "62736.318407960199004975"
    assert in_doc("62736.318407960199004975")


def test_example_3_usdm_cross_two_symbols(catalog: Catalog) -> None:
    v = run(
        catalog,
        ("USDT", "5000"),
        fill("BTCUSDT", "BUY", "0.5", "64000", 20, n=1),
        fill("ETHUSDT", "SELL", "2", "2500", 10, n=2),
    )
    assert liq(v, "BTCUSDT") == "54257.028112449799196787"
    assert in_doc("54257.028112449799196787")


def test_example_4_coinm_isolated_long(catalog: Catalog) -> None:
    v = run(catalog, ("BTC", "1"), fill("BTCUSD_PERP", "BUY", "100", "50000", 10, "ISOLATED"))
    view = v.position("BTCUSD_PERP", "BOTH")
    assert view is not None and view.position.isolated_margin == Decimal("0.02")
    assert view.notional == Decimal("0.2")
    assert liq(v, "BTCUSD_PERP") == "45636.363636363636363636"
    assert in_doc("45636.363636363636363636")


def test_example_5_coinm_isolated_short(catalog: Catalog) -> None:
    v = run(catalog, ("BTC", "1"), fill("BTCUSD_PERP", "SELL", "300", "64000", 5, "ISOLATED"))
    assert liq(v, "BTCUSD_PERP") == "79680"


def test_example_6_inverse_pnl(catalog: Catalog) -> None:
    instrument = catalog.get("BTCUSD_PERP")
    assert instrument is not None
    pnl = instrument.pnl(Decimal(100), Decimal(50000), Decimal(55000))
    assert format_decimal(pnl) == "0.018181818181818182"
    assert in_doc("0.018181818181818182")


def test_example_7_harmonic_entry(catalog: Catalog) -> None:
    v = run(
        catalog,
        ("BTC", "1"),
        fill("BTCUSD_PERP", "BUY", "100", "50000", 10, n=1),
        fill("BTCUSD_PERP", "BUY", "100", "60000", 10, n=2),
    )
    view = v.position("BTCUSD_PERP", "BOTH")
    assert view is not None
    assert format_decimal(view.position.entry_price) == "54545.454545454545454545"
    assert in_doc("54545.454545454545454545")


def test_example_8_bracket_continuity(catalog: Catalog) -> None:
    inst = catalog.get("BTCUSDT")
    assert inst is not None
    b1, b2 = inst.brackets[0], inst.brackets[1]
    at = b2.notional_floor
    assert (
        at * b1.maint_margin_ratio - b1.maint_amount
        == at * b2.maint_margin_ratio - b2.maint_amount
        == 200
    )


def test_coinm_cross_long_matches_the_binance_calculator(catalog: Catalog) -> None:
    # External reference: a Binance Futures calculator result quoted on the Binance
    # developer forum (dev.binance.vision, "Coin-Margined Futures liquidation price
    # calculation help"): wallet 101 BTC, long 100,000 BTCUSD contracts (10,000,000 USD) at
    # 45,000, cross → liquidation price 33,599.40 USD. The position (222.2 BTC, and 297.6
    # BTC at the liquidation price) sits in the 200–400 BTC bracket: mmr 12.5 %, cum 11.605.
    v = run(catalog, ("BTC", "101"), fill("BTCUSD_PERP", "BUY", "100000", "45000", 2))
    view = v.position("BTCUSD_PERP", "BOTH")
    assert view is not None and view.liquidation is not None
    assert abs(view.liquidation.price - Decimal("33599.40")) < Decimal("0.05")
    assert format_decimal(view.liquidation.price) == "33599.418605615831714201"
