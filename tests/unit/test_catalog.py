"""The instrument catalog: the shipped file, continuity, refusals, INSTRUMENTS_FILE."""

from __future__ import annotations

import copy
import itertools
import json
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest

from handlers.core.catalog import Catalog, load_catalog, parse_catalog
from handlers.core.decimals import MONEY
from handlers.core.margin import maint_margin
from handlers.errors import ConfigurationError
from handlers.settings import SHIPPED_CATALOG, load_settings

D = Decimal


def shipped_data() -> dict[str, Any]:
    data = json.loads(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def instrument_data(symbol: str) -> dict[str, Any]:
    for item in shipped_data()["instruments"]:
        if item["symbol"] == symbol:
            return copy.deepcopy(item)
    raise KeyError(symbol)


def catalog_of(*items: dict[str, Any]) -> dict[str, Any]:
    return {"instruments": list(items)}


def test_shipped_catalog_loads(catalog: Catalog) -> None:
    assert {"BTCUSDT", "ETHUSDT", "BTCUSD_PERP"} <= set(catalog.instruments)
    assert {"USDT", "BTC"} <= catalog.settle_assets
    assert catalog.get("NOPE") is None


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_linear_usdt_instruments(catalog: Catalog, symbol: str) -> None:
    inst = catalog.get(symbol)
    assert inst is not None
    assert inst.contract_type == "LINEAR"
    assert not inst.inverse
    assert inst.quote_asset == "USDT"
    assert inst.settle_asset == "USDT"
    assert inst.contract_size == 1
    assert inst.brackets[0].notional_floor == 0
    assert inst.brackets[0].maint_amount == 0


def test_inverse_btcusd_perp(catalog: Catalog) -> None:
    inst = catalog.get("BTCUSD_PERP")
    assert inst is not None
    assert inst.contract_type == "INVERSE"
    assert inst.inverse
    assert inst.base_asset == "BTC"
    assert inst.settle_asset == "BTC"
    assert inst.contract_size == D(100)
    # 100 contracts (10,000 USD) at 50,000 are 0.2 BTC of notional
    assert inst.notional(D(100), D(50000)) == D("0.2")
    assert inst.notional(D(-100), D(50000)) == D("0.2")


def test_linear_notional_and_pnl(catalog: Catalog) -> None:
    inst = catalog.get("BTCUSDT")
    assert inst is not None
    assert inst.notional(D("-0.1"), D(60000)) == D(6000)
    assert inst.pnl(D("0.1"), D(60000), D(61000)) == D(100)
    assert inst.pnl(D("-0.1"), D(60000), D(61000)) == D(-100)


def test_inverse_pnl(catalog: Catalog) -> None:
    inst = catalog.get("BTCUSD_PERP")
    assert inst is not None
    # contracts × 100 × (1/entry − 1/exit)
    with localcontext(MONEY):
        expected = D(100) * 100 * (D(1) / 50000 - D(1) / 40000)
    assert inst.pnl(D(100), D(50000), D(40000)) == expected
    assert inst.pnl(D(100), D(50000), D(40000)) == D("-0.05")


def boundaries(catalog: Catalog) -> list[tuple[str, int]]:
    return [
        (symbol, n)
        for symbol, inst in sorted(catalog.instruments.items())
        for n in range(1, len(inst.brackets))
    ]


SHIPPED = load_catalog(SHIPPED_CATALOG)


@pytest.mark.parametrize(("symbol", "index"), boundaries(SHIPPED))
def test_maintenance_margin_is_continuous_at_every_boundary(symbol: str, index: int) -> None:
    inst = SHIPPED.instruments[symbol]
    prev, cur = inst.brackets[index - 1], inst.brackets[index]
    floor = cur.notional_floor
    assert floor == prev.notional_cap
    with localcontext(MONEY):
        below = floor * prev.maint_margin_ratio - prev.maint_amount
        at = floor * cur.maint_margin_ratio - cur.maint_amount
    assert below == at
    # and maint_margin itself agrees just below, at and just above the floor
    with localcontext(MONEY):
        just_below = floor - D("1e-30")
    assert just_below < floor
    assert inst.bracket_for(just_below) == prev
    assert inst.bracket_for(floor) == cur
    assert abs(maint_margin(inst, just_below) - at) < D("1e-20")
    assert maint_margin(inst, floor) == at


@pytest.mark.parametrize("symbol", sorted(SHIPPED.instruments))
def test_brackets_ordered_and_tightening(symbol: str) -> None:
    brackets = SHIPPED.instruments[symbol].brackets
    assert [b.bracket for b in brackets] == list(range(1, len(brackets) + 1))
    for prev, cur in itertools.pairwise(brackets):
        assert cur.notional_floor == prev.notional_cap
        assert cur.maint_margin_ratio >= prev.maint_margin_ratio
        assert cur.max_leverage <= prev.max_leverage


def test_bracket_for(catalog: Catalog) -> None:
    inst = catalog.get("BTCUSDT")
    assert inst is not None
    assert inst.bracket_for(D(0)).bracket == 1
    assert inst.bracket_for(D("49999.99")).bracket == 1
    assert inst.bracket_for(D(50000)).bracket == 2
    assert inst.bracket_for(D(10) ** 12).bracket == len(inst.brackets)  # above the last cap


def test_shipped_catalog_round_trips_through_parse() -> None:
    assert parse_catalog(shipped_data()).instruments == SHIPPED.instruments


# --- refusals --------------------------------------------------------------------------


def brackets_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    brackets = item["brackets"]
    assert isinstance(brackets, list)
    return brackets


def swapped(item: dict[str, Any]) -> None:
    b = brackets_of(item)
    b[1], b[2] = b[2], b[1]


def renumbered_unordered(item: dict[str, Any]) -> None:
    b = brackets_of(item)
    b[1], b[2] = b[2], b[1]
    b[1]["bracket"], b[2]["bracket"] = 2, 3


def gap(item: dict[str, Any]) -> None:
    brackets_of(item)[1]["notionalFloor"] = "50001"
    brackets_of(item)[1]["maintAmount"] = "50.001"  # still continuous at its own floor


def overlap(item: dict[str, Any]) -> None:
    brackets_of(item)[0]["notionalCap"] = "60000"


def discontinuous(item: dict[str, Any]) -> None:
    brackets_of(item)[2]["maintAmount"] = "951"


def first_floor_not_zero(item: dict[str, Any]) -> None:
    brackets_of(item)[0]["notionalFloor"] = "10"


def first_cum_not_zero(item: dict[str, Any]) -> None:
    brackets_of(item)[0]["maintAmount"] = "1"


def loosening_ratio(item: dict[str, Any]) -> None:
    b = brackets_of(item)
    b[1]["maintMarginRatio"] = "0.003"
    b[1]["maintAmount"] = "-50"


def no_brackets(item: dict[str, Any]) -> None:
    item["brackets"] = []


def bad_contract_type(item: dict[str, Any]) -> None:
    item["contractType"] = "linear"


def quanto(item: dict[str, Any]) -> None:
    item["contractType"] = "QUANTO"


def linear_not_settled_in_quote(item: dict[str, Any]) -> None:
    item["settleAsset"] = "BTC"


def max_leverage_above_first_bracket(item: dict[str, Any]) -> None:
    brackets_of(item)[0]["maxLeverage"] = 100
    brackets_of(item)[1]["maxLeverage"] = 75


def decimal_as_number(item: dict[str, Any]) -> None:
    item["tickSize"] = 0.1


def zero_tick(item: dict[str, Any]) -> None:
    item["tickSize"] = "0"


def missing_symbol(item: dict[str, Any]) -> None:
    del item["symbol"]


@pytest.mark.parametrize(
    ("breakage", "match"),
    [
        (swapped, "numbered"),
        (renumbered_unordered, "previous cap"),
        (gap, "previous cap"),
        (overlap, "previous cap"),
        (discontinuous, "not continuous"),
        (first_floor_not_zero, "starts at 0"),
        (first_cum_not_zero, "starts at 0"),
        (loosening_ratio, "loosen"),
        (no_brackets, "brackets"),
        (bad_contract_type, "contractType"),
        (quanto, "contractType"),
        (linear_not_settled_in_quote, "quote asset"),
        (max_leverage_above_first_bracket, "maxLeverage"),
        (decimal_as_number, "tickSize"),
        (zero_tick, "tick_size"),
        (missing_symbol, "symbol"),
    ],
)
def test_broken_linear_instrument_is_refused(breakage: Any, match: str) -> None:
    item = instrument_data("BTCUSDT")
    breakage(item)
    with pytest.raises(ConfigurationError, match=match):
        parse_catalog(catalog_of(item, instrument_data("ETHUSDT")))


def test_inverse_not_settled_in_base_is_refused() -> None:
    item = instrument_data("BTCUSD_PERP")
    item["settleAsset"] = "USD"
    with pytest.raises(ConfigurationError, match="base asset"):
        parse_catalog(catalog_of(item))


def test_discontinuous_inverse_brackets_are_refused() -> None:
    item = instrument_data("BTCUSD_PERP")
    brackets_of(item)[3]["maintAmount"] = "0.356"
    with pytest.raises(ConfigurationError, match="not continuous"):
        parse_catalog(catalog_of(item))


def test_duplicate_symbol_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        parse_catalog(catalog_of(instrument_data("BTCUSDT"), instrument_data("BTCUSDT")))


@pytest.mark.parametrize("data", [[], {}, {"instruments": []}, {"instruments": "x"}, None])
def test_wrong_catalog_shape_is_refused(data: Any) -> None:
    with pytest.raises(ConfigurationError):
        parse_catalog(data)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_catalog(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigurationError):
        load_catalog(bad)


# --- INSTRUMENTS_FILE ------------------------------------------------------------------


def test_instruments_file_setting_replaces_the_shipped_catalog(tmp_path: Path) -> None:
    item = instrument_data("ETHUSDT")
    item["symbol"] = "ETHUSDT_TEST"
    path = tmp_path / "instruments.json"
    path.write_text(json.dumps(catalog_of(item)), encoding="utf-8")
    settings = load_settings({"INSTRUMENTS_FILE": str(path)})
    assert settings.instruments_file == path
    catalog = load_catalog(settings.instruments_file)
    assert set(catalog.instruments) == {"ETHUSDT_TEST"}
    assert catalog.get("BTCUSDT") is None


def test_default_settings_use_the_shipped_catalog() -> None:
    assert load_settings({}).instruments_file == SHIPPED_CATALOG
    assert load_settings({"INSTRUMENTS_FILE": "  "}).instruments_file == SHIPPED_CATALOG


def test_instruments_file_with_a_broken_catalog_is_refused(tmp_path: Path) -> None:
    item = instrument_data("BTCUSDT")
    discontinuous(item)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(catalog_of(item)), encoding="utf-8")
    with pytest.raises(ConfigurationError):
        load_catalog(load_settings({"INSTRUMENTS_FILE": str(path)}).instruments_file)
