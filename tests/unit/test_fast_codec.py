"""The account document's fast codec gives exactly what the reference mapping gives.

Documents come from the app's own flows over the fakes (linear and inverse symbols, cross,
isolated and hedge positions, marks that raise alerts and leave pending entries), and
copies of some of them given open orders (on every settle asset, and on a symbol the
catalog no longer holds), trading states and order times; each as written and as version
1; each is read both ways (the same typed values, compared by
``repr`` so that a Decimal's exponent counts), re-valued, banded and written both ways
(the same JSON text). Broken copies of them are refused with the same error, or read the
same. The remembered conversions are held to the functions they stand for, and the band
search that stops at a fixed point to the one that runs every round.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache, partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.adapters.mapping.account import (
    account_from_document,
    account_to_document,
    reference_account_from_document,
    reference_account_to_document,
)
from handlers.adapters.mapping.fast_account import read_account
from handlers.adapters.mapping.values import (
    dec,
    decimal_text,
    figure_text,
    stamp_text,
    stored_decimal,
    stored_time,
    ts,
)
from handlers.core import bands as bands_module
from handlers.core.bands import band_box
from handlers.core.contracts import format_timestamp
from handlers.core.decimals import format_decimal, m_div, m_mul
from handlers.core.documents import AccountDoc
from handlers.core.orders import OpenOrder
from handlers.core.revalue import revalue_at
from handlers.core.valuation import value
from handlers.errors import UnreadableDocument
from handlers.flows import Deps
from tests.unit.fakes import FakeClock, FakeSink, FakeStore
from tests.unit.flowkit import event, make_deps, marks, trade
from tests.unit.test_bands_soundness import CATALOG, PRICES, SYMBOLS, _grid, _inst, accounts

WHEN = datetime(2024, 10, 1, 13, tzinfo=UTC)
_SYMBOLS = {"BTCUSDT": "60000", "ETHUSDT": "2500", "BTCUSD_PERP": "50000"}


def _mark(deps: Deps, symbol: str, price: str, minute: int) -> None:
    stamp = f"2024-10-01T12:{minute:02d}:00Z"
    marks(deps, event("mark_btcusdt", symbol=symbol, markPrice=price, timestamp=stamp))


def _fill(rng: random.Random, account: str, n: int, hedge: bool) -> dict[str, Any]:
    symbol = rng.choice(list(_SYMBOLS))
    side = rng.choice(["BUY", "SELL"])
    fill: dict[str, Any] = {
        "accountId": account,
        "tradeId": f"{account}-t{n}",
        "symbol": symbol,
        "side": side,
        "price": str(Decimal(_SYMBOLS[symbol]) * Decimal(rng.choice(["0.97", "1", "1.0125"]))),
        "quantity": rng.choice(["1", "3", "10"])
        if symbol == "BTCUSD_PERP"
        else rng.choice(["0.1", "0.25", "1.5"]),
        "leverage": rng.choice([2, 10, 20, 50]),
        "marginMode": rng.choice(["CROSS", "ISOLATED"]),
        "fee": rng.choice(["0", "0.37"]),
    }
    if hedge:
        fill["positionSide"] = "LONG" if side == "BUY" else "SHORT"
    return event("fill_btcusdt_long", **fill)


@cache
def scenario() -> tuple[Deps, tuple[dict[str, Any], ...]]:
    """The deps of a run of the flows and every account document it wrote, in turn."""
    store, sink, clock = FakeStore(), FakeSink(), FakeClock()
    deps = make_deps(store, sink, clock)
    rng = random.Random(20241001)
    minute = 0
    for symbol in ("BTCUSDT", "BTCUSD_PERP"):  # ETHUSDT goes unmarked for a while
        _mark(deps, symbol, _SYMBOLS[symbol], minute)
    seen: list[dict[str, Any]] = []
    for a in range(24):
        account, hedge = f"fc{a:03d}", a % 4 == 3
        for asset, amount in (("USDT", str(300 + 97 * a)), ("BTC", "0.05")):
            deposit = {"accountId": account, "transferId": f"{account}-{asset}", "asset": asset}
            trade(deps, event("transfer_deposit_usdt", **deposit, amount=amount))
        for n in range(rng.randint(1, 4)):
            trade(deps, _fill(rng, account, n, hedge))
            seen.append(json.loads(json.dumps(store.account(account))))
        if a % 3 == 0:  # marks that move far: alerts, pending entries with records
            minute += 1
            symbol = rng.choice(list(_SYMBOLS))
            factor = Decimal(rng.choice(["0.8", "0.93", "1.07", "1.25"]))
            _mark(deps, symbol, str(Decimal(_SYMBOLS[symbol]) * factor), minute)
    for n in range(24):
        doc = store.account(f"fc{n:03d}")
        if doc is not None:
            seen.append(json.loads(json.dumps(doc)))
    return deps, tuple(seen)


#: Symbols open orders are drawn on: BTCUSD_PERP settles in BTC, GONEUSDT is in no catalog.
_ORDER_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BTCUSD_PERP", "GONEUSDT")
_RESERVED = ["0", "462.66", "469.2", "0.000123456789012345678", "1E+3", "12.5000", "0.5"]


def _open_order(rng: random.Random, account: str, n: int) -> OpenOrder:
    side = rng.choice(["BUY", "SELL"])
    hedge = rng.random() < 0.3
    quantity = Decimal(rng.choice(["0.1", "1.5", "3", "0.001"]))
    return OpenOrder(
        order_id=f"{account}-o{n}",
        symbol=rng.choice(_ORDER_SYMBOLS),
        side=side,  # type: ignore[arg-type]
        position_side=("LONG" if side == "BUY" else "SHORT") if hedge else "BOTH",
        margin_mode=rng.choice(["CROSS", "ISOLATED"]),  # type: ignore[arg-type]
        order_type=rng.choice(["LIMIT", "MARKET"]),  # type: ignore[arg-type]
        price=Decimal(rng.choice(["60000", "2500.55", "50000.1", "9253.3"])),
        leverage=rng.choice([1, 20, 125]),
        quantity=quantity,
        opening_quantity=rng.choice([quantity, Decimal(0), quantity / 2]),
        reserved=Decimal(rng.choice(_RESERVED)),
        submitted_at=WHEN + timedelta(milliseconds=rng.randint(0, 10_000)),
    )


def with_orders(account: AccountDoc, rng: random.Random, i: int) -> AccountDoc:
    """``account`` holding open orders, a trading state and order times (``i`` picks which
    of the less usual cases it shows: no trading-state time, no orders, no times)."""
    orders = tuple(_open_order(rng, account.account_id, n) for n in range(i % 5))
    times = sorted(WHEN + timedelta(milliseconds=rng.randint(0, 3000)) for _ in range(i % 4))
    return replace(
        account,
        trading_state=("ACTIVE", "REDUCING", "HALTED")[i % 3],
        trading_state_at=None if i % 4 == 1 else WHEN - timedelta(seconds=i, milliseconds=7),
        open_orders=orders,
        order_times=tuple(times),
        updated_at=account.updated_at or WHEN,
    )


@cache
def order_documents() -> tuple[dict[str, Any], ...]:
    """Some of the scenario's accounts given open orders, trading states and order times,
    written (by the reference) as the store keeps them."""
    deps, docs = scenario()
    catalog, ratio = deps.catalog, deps.settings.margin_call_ratio
    rng = random.Random(20261203)
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(docs[::2]):
        account = with_orders(reference_account_from_document(doc), rng, i)
        written = reference_account_to_document(account, value(account.ledger, catalog, ratio))
        out.append(json.loads(json.dumps(written)))
    return tuple(out)


_ORDER_KEYS = ("tradingState", "tradingStateAt", "openOrders", "orderTimes")


def version_1(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as version 1 wrote it (no valuation time, no bands, no orders)."""
    old = {
        k: v
        for k, v in doc.items()
        if k not in ("valuedAt", "riskBands", "bandsVersion", *_ORDER_KEYS)
    }
    old["wallets"] = {
        asset: {k: v for k, v in w.items() if k != "openOrderMargin"}
        for asset, w in doc["wallets"].items()
    }
    old["schemaVersion"] = 1
    return old


def all_documents() -> tuple[dict[str, Any], ...]:
    return scenario()[1] + order_documents()


def documents() -> Iterator[dict[str, Any]]:
    for doc in all_documents():
        yield doc
        yield version_1(doc)


def outcome(read: Any, doc: Any) -> tuple[str, str]:
    """What reading ``doc`` gives: the value, or the error it raises."""
    try:
        return ("ok", repr(read(doc)))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def test_the_scenario_covers_what_it_should() -> None:
    docs = scenario()[1]
    positions = [p for d in docs for p in d["positions"]]
    assert {p["symbol"] for p in positions} == set(_SYMBOLS)
    assert {p["positionSide"] for p in positions} >= {"BOTH", "LONG", "SHORT"}
    assert {p["marginMode"] for p in positions} == {"CROSS", "ISOLATED"}
    entries = [e for d in docs for e in d["pending"]]
    assert any("record" in e for e in entries) and any("recordId" in e for e in entries)
    assert any(p["markPrice"] is None for p in positions)


def test_the_order_documents_cover_what_they_should() -> None:
    docs = order_documents()
    assert {d["tradingState"] for d in docs} == {"ACTIVE", "REDUCING", "HALTED"}
    assert any(d["tradingStateAt"] is None for d in docs)
    assert any(d["tradingStateAt"] is not None for d in docs)
    assert any(not d["openOrders"] for d in docs) and any(not d["orderTimes"] for d in docs)
    orders = [o for d in docs for o in d["openOrders"]]
    assert {o["symbol"] for o in orders} == set(_ORDER_SYMBOLS)
    assert {o["positionSide"] for o in orders} == {"BOTH", "LONG", "SHORT"}
    assert {o["orderType"] for o in orders} == {"LIMIT", "MARKET"}
    held = {a for d in docs for a, w in d["wallets"].items() if w["openOrderMargin"] != "0"}
    assert held == {"USDT", "BTC"}
    assert {"1000", "12.5", "0.000123456789012346"} <= {o["reserved"] for o in orders}


def test_reads_match_the_reference() -> None:
    fast = 0
    for doc in documents():
        reference = repr(reference_account_from_document(doc))
        assert repr(account_from_document(doc)) == reference
        fast += read_account(doc) is not None
    assert fast == 2 * len(all_documents())  # every document the app writes takes it


def test_order_fields_read_back_as_written() -> None:
    docs = scenario()[1]
    rng = random.Random(20261203)  # order_documents' draws, in turn
    for i, (doc, written) in enumerate(zip(docs[::2], order_documents(), strict=True)):
        expected = with_orders(reference_account_from_document(doc), rng, i)
        for read in (account_from_document, reference_account_from_document):
            back = read(written)
            assert back.trading_state == expected.trading_state
            assert back.trading_state_at == expected.trading_state_at
            assert back.order_times == expected.order_times
            assert len(back.open_orders) == len(expected.open_orders)
            for got, want in zip(back.open_orders, expected.open_orders, strict=True):
                # decimals come back as written: rounded to 18 places (a reservation of
                # 21 here) and without trailing zeros
                assert replace(got, reserved=want.reserved) == want
                assert format_decimal(got.reserved) == format_decimal(want.reserved)
        assert read_account(version_1(written)) is not None
        old = account_from_document(version_1(written))
        assert (old.trading_state, old.trading_state_at) == ("ACTIVE", None)
        assert (old.open_orders, old.order_times) == ((), ())


def test_writes_match_the_reference() -> None:
    deps, _ = scenario()
    catalog, ratio = deps.catalog, deps.settings.margin_call_ratio
    width = Decimal("0.05")
    for doc in documents():
        account = reference_account_from_document(doc)
        stamped = replace(account, updated_at=account.updated_at or WHEN)
        now = value(account.ledger, catalog, ratio)
        assert json.dumps(account_to_document(stamped, now)) == json.dumps(
            reference_account_to_document(stamped, now)
        )
        for position in account.ledger.positions:
            for factor in ("0.9", "1.0001", "1.3"):
                price = m_mul(position.last_fill_price, Decimal(factor))
                at = [(position.symbol, price, WHEN)]
                ledger, _, after = revalue_at(account.ledger, at, catalog, ratio)
                bands = band_box(ledger, catalog, ratio, width)
                new = replace(account, ledger=ledger, updated_at=WHEN, bands=bands)
                written = account_to_document(new, after)
                assert json.dumps(written) == json.dumps(reference_account_to_document(new, after))


_ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    1,
    2.5,
    "",
    "x",
    "1e3",
    "-0",
    "0.10",
    "NORMAL",
    "2024-10-01T12:00:00Z",
    [],
    {},
    ["1", "2"],
    ["1", "2", "3"],
    {"a": 1},
]


def _breakages(
    doc: dict[str, Any], rng: random.Random, under: tuple[str, ...] = (), count: int = 40
) -> Iterator[dict[str, Any]]:
    """Copies of ``doc`` with one value replaced or one key removed, anywhere in it (or
    under its top-level keys ``under``), at ``count`` places."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            paths.append((*path, key))
            if isinstance(child, dict | list):
                walk(child, (*path, key))

    walk(doc, ())
    if under:
        paths = [p for p in paths if p[0] in under or p[-1] == "openOrderMargin"]
    for path in rng.sample(paths, min(len(paths), count)):
        for change in ("delete", *rng.sample(_ODD_VALUES, 3)):
            broken = copy.deepcopy(doc)
            parent = broken
            for key in path[:-1]:
                parent = parent[key]
            if change == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = change
            yield broken


def test_broken_documents_meet_the_reference() -> None:
    rng = random.Random(7)
    docs = list(documents())
    for doc in rng.sample(docs, 30):
        for broken in _breakages(doc, rng):
            expected = outcome(reference_account_from_document, broken)
            assert outcome(account_from_document, broken) == expected


def test_broken_order_fields_meet_the_reference() -> None:
    rng = random.Random(11)
    for doc in order_documents():
        for broken in _breakages(doc, rng, _ORDER_KEYS, count=25):
            expected = outcome(reference_account_from_document, broken)
            assert outcome(account_from_document, broken) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"tradingState": None},
        {"tradingState": "active"},
        {"tradingState": "LIQUIDATION"},
        {"tradingStateAt": "2024-10-01"},
        {"tradingStateAt": 0},
        {"openOrders": None},
        {"openOrders": {}},
        {"openOrders": [None]},
        {"openOrders": [[]]},
        {"orderTimes": None},
        {"orderTimes": "2024-10-01T12:00:00Z"},
        {"orderTimes": ["2024-10-01T12:00:00+02:00", None]},
    ],
)
def test_unusual_order_values_meet_the_reference(change: dict[str, Any]) -> None:
    doc = {**order_documents()[-1], **change}
    assert read_account(doc) is None
    assert outcome(account_from_document, doc) == outcome(reference_account_from_document, doc)
    with pytest.raises(UnreadableDocument):
        account_from_document(doc)


@pytest.mark.parametrize(
    "change",
    [
        {"leverage": True},
        {"leverage": "20"},
        {"leverage": 20.0},
        {"orderId": 7},
        {"symbol": None},
        {"side": "buy"},
        {"positionSide": "BOTH "},
        {"marginMode": None},
        {"orderType": "STOP"},
        {"price": 60000},
        {"price": "6e4x"},
        {"quantity": None},
        {"openingQuantity": "NaN"},
        {"reserved": ""},
        {"submittedAt": "yesterday"},
    ],
)
def test_unusual_open_orders_meet_the_reference(change: dict[str, Any]) -> None:
    base = next(d for d in order_documents() if d["openOrders"])
    doc = copy.deepcopy(base)
    doc["openOrders"][-1].update(change)
    assert read_account(doc) is None
    with pytest.raises(UnreadableDocument):
        reference_account_from_document(doc)
    assert outcome(account_from_document, doc) == outcome(reference_account_from_document, doc)
    missing = copy.deepcopy(base)
    del missing["openOrders"][0][next(iter(change))]
    assert read_account(missing) is None
    assert outcome(account_from_document, missing) == outcome(
        reference_account_from_document, missing
    )


@pytest.mark.parametrize(
    "change",
    [
        {"schemaVersion": True},
        {"schemaVersion": 3},
        {"type": "trade"},
        {"version": True},
        {"riskBands": []},
        {"riskBands": None},
        {"recentEventIds": "abc"},
        {"accountId": None},
        {"accountId": 7},
        {"recentIdsEvicted": "yes"},
    ],
)
def test_unusual_top_level_values_meet_the_reference(change: dict[str, Any]) -> None:
    doc = {**scenario()[1][-1], **change}
    assert outcome(account_from_document, doc) == outcome(reference_account_from_document, doc)


# --- the remembered conversions ------------------------------------------------------------

_DECIMALS = st.decimals(allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None)
@given(_DECIMALS, st.integers(-30, 30))
def test_figure_text_is_format_decimal(number: Decimal, shift: int) -> None:
    for x in (number, number.scaleb(shift), m_div(number, Decimal(7))):
        assert figure_text(x) == format_decimal(x)
        assert decimal_text(x) == format_decimal(x)


def test_figure_text_at_its_edges() -> None:
    edges = ["0", "-0", "0E-40", "5E-19", "-5E-19", "1.5E-18", "2.5E-18", "1E-999999"]
    edges += ["0.1000000000000000005", "9.99999E+40", "1E+41", "1E+999", "-123.4500"]
    for text in edges:
        assert figure_text(Decimal(text)) == format_decimal(Decimal(text)), text
    for bad in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match="cannot be written"):
            figure_text(Decimal(bad))
        with pytest.raises(ValueError, match="cannot be written"):
            decimal_text(Decimal(bad))


@settings(max_examples=300, deadline=None)
@given(st.one_of(_DECIMALS.map(str), st.text("0123456789.-eE+", max_size=12)))
def test_stored_decimal_is_dec(text: str) -> None:
    try:
        expected: Decimal | None = dec(text, "x")
    except UnreadableDocument:
        expected = None
    for _ in (1, 2):  # remembered the second time
        found = stored_decimal(text)
        assert repr(found) == repr(expected)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(timezones=st.just(UTC)), st.sampled_from(["Z", "+00:00", "+05:30", "-11:00"]))
def test_stored_time_and_stamp_text_are_ts_and_format(moment: datetime, zone: str) -> None:
    text = format_timestamp(moment)[:-1] + zone
    try:
        expected: datetime | None = ts(text, "x")
    except UnreadableDocument:
        expected = None
    for _ in (1, 2):
        assert stored_time(text) == expected
    assert stamp_text(moment) == format_timestamp(moment)
    other = moment.replace(tzinfo=None).replace(tzinfo=timezone(timedelta(hours=3)))
    assert stamp_text(other) == format_timestamp(other)
    assert stored_time(1) is None and stored_time(None) is None


# --- the band search's fixed point -------------------------------------------------------


@st.composite
def _banded(draw: st.DrawFn) -> tuple[Any, dict[str, Decimal], Decimal, Decimal]:
    prices = {s: _grid(Decimal(draw(st.integers(*PRICES[s]))), _inst(s).tick_size) for s in SYMBOLS}
    ledger = draw(accounts(prices))
    width = draw(st.sampled_from([Decimal("0.01"), Decimal("0.05"), Decimal("0.10")]))
    ratio = draw(st.sampled_from([Decimal("0.5"), Decimal("0.8"), Decimal("1")]))
    return ledger, prices, width, ratio


@settings(max_examples=300, deadline=None)
@given(_banded())
def test_the_search_stopping_at_a_fixed_point_finds_the_same_box(
    case: tuple[Any, dict[str, Decimal], Decimal, Decimal],
) -> None:
    ledger, prices, width, ratio = case
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bands_module, "_search", partial(bands_module._search, settle=False))
        every_round = band_box(ledger, CATALOG, ratio, width)
    assert repr(band_box(ledger, CATALOG, ratio, width)) == repr(every_round)
    for symbol, price in prices.items():  # and at marks away from the entries
        moved = revalue_at(ledger, [(symbol, price * Decimal("1.03"), WHEN)], CATALOG, ratio)[0]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(bands_module, "_search", partial(bands_module._search, settle=False))
            every_round = band_box(moved, CATALOG, ratio, width)
        assert repr(band_box(moved, CATALOG, ratio, width)) == repr(every_round)
