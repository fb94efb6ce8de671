"""The wire contract of FILL, TRANSFER, MARK and MARKS, validated as the service does
(``decode_body`` then ``validate_inbound``); ids, mark ids and alert ids."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from handlers.core.alerts import alert_id
from handlers.core.contracts import (
    Fill,
    Mark,
    MarkEntry,
    Marks,
    Transfer,
    format_timestamp,
    is_well_formed_id,
    mark_id,
    validate_inbound,
    validate_order_message,
)
from handlers.core.decode import decode_body
from tests.events import as_body, event_names, load_event

MISSING = object()


def validate(event: dict[str, Any], base64: bool = True) -> Any:
    obj = decode_body(as_body(event, base64=base64)).obj
    if obj.get("type") in ("ORDER", "ORDER_DONE", "ACCOUNT_CONTROL"):  # the orders queue's
        return validate_order_message(obj)
    return validate_inbound(obj)


def validate_text(json_text: str) -> Any:
    return validate_inbound(decode_body(json_text.encode("utf-8")).obj)


def edited(name: str, **changes: Any) -> dict[str, Any]:
    event = load_event(name)
    for key, val in changes.items():
        if val is MISSING:
            event.pop(key, None)
        else:
            event[key] = val
    return event


def assert_invalid(event: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate(event)


def test_every_canonical_event_is_valid() -> None:
    names = event_names()
    assert len(names) >= 7
    for name in names:
        for encode in (True, False):
            validate(load_event(name), base64=encode)


# --- FILL ------------------------------------------------------------------------------


@pytest.mark.parametrize("encode", [True, False], ids=["base64", "raw"])
def test_canonical_fill_is_valid(encode: bool) -> None:
    fill = validate(load_event("fill_btcusdt_long"), base64=encode)
    assert isinstance(fill, Fill)
    assert fill.tradeId == "T-BTC-0001"
    assert fill.accountId == "acct-0001"
    assert fill.symbol == "BTCUSDT"
    assert fill.side == "BUY"
    assert fill.quantity == Decimal("0.1")
    assert fill.price == Decimal("60000")
    assert fill.leverage == 10
    assert fill.marginMode == "CROSS"
    assert fill.positionSide == "BOTH"
    assert fill.reduceOnly is False
    assert fill.fee == Decimal("2.4")
    assert fill.executedAt == datetime(2024, 10, 1, 12, 0, tzinfo=UTC)
    assert fill.correlationId == "corr-btc-0001"
    assert fill.event_id == "T-BTC-0001"


@pytest.mark.parametrize("name", ["fill_ethusdt_short", "fill_btcusd_perp"])
def test_other_canonical_fills_are_valid(name: str) -> None:
    assert isinstance(validate(load_event(name)), Fill)


def test_fill_defaults() -> None:
    event = edited(
        "fill_btcusdt_long",
        marginMode=MISSING,
        positionSide=MISSING,
        reduceOnly=MISSING,
        fee=MISSING,
        correlationId=MISSING,
    )
    fill = validate(event)
    assert fill.marginMode == "CROSS"
    assert fill.positionSide == "BOTH"
    assert fill.reduceOnly is False
    assert fill.fee == 0
    assert fill.correlationId is None


FILL_REQUIRED = [
    "type",
    "schemaVersion",
    "tradeId",
    "accountId",
    "symbol",
    "side",
    "quantity",
    "price",
    "leverage",
    "executedAt",
]


@pytest.mark.parametrize("field", FILL_REQUIRED)
def test_fill_required_field_missing(field: str) -> None:
    assert_invalid(edited("fill_btcusdt_long", **{field: MISSING}))


BAD_IDS: list[Any] = [
    123,
    None,
    True,
    "",
    "a" * 65,
    "a b",
    "a/b",
    "a#b",
    "ü",
    "Ａ",  # fullwidth letter
    "id\n",
    "rejection:x",
    "sha256:x",
    "sha256:" + "0" * 57,
]

FILL_BAD_VALUES: list[tuple[str, Any]] = [
    *[("tradeId", v) for v in BAD_IDS],
    *[("accountId", v) for v in BAD_IDS],
    *[("correlationId", v) for v in BAD_IDS if v is not None],
    ("type", "fill"),
    ("type", "Fill"),
    ("type", "TRADE"),
    ("type", None),
    ("schemaVersion", "1"),
    ("schemaVersion", 3),  # (v2 is FILL v2: orderId)
    ("schemaVersion", 0),
    ("schemaVersion", 1.0),
    ("schemaVersion", True),
    ("schemaVersion", None),
    ("symbol", 123),
    ("symbol", None),
    ("symbol", True),
    ("symbol", ["BTCUSDT"]),
    ("side", "buy"),
    ("side", "Buy"),
    ("side", "\u0412UY"),  # Cyrillic capital VE, looks like B
    ("side", "BU\u0423"),  # Cyrillic capital U, looks like Y
    ("side", "ＢＵＹ"),  # fullwidth
    ("side", "BUY "),
    ("side", "LONG"),
    ("side", 1),
    ("side", None),
    ("quantity", "0"),
    ("quantity", "0.000"),
    ("quantity", "-0.1"),
    ("quantity", 0),
    ("quantity", -0.1),
    ("quantity", True),
    ("quantity", False),
    ("quantity", None),
    ("quantity", "abc"),
    ("quantity", "NaN"),
    ("quantity", "Infinity"),
    ("quantity", "+0.1"),
    ("quantity", "0.1."),
    ("quantity", "1_0"),
    ("quantity", "1e1000"),
    ("quantity", "١"),
    ("quantity", ["0.1"]),
    ("quantity", {"value": "0.1"}),
    ("price", "0"),
    ("price", "-60000"),
    ("price", 0),
    ("price", True),
    ("price", "60000."),
    ("price", ".5"),
    ("leverage", 0),
    ("leverage", 126),
    ("leverage", -1),
    ("leverage", 1000000000),
    ("leverage", "10"),
    ("leverage", 10.0),
    ("leverage", 10.5),
    ("leverage", True),
    ("leverage", None),
    ("marginMode", "cross"),
    ("marginMode", "Isolated"),
    ("marginMode", "CROS\u0405"),  # Cyrillic DZE, looks like S
    ("marginMode", 1),
    ("marginMode", None),
    ("positionSide", "both"),
    ("positionSide", "long"),
    ("positionSide", "BUY"),
    ("positionSide", None),
    ("reduceOnly", "false"),
    ("reduceOnly", "true"),
    ("reduceOnly", 0),
    ("reduceOnly", 1),
    ("reduceOnly", None),
    ("fee", "-0.01"),
    ("fee", -1),
    ("fee", True),
    ("fee", "fee"),
    ("fee", None),
    ("executedAt", "2024-10-01T12:00:00"),  # no zone
    ("executedAt", "2024-10-01t12:00:00Z"),
    ("executedAt", "2024-10-01T12:00:00z"),
    ("executedAt", "2024-10-01 12:00:00Z"),
    ("executedAt", "2024-10-01T12:00Z"),
    ("executedAt", "2024-10-01T12:00:00.Z"),
    ("executedAt", "2024-10-01T12:00:00+0100"),
    ("executedAt", "2024-10-01T12:00:00+01"),
    ("executedAt", "2024-10-01"),
    ("executedAt", "2024-02-30T00:00:00Z"),
    ("executedAt", "2023-02-29T00:00:00Z"),
    ("executedAt", "2024-13-01T00:00:00Z"),
    ("executedAt", "2024-00-10T00:00:00Z"),
    ("executedAt", "2024-10-01T24:00:00Z"),
    ("executedAt", "2024-10-01T12:60:00Z"),
    ("executedAt", "2024-10-01T12:00:61Z"),
    ("executedAt", "2024-10-01T12:00:00+24:00"),
    ("executedAt", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
    ("executedAt", "9999-12-31T23:59:59-01:00"),  # after year 9999 in UTC
    ("executedAt", "２０２４-10-01T12:00:00Z"),
    ("executedAt", 1727784000),
    ("executedAt", "1727784000"),
    ("executedAt", None),
]


@pytest.mark.parametrize(("field", "bad"), FILL_BAD_VALUES)
def test_fill_field_rule(field: str, bad: Any) -> None:
    assert_invalid(edited("fill_btcusdt_long", **{field: bad}))


@pytest.mark.parametrize(
    ("field", "good", "expected"),
    [
        ("leverage", 1, 1),
        ("leverage", 125, 125),
        ("quantity", 0.1, Decimal("0.1")),  # a JSON number, read from its text
        ("quantity", "1e-1", Decimal("0.1")),
        ("quantity", "0.100", Decimal("0.1")),
        ("price", 60000, Decimal("60000")),
        ("price", "6E+4", Decimal("60000")),
        ("fee", "0", Decimal(0)),
        ("fee", 0, Decimal(0)),
        ("fee", "-0", Decimal(0)),
        ("reduceOnly", True, True),
        ("marginMode", "ISOLATED", "ISOLATED"),
        ("positionSide", "LONG", "LONG"),
        ("positionSide", "SHORT", "SHORT"),
        ("side", "SELL", "SELL"),
        ("tradeId", "a" * 64, "a" * 64),
        ("tradeId", "Az09._:-", "Az09._:-"),
        ("tradeId", "x:rejection:", "x:rejection:"),
        ("tradeId", "sha256", "sha256"),
        ("accountId", "A", "A"),
        ("correlationId", "c" * 64, "c" * 64),
    ],
)
def test_fill_accepted_values(field: str, good: Any, expected: Any) -> None:
    fill = validate(edited("fill_btcusdt_long", **{field: good}))
    assert getattr(fill, field) == expected


def test_fill_json_number_literals_are_read_exactly() -> None:
    event = load_event("fill_btcusdt_long")
    text = (
        json.dumps(event)
        .replace('"0.1"', "0.1000000000000000055511151231257827")
        .replace('"2.4"', "2.4e0")
    )
    fill = validate_text(text)
    assert fill.quantity == Decimal("0.1000000000000000055511151231257827")
    assert fill.fee == Decimal("2.4")


@pytest.mark.parametrize("literal", ["10.0", "1e1", "1E1", "10e0"])
def test_leverage_is_a_json_integer_only(literal: str) -> None:
    text = json.dumps(load_event("fill_btcusdt_long")).replace(
        '"leverage": 10', f'"leverage": {literal}'
    )
    assert literal in text
    with pytest.raises(ValidationError):
        validate_text(text)


def test_decimal_number_literal_with_41_significant_digits_is_rejected() -> None:
    text = json.dumps(load_event("fill_btcusdt_long")).replace(
        '"60000"', "60000.000000000000000000000000000000000001"
    )
    with pytest.raises(ValidationError):
        validate_text(text)


@pytest.mark.parametrize(
    "name", ["fill_btcusdt_long", "transfer_deposit_usdt", "mark_btcusdt", "marks_batch"]
)
@pytest.mark.parametrize(
    "unknown", ["extra", "Quantity", "trade_id", "comment", "_etag", "AzureWebJobsParentId"]
)
def test_unknown_fields_are_rejected(name: str, unknown: str) -> None:
    assert_invalid(edited(name, **{unknown: "x"}))


@pytest.mark.parametrize(
    "name", ["fill_btcusdt_long", "transfer_deposit_usdt", "mark_btcusdt", "marks_batch"]
)
def test_dollar_keys_are_ignored(name: str) -> None:
    plain = validate(load_event(name))
    stamped = validate(
        edited(
            name,
            **{
                "$AzureWebJobsParentId": "6f1f6c1e-8a0e-4c39-9d8b-1b9d2c1f0a11",
                "$other": {"x": [1]},
            },
        )
    )
    assert stamped == plain


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-10-01T12:00:00Z", "2024-10-01T12:00:00.000Z"),
        ("2024-10-01T12:00:00.5Z", "2024-10-01T12:00:00.500Z"),
        ("2024-10-01T12:00:00.123456789Z", "2024-10-01T12:00:00.123Z"),  # truncated
        ("2024-10-01T12:00:00.9999Z", "2024-10-01T12:00:00.999Z"),  # not rounded up
        ("2024-10-01T14:00:00.123456+02:00", "2024-10-01T12:00:00.123Z"),
        ("2024-10-01T00:30:00.9999+01:00", "2024-09-30T23:30:00.999Z"),
        ("2024-10-01T12:00:00-05:30", "2024-10-01T17:30:00.000Z"),
        ("2024-12-31T23:00:00-01:00", "2025-01-01T00:00:00.000Z"),
        ("2024-10-01T12:00:00+00:00", "2024-10-01T12:00:00.000Z"),
        ("2024-10-01T12:00:00-00:00", "2024-10-01T12:00:00.000Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"),
    ],
)
def test_timestamps_are_utc_truncated_to_milliseconds(text: str, utc: str) -> None:
    fill = validate(edited("fill_btcusdt_long", executedAt=text))
    assert fill.executedAt.tzinfo is not None
    assert fill.executedAt.utcoffset().total_seconds() == 0
    assert fill.executedAt.microsecond % 1000 == 0
    assert format_timestamp(fill.executedAt) == utc
    assert fill.model_dump(mode="json")["executedAt"] == utc


def test_fill_writes_decimals_as_strings() -> None:
    event = edited("fill_btcusdt_long", quantity=0.1, price="6.00E+4", fee=0)
    dumped = validate(event).model_dump(mode="json")
    assert dumped["quantity"] == "0.1"
    assert dumped["price"] == "60000"
    assert dumped["fee"] == "0"
    assert dumped["leverage"] == 10


# --- TRANSFER --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transfer_deposit_usdt", "transfer_withdrawal"])
def test_canonical_transfers_are_valid(name: str) -> None:
    transfer = validate(load_event(name))
    assert isinstance(transfer, Transfer)
    assert transfer.event_id == load_event(name)["transferId"]


def test_transfer_fields() -> None:
    transfer = validate(load_event("transfer_deposit_usdt"))
    assert transfer.amount == Decimal(1000)
    assert transfer.asset == "USDT"
    assert transfer.reason == "DEPOSIT"
    assert transfer.occurredAt == datetime(2024, 10, 1, 11, 0, tzinfo=UTC)
    assert validate(edited("transfer_deposit_usdt", correlationId=MISSING)).correlationId is None


@pytest.mark.parametrize(
    "field",
    ["type", "schemaVersion", "transferId", "accountId", "asset", "amount", "reason", "occurredAt"],
)
def test_transfer_required_field_missing(field: str) -> None:
    assert_invalid(edited("transfer_deposit_usdt", **{field: MISSING}))


TRANSFER_BAD_VALUES: list[tuple[str, Any]] = [
    *[("transferId", v) for v in BAD_IDS],
    *[("accountId", v) for v in BAD_IDS],
    ("amount", "0"),
    ("amount", 0),
    ("amount", "-0"),
    ("amount", "0.000"),
    ("amount", True),
    ("amount", "1,000"),
    ("amount", None),
    ("asset", 1),
    ("asset", None),
    ("reason", "deposit"),
    ("reason", "REFUND"),
    ("reason", "DEP\u041eSIT"),  # Cyrillic O
    ("reason", None),
    ("occurredAt", "2024-10-01T11:00:00"),
    ("occurredAt", "2024-10-01T11:00:00.000z"),
    ("schemaVersion", "1"),
    ("type", "transfer"),
    ("tradeId", "T-1"),  # a FILL's field
]


@pytest.mark.parametrize(("field", "bad"), TRANSFER_BAD_VALUES)
def test_transfer_field_rule(field: str, bad: Any) -> None:
    assert_invalid(edited("transfer_deposit_usdt", **{field: bad}))


@pytest.mark.parametrize("amount", ["-100", -100, "1e-18", "0.5", 7])
@pytest.mark.parametrize("reason", ["FUNDING", "ADJUSTMENT"])
def test_transfer_amount_any_nonzero_sign(amount: Any, reason: str) -> None:
    transfer = validate(edited("transfer_deposit_usdt", amount=amount, reason=reason))
    assert transfer.amount == Decimal(str(amount))


# --- MARK / MARKS ----------------------------------------------------------------------


def test_canonical_mark_is_valid() -> None:
    mark = validate(load_event("mark_btcusdt"))
    assert isinstance(mark, Mark)
    assert mark.symbol == "BTCUSDT"
    assert mark.markPrice == Decimal("60500.5")
    assert mark.timestamp == datetime(2024, 10, 1, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize("field", ["type", "schemaVersion", "symbol", "markPrice", "timestamp"])
def test_mark_required_field_missing(field: str) -> None:
    assert_invalid(edited("mark_btcusdt", **{field: MISSING}))


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("markPrice", "0"),
        ("markPrice", "-1"),
        ("markPrice", 0),
        ("markPrice", True),
        ("markPrice", "NaN"),
        ("markPrice", None),
        ("symbol", 1),
        ("symbol", None),
        ("timestamp", "2024-10-01T12:30:00"),
        ("timestamp", "2024-10-01T12:30:00.000z"),
        ("timestamp", 1727785800000),
        ("timestamp", None),
        ("schemaVersion", 2),
        ("type", "mark"),
        ("accountId", "acct-1"),
    ],
)
def test_mark_field_rule(field: str, bad: Any) -> None:
    assert_invalid(edited("mark_btcusdt", **{field: bad}))


def test_mark_price_as_json_number() -> None:
    assert validate(edited("mark_btcusdt", markPrice=60500.5)).markPrice == Decimal("60500.5")


def entry(i: int) -> dict[str, Any]:
    return {"symbol": "BTCUSDT", "markPrice": f"{60000 + i}.5", "timestamp": "2024-10-01T12:30:00Z"}


@pytest.mark.parametrize("count", [1, 3, 500])
def test_marks_batch_sizes_accepted(count: int) -> None:
    batch = validate(edited("marks_batch", marks=[entry(i) for i in range(count)]))
    assert isinstance(batch, Marks)
    assert len(batch.marks) == count


@pytest.mark.parametrize("count", [0, 501])
def test_marks_batch_sizes_rejected(count: int) -> None:
    assert_invalid(edited("marks_batch", marks=[entry(i) for i in range(count)]))


@pytest.mark.parametrize("bad", [MISSING, None, "x", {"symbol": "BTCUSDT"}, 3])
def test_marks_must_be_a_list(bad: Any) -> None:
    assert_invalid(edited("marks_batch", marks=bad))


def test_marks_entries_are_not_validated_with_the_batch() -> None:
    # each entry stands alone: the batch is valid even when an entry is not
    batch = validate(edited("marks_batch", marks=[entry(0), {"symbol": 1}, "junk"]))
    assert isinstance(batch, Marks)
    assert len(batch.marks) == 3


def test_mark_entry_rules() -> None:
    obj = decode_body(as_body(load_event("marks_batch"))).obj
    good = MarkEntry.model_validate(obj["marks"][1])
    assert good.symbol == "ETHUSDT"
    assert good.markPrice == Decimal("2510.25")
    for bad in [
        {**entry(0), "extra": 1},
        {**entry(0), "markPrice": "0"},
        {**entry(0), "timestamp": "2024-10-01T12:30:00"},
        {"symbol": "BTCUSDT", "markPrice": "1"},
        {"symbol": "BTCUSDT", "timestamp": "2024-10-01T12:30:00Z"},
        {"markPrice": "1", "timestamp": "2024-10-01T12:30:00Z"},
    ]:
        with pytest.raises(ValidationError):
            MarkEntry.model_validate(bad)


@pytest.mark.parametrize("kind", [MISSING, "ALERT", "", None, "MARKs"])
def test_unknown_type_is_rejected(kind: Any) -> None:
    assert_invalid(edited("mark_btcusdt", type=kind))


# --- ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("Az09._:-", True),
        ("acct 1", False),
        ("acct/1", False),
        ("acct@1", False),
        ("ü", False),
        ("rejection:x", False),
        ("rejection:", False),
        ("sha256:x", False),
        ("rejection", True),
        ("x:rejection:y", True),
        ("@account", False),
        ("abc\n", False),
        (None, False),
        (123, False),
    ],
)
def test_is_well_formed_id(value: object, ok: bool) -> None:
    assert is_well_formed_id(value) is ok


@pytest.mark.parametrize(
    ("symbol", "timestamp", "expected"),
    [
        ("BTCUSDT", "2024-10-01T12:30:00Z", "BTCUSDT@2024-10-01T12:30:00.000Z"),
        ("BTCUSD_PERP", "2024-10-01T14:30:00.123456+02:00", "BTCUSD_PERP@2024-10-01T12:30:00.123Z"),
        ("a.b-c", "2024-10-01T12:30:00.9999Z", "a.b-c@2024-10-01T12:30:00.999Z"),
        ("S" * 32, "2024-10-01T12:30:00Z", "S" * 32 + "@2024-10-01T12:30:00.000Z"),
        ("S" * 33, "2024-10-01T12:30:00Z", None),
        ("BTC USDT", "2024-10-01T12:30:00Z", None),
        ("BTC:USDT", "2024-10-01T12:30:00Z", None),
        ("", "2024-10-01T12:30:00Z", None),
        (None, "2024-10-01T12:30:00Z", None),
        (1, "2024-10-01T12:30:00Z", None),
        ("BTCUSDT", "2024-10-01T12:30:00", None),
        ("BTCUSDT", "2024-02-30T12:30:00Z", None),
        ("BTCUSDT", None, None),
        ("BTCUSDT", 1727785800, None),
    ],
)
def test_mark_id(symbol: object, timestamp: object, expected: str | None) -> None:
    assert mark_id(symbol, timestamp) == expected


@pytest.mark.parametrize(
    ("source", "kind", "account", "scope"),
    [
        ("T-BTC-0001", "LARGE_TRADE", "acct-0001", "BTCUSDT:BOTH"),
        ("sha256:" + "ab" * 32, "TRADE_REJECTED", None, None),
        ("X-1", "MARGIN_CALL", "acct-0001", "USDT"),
        ("BTCUSDT@2024-10-01T12:30:00.000Z", "POISON_MESSAGE", None, None),
        ("é€\u2028", "TRADE_REJECTED", "acct", None),  # non-ASCII escaped as \\uXXXX
    ],
)
def test_alert_id_by_hand(source: str, kind: str, account: str | None, scope: str | None) -> None:
    compact = json.dumps([source, kind, account, scope], separators=(",", ":"))
    assert compact.isascii()
    expected = hashlib.sha256(compact.encode("utf-8")).hexdigest()
    assert alert_id(source, kind, account, scope) == expected
    assert len(expected) == 64


def test_alert_id_literal_value() -> None:
    text = '["T-1","LARGE_TRADE","acct-1","BTCUSDT:BOTH"]'
    assert (
        alert_id("T-1", "LARGE_TRADE", "acct-1", "BTCUSDT:BOTH")
        == hashlib.sha256(text.encode()).hexdigest()
    )
    text_null = '["T-1","TRADE_REJECTED",null,null]'
    assert (
        alert_id("T-1", "TRADE_REJECTED", None, None)
        == hashlib.sha256(text_null.encode()).hexdigest()
    )
    assert alert_id("T-1", "TRADE_REJECTED", None, None) != alert_id(
        "T-1", "TRADE_REJECTED", "", None
    )
