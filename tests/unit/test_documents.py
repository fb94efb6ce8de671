"""Account documents: what is written reads back; what cannot be read is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from handlers.adapters.mapping import account_from_document, account_to_document
from handlers.adapters.mapping.account import (
    reference_account_from_document,
    reference_account_to_document,
)
from handlers.core.catalog import Catalog, Instrument
from handlers.core.decimals import format_decimal
from handlers.core.documents import ACCOUNT_ID, MAX_RECENT_IDS, AccountDoc, Entry, EventRecord
from handlers.core.orders import OpenOrder
from handlers.core.state import Ledger, apply_fill
from handlers.errors import UnreadableDocument

from .builders import T0, D, deposit, fill, marked, valued


def sample(catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument) -> AccountDoc:
    ledger = deposit(deposit(Ledger(), "1000"), "0.5", "BTC")
    ledger = apply_fill(ledger, fill(quantity="0.1", price="60000"), btcusdt, None)
    iso = fill(symbol="ETHUSDT", side="SELL", quantity="1", price="2500", marginMode="ISOLATED")
    ledger = marked(apply_fill(ledger, iso, ethusdt, None), "ETHUSDT", "2600.5")
    record = EventRecord("T-1", "acct-1", "transfer", "TRANSFER", {}, (), T0)
    entry = Entry("T-1", "T-1", (), T0, record)
    account = AccountDoc("acct-1", ledger).with_event("T-0", None).with_event("T-1", entry)
    return account


def written(account: AccountDoc, catalog: Catalog) -> dict[str, Any]:
    doc = account_to_document(replace(account, updated_at=T0), valued(account.ledger, catalog))
    out = json.loads(json.dumps(doc))  # what the store keeps
    assert isinstance(out, dict)
    return out


def test_round_trip(catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument) -> None:
    account = sample(catalog, btcusdt, ethusdt)
    doc = written(account, catalog)
    assert doc["id"] == ACCOUNT_ID
    assert doc["accountId"] == "acct-1"
    assert (doc["type"], doc["schemaVersion"]) == ("account", 2)
    back = account_from_document({**doc, "_etag": '"e1"'})
    assert back.ledger == account.ledger
    assert back.recent_ids == ("T-0", "T-1")
    assert back.pending == account.pending
    assert back.etag == '"e1"'


def test_written_numbers_are_decimal_strings(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument
) -> None:
    doc = written(sample(catalog, btcusdt, ethusdt), catalog)
    assert set(doc["wallets"]) == {"BTC", "USDT"}
    usdt = doc["wallets"]["USDT"]
    for key in (
        "walletBalance",
        "crossWalletBalance",
        "marginBalance",
        "availableBalance",
        "totalInitialMargin",
        "totalMaintMargin",
        "marginRatio",
    ):
        assert isinstance(usdt[key], str), key
        D(usdt[key])
    eth = next(p for p in doc["positions"] if p["symbol"] == "ETHUSDT")
    assert eth["markPrice"] == "2600.5"
    assert eth["isolatedMargin"] == "250"  # 2500 / 10
    assert eth["quantity"] == "-1"
    assert eth["updatedAt"] == "2024-10-01T12:00:00.000Z"
    btc = next(p for p in doc["positions"] if p["symbol"] == "BTCUSDT")
    assert btc["markPrice"] is None  # the fill price stands in; the position says so
    assert btc["markSource"] == "FILL_PRICE"
    for p in doc["positions"]:
        for key in ("quantity", "entryPrice", "notional", "initialMargin", "maintMargin"):
            assert "E" not in p[key].upper()


def breakages() -> list[tuple[str, Any]]:
    return [
        ("schemaVersion", 3),
        ("schemaVersion", "1"),
        ("type", "trade"),
        ("wallets", "broken"),
        ("positions", None),
        ("recentEventIds", None),
        ("pending", [{"record": {}}]),
        ("riskBands", {"BTCUSDT": ["59000"]}),  # a band with one end
    ]


@pytest.mark.parametrize(("key", "value"), breakages())
def test_unreadable_documents_are_refused(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument, key: str, value: Any
) -> None:
    doc = written(sample(catalog, btcusdt, ethusdt), catalog)
    doc[key] = value
    with pytest.raises(UnreadableDocument):
        account_from_document(doc)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", 0.1),
        ("quantity", "0.1.1"),
        ("entryPrice", None),
        ("riskState", "PANIC"),
        ("updatedAt", "yesterday"),
        ("markPrice", 5),
    ],
)
def test_unreadable_positions_are_refused(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument, field: str, value: Any
) -> None:
    doc = written(sample(catalog, btcusdt, ethusdt), catalog)
    doc["positions"][0][field] = value
    with pytest.raises(UnreadableDocument):
        account_from_document(doc)


def test_missing_key_is_refused(catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument) -> None:
    doc = written(sample(catalog, btcusdt, ethusdt), catalog)
    del doc["wallets"]["USDT"]["walletBalance"]
    with pytest.raises(UnreadableDocument):
        account_from_document(doc)


def test_recent_ids_keep_pending_ones_and_evict_the_oldest() -> None:
    record = EventRecord("keep", "acct-1", "transfer", "TRANSFER", {}, (), T0)
    account = AccountDoc("acct-1").with_event("keep", Entry("keep", "keep", (), T0, record))
    for i in range(MAX_RECENT_IDS + 3):
        account = account.with_event(f"E{i}", None)
    assert len(account.recent_ids) == MAX_RECENT_IDS
    assert account.recent_ids[0] == "keep"  # pending: its record does not exist yet
    assert "E0" not in account.recent_ids
    assert account.evicted
    assert account.without({"keep"}).pending == ()


# --- v2 orders: trading state, open orders, order times, openOrderMargin -----------------


def _open(order_id: str, symbol: str, reserved: str, **changes: Any) -> OpenOrder:
    terms: dict[str, Any] = {
        "order_id": order_id,
        "symbol": symbol,
        "side": "BUY",
        "position_side": "BOTH",
        "margin_mode": "CROSS",
        "order_type": "LIMIT",
        "price": D("9253.3"),
        "leverage": 20,
        "quantity": D("1"),
        "opening_quantity": D("1"),
        "reserved": D(reserved),
        "submitted_at": T0 + timedelta(milliseconds=250),
    }
    return OpenOrder(**(terms | changes))


def with_orders(account: AccountDoc) -> AccountDoc:
    return replace(
        account,
        trading_state="REDUCING",
        trading_state_at=T0 - timedelta(minutes=5),
        open_orders=(
            _open("O-1", "BTCUSDT", "462.66"),
            _open("O-2", "ETHUSDT", "469.2", side="SELL", order_type="MARKET", price=D("2599")),
            _open("O-3", "BTCUSD_PERP", "0.0012", quantity=D("3"), opening_quantity=D("2")),
            _open("O-4", "GONEUSDT", "10", position_side="LONG", margin_mode="ISOLATED"),
        ),
        order_times=(T0, T0 + timedelta(milliseconds=1), T0 + timedelta(seconds=1)),
    )


def test_order_fields_round_trip(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument
) -> None:
    account = with_orders(sample(catalog, btcusdt, ethusdt))
    doc = written(account, catalog)
    assert (doc["tradingState"], doc["tradingStateAt"]) == ("REDUCING", "2024-10-01T11:55:00.000Z")
    assert doc["orderTimes"] == [
        "2024-10-01T12:00:00.000Z",
        "2024-10-01T12:00:00.001Z",
        "2024-10-01T12:00:01.000Z",
    ]
    assert doc["openOrders"][2] == {
        "orderId": "O-3",
        "symbol": "BTCUSD_PERP",
        "side": "BUY",
        "positionSide": "BOTH",
        "marginMode": "CROSS",
        "orderType": "LIMIT",
        "price": "9253.3",
        "leverage": 20,
        "quantity": "3",
        "openingQuantity": "2",
        "reserved": "0.0012",
        "submittedAt": "2024-10-01T12:00:00.250Z",
    }
    for read in (account_from_document, reference_account_from_document):
        back = read(doc)
        assert back.trading_state == "REDUCING"
        assert back.trading_state_at == account.trading_state_at
        assert back.open_orders == account.open_orders
        assert back.order_times == account.order_times
        assert back.ledger == account.ledger


def test_open_order_margin_is_held_out_of_available_balance(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument
) -> None:
    account = with_orders(sample(catalog, btcusdt, ethusdt))
    gross = valued(account.ledger, catalog).wallets
    doc, plain = written(account, catalog), written(sample(catalog, btcusdt, ethusdt), catalog)
    usdt, btc = doc["wallets"]["USDT"], doc["wallets"]["BTC"]
    # USDT: O-1 and O-2 (BTCUSDT, ETHUSDT); BTC: O-3 (BTCUSD_PERP); GONEUSDT: nowhere
    assert (usdt["openOrderMargin"], btc["openOrderMargin"]) == ("931.86", "0.0012")
    assert D(usdt["availableBalance"]) == gross["USDT"].available_balance - D("931.86")
    assert D(btc["availableBalance"]) == gross["BTC"].available_balance - D("0.0012")
    for key in ("walletBalance", "crossWalletBalance", "marginBalance", "totalInitialMargin"):
        assert usdt[key] == plain["wallets"]["USDT"][key]  # only the available part moves
    assert {w["openOrderMargin"] for w in plain["wallets"].values()} == {"0"}
    assert plain["wallets"]["USDT"]["availableBalance"] == format_decimal(
        gross["USDT"].available_balance
    )
    assert (plain["tradingState"], plain["tradingStateAt"]) == ("ACTIVE", None)
    assert (plain["openOrders"], plain["orderTimes"]) == ([], [])


def test_a_valuation_without_a_catalog_cannot_write_open_orders(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument
) -> None:
    account = replace(with_orders(sample(catalog, btcusdt, ethusdt)), updated_at=T0)
    bare = replace(valued(account.ledger, catalog), catalog=None)
    for write in (account_to_document, reference_account_to_document):
        with pytest.raises(ValueError, match="catalog"):
            write(account, bare)
        write(replace(account, open_orders=()), bare)  # nothing to settle: no catalog needed


def test_documents_without_order_fields_read_with_the_defaults(
    catalog: Catalog, btcusdt: Instrument, ethusdt: Instrument
) -> None:
    doc = written(with_orders(sample(catalog, btcusdt, ethusdt)), catalog)
    for key in ("tradingState", "tradingStateAt", "openOrders", "orderTimes"):
        del doc[key]
    for wallet in doc["wallets"].values():
        del wallet["openOrderMargin"]
    for version in (1, 2):  # version 1, and version 2 written before orders
        old = {**doc, "schemaVersion": version}
        for read in (account_from_document, reference_account_from_document):
            back = read(old)
            assert (back.trading_state, back.trading_state_at) == ("ACTIVE", None)
            assert (back.open_orders, back.order_times) == ((), ())
        upgraded = written(account_from_document(old), catalog)
        assert upgraded["schemaVersion"] == 2
        assert {w["openOrderMargin"] for w in upgraded["wallets"].values()} == {"0"}
        assert account_from_document(upgraded) == replace(account_from_document(old), etag=None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tradingState": "PAUSED"}, "tradingState"),
        ({"tradingStateAt": "noon"}, "tradingStateAt"),
        ({"openOrders": "O-1"}, "openOrders must be a list"),
        ({"orderTimes": [1]}, "orderTimes"),
    ],
)
def test_unreadable_order_fields_are_refused(
    catalog: Catalog,
    btcusdt: Instrument,
    ethusdt: Instrument,
    change: dict[str, Any],
    message: str,
) -> None:
    doc = {**written(with_orders(sample(catalog, btcusdt, ethusdt)), catalog), **change}
    with pytest.raises(UnreadableDocument, match=message):
        account_from_document(doc)
