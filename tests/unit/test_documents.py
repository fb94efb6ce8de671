"""Account documents: what is written reads back; what cannot be read is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from handlers.adapters.mapping import account_from_document, account_to_document
from handlers.core.catalog import Catalog, Instrument
from handlers.core.documents import ACCOUNT_ID, MAX_RECENT_IDS, AccountDoc, Entry, EventRecord
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
