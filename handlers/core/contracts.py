"""Wire models of the contract: FILL, TRANSFER, MARK, MARKS, and on the orders queue ORDER,
ORDER_DONE, ACCOUNT_CONTROL in; Alert and ORDER_DECISION out (their field types:
:mod:`handlers.core.fields`).

Inputs are validated from the Python objects :func:`handlers.core.decode.decode_body`
produces (numbers as :class:`JsonNumber`, so decimals keep their exact text). Every model
is strict and frozen and forbids unknown keys; keys beginning with ``$`` (stamped by the
Functions host) are dropped before validation by :func:`validate_inbound`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from handlers.core.decimals import DECIMAL_PATTERN
from handlers.core.fields import (
    ID_PATTERN,
    SYMBOL_PATTERN,
    Flag,
    Id,
    Leverage,
    NonNegativeDecimal,
    NonZeroDecimal,
    PositiveDecimal,
    SchemaVersion,
    Text,
    Timestamp,
    WireModel,
    checked_id,
    decimal_check,
    format_timestamp,
    integer_check,
    is_well_formed_id,
    parse_timestamp,
)

__all__ = [
    "ID_PATTERN",
    "INBOUND",
    "ORDERS_INBOUND",
    "SYMBOL_PATTERN",
    "AccountControl",
    "Alert",
    "AlertType",
    "Fill",
    "Inbound",
    "Mark",
    "MarkEntry",
    "Marks",
    "Order",
    "OrderDecision",
    "OrderDone",
    "Reason",
    "Transfer",
    "ValidationError",
    "format_timestamp",
    "is_well_formed_id",
    "mark_id",
    "parse_timestamp",
    "validate_inbound",
    "validate_order_message",
]

# --- inbound ---------------------------------------------------------------------------


class Fill(WireModel):
    """One trade execution (``type`` FILL)."""

    type: Literal["FILL"]
    schemaVersion: Annotated[
        int,
        PlainValidator(integer_check(1, 2)),
        WithJsonSchema({"type": "integer", "enum": [1, 2]}),
    ]
    tradeId: Id
    accountId: Id
    symbol: Text
    side: Literal["BUY", "SELL"]
    quantity: PositiveDecimal
    price: PositiveDecimal
    leverage: Leverage
    marginMode: Literal["ISOLATED", "CROSS"] = "CROSS"
    positionSide: Literal["BOTH", "LONG", "SHORT"] = "BOTH"
    reduceOnly: Flag = False
    fee: NonNegativeDecimal = Decimal(0)
    executedAt: Timestamp
    correlationId: Id | None = None
    #: v2: the order it fills (releases that order's reservation pro rata).
    orderId: Id | None = None

    @model_validator(mode="after")
    def _order_id_is_v2(self) -> Fill:
        if self.orderId is not None and self.schemaVersion != 2:
            raise ValueError("orderId needs schemaVersion 2")
        return self

    @property
    def event_id(self) -> str:
        return self.tradeId


class Transfer(WireModel):
    """Money in or out of the futures wallet (``type`` TRANSFER)."""

    type: Literal["TRANSFER"]
    schemaVersion: SchemaVersion
    transferId: Id
    accountId: Id
    asset: Text
    amount: NonZeroDecimal
    reason: Literal["DEPOSIT", "WITHDRAWAL", "FUNDING", "ADJUSTMENT"]
    occurredAt: Timestamp
    correlationId: Id | None = None

    @property
    def event_id(self) -> str:
        return self.transferId


class MarkEntry(WireModel):
    """One mark price inside a MARKS batch."""

    symbol: Text
    markPrice: PositiveDecimal
    timestamp: Timestamp


class Mark(WireModel):
    """One mark price (``type`` MARK)."""

    type: Literal["MARK"]
    schemaVersion: SchemaVersion
    symbol: Text
    markPrice: PositiveDecimal
    timestamp: Timestamp


class Marks(WireModel):
    """A batch of 1-500 mark prices (``type`` MARKS); entries are validated one by one."""

    type: Literal["MARKS"]
    schemaVersion: SchemaVersion
    marks: Annotated[list[Any], Field(min_length=1, max_length=500), Strict()]


class Order(WireModel):
    """A pre-trade check (``type`` ORDER) on the orders queue."""

    type: Literal["ORDER"]
    schemaVersion: SchemaVersion
    orderId: Id
    accountId: Id
    symbol: Text
    side: Literal["BUY", "SELL"]
    orderType: Literal["LIMIT", "MARKET"]
    quantity: PositiveDecimal
    #: LIMIT: required; MARKET: absent (valued at the mark and the slippage setting).
    price: PositiveDecimal | None = None
    leverage: Leverage
    marginMode: Literal["ISOLATED", "CROSS"] = "CROSS"
    positionSide: Literal["BOTH", "LONG", "SHORT"] = "BOTH"
    reduceOnly: Flag = False
    submittedAt: Timestamp
    correlationId: Id | None = None

    @model_validator(mode="after")
    def _price_by_type(self) -> Order:
        if self.orderType == "LIMIT" and self.price is None:
            raise ValueError("a LIMIT order needs a price")
        if self.orderType == "MARKET" and self.price is not None:
            raise ValueError("a MARKET order has no price")
        return self


class OrderDone(WireModel):
    """The end of an order's life (``type`` ORDER_DONE): releases what it still reserves."""

    type: Literal["ORDER_DONE"]
    schemaVersion: SchemaVersion
    orderId: Id
    accountId: Id
    status: Literal["FILLED", "CANCELED", "EXPIRED", "REJECTED"]
    occurredAt: Timestamp


class AccountControl(WireModel):
    """An account's trading state (``type`` ACCOUNT_CONTROL)."""

    type: Literal["ACCOUNT_CONTROL"]
    schemaVersion: SchemaVersion
    controlId: Id
    accountId: Id
    tradingState: Literal["ACTIVE", "REDUCING", "HALTED"]
    reason: Annotated[str, Strict(), Field(max_length=200)]
    occurredAt: Timestamp


Inbound = Annotated[Fill | Transfer | Mark | Marks, Field(discriminator="type")]
OrdersInbound = Annotated[Order | OrderDone | AccountControl, Field(discriminator="type")]
ORDERS_INBOUND: TypeAdapter[Order | OrderDone | AccountControl] = TypeAdapter(OrdersInbound)
INBOUND: TypeAdapter[Fill | Transfer | Mark | Marks] = TypeAdapter(Inbound)
MARK_ENTRY: TypeAdapter[MarkEntry] = TypeAdapter(MarkEntry)
_FILL_FIELD_SET = frozenset(Fill.model_fields)
_FEE_DEFAULT = Fill.model_fields["fee"].default


def validate_inbound(obj: dict[str, Any]) -> Fill | Transfer | Mark | Marks:
    """Validate a decoded body, ignoring top-level keys that begin with ``$``.

    A FILL that passes every rule takes :func:`_valid_fill` (the same validators, without
    pydantic's dispatch); anything else, and every error, comes from the model.

    Raises:
        pydantic.ValidationError: any rule of the contract is broken.
    """
    clean = {k: v for k, v in obj.items() if not k.startswith("$")}
    if clean.get("type") == "FILL":
        fill = _valid_fill(clean)
        if fill is not None:
            return fill
    return INBOUND.validate_python(clean)


_FILL_REQUIRED = frozenset(name for name, info in Fill.model_fields.items() if info.is_required())
_SIDES = frozenset(("BUY", "SELL"))
_MARGIN_MODES = frozenset(("ISOLATED", "CROSS"))
_POSITION_SIDES = frozenset(("BOTH", "LONG", "SHORT"))
_positive = decimal_check("positive")
_non_negative = decimal_check("non_negative")
_schema_version = integer_check(1, 1)
_leverage = integer_check(1, 125)
_new_object = object.__new__
_set_attribute = object.__setattr__


def _valid_fill(clean: dict[str, Any]) -> Fill | None:
    """The Fill ``Fill.model_validate(clean)`` returns when ``clean`` breaks no rule, built
    with the model's own field validators; None when any rule may be broken (the model
    then validates it and words the errors). Only exact ``str``/``bool`` values are taken,
    so pydantic's strict-mode coercions never need copying."""
    keys = clean.keys()
    if not keys >= _FILL_REQUIRED or not keys <= _FILL_FIELD_SET or "orderId" in keys:
        return None  # (a v2 FILL with an orderId: the model)
    try:
        kind = clean["type"]
        side = clean["side"]
        symbol = clean["symbol"]
        if type(kind) is not str or kind != "FILL":
            return None
        if type(side) is not str or side not in _SIDES or type(symbol) is not str:
            return None
        margin_mode = clean.get("marginMode", "CROSS")
        position_side = clean.get("positionSide", "BOTH")
        reduce_only = clean.get("reduceOnly", False)
        if (
            type(margin_mode) is not str
            or margin_mode not in _MARGIN_MODES
            or type(position_side) is not str
            or position_side not in _POSITION_SIDES
            or type(reduce_only) is not bool
        ):
            return None
        correlation = clean.get("correlationId")
        values = {
            "type": "FILL",
            "schemaVersion": _schema_version(clean["schemaVersion"]),
            "tradeId": checked_id(clean["tradeId"]),
            "accountId": checked_id(clean["accountId"]),
            "symbol": symbol,
            "side": side,
            "quantity": _positive(clean["quantity"]),
            "price": _positive(clean["price"]),
            "leverage": _leverage(clean["leverage"]),
            "marginMode": margin_mode,
            "positionSide": position_side,
            "reduceOnly": reduce_only,
            "fee": _non_negative(clean["fee"]) if "fee" in clean else _FEE_DEFAULT,
            "executedAt": parse_timestamp(clean["executedAt"]),
            "correlationId": None if correlation is None else checked_id(correlation),
            "orderId": None,
        }
    except Exception:  # any rule broken: the model says which
        return None
    fill = _new_object(Fill)
    _set_attribute(fill, "__dict__", values)
    _set_attribute(fill, "__pydantic_fields_set__", set(keys))
    _set_attribute(fill, "__pydantic_extra__", None)
    _set_attribute(fill, "__pydantic_private__", None)
    return fill


def validate_order_message(obj: dict[str, Any]) -> Order | OrderDone | AccountControl:
    """Validate a decoded orders-queue body, ignoring top-level keys that begin with ``$``.

    Raises:
        pydantic.ValidationError: any rule of the contract is broken.
    """
    return ORDERS_INBOUND.validate_python({k: v for k, v in obj.items() if not k.startswith("$")})


def mark_id(symbol: object, timestamp: object) -> str | None:
    """``<symbol>@<UTC ms Z>`` when the symbol and the timestamp are well formed, else None."""
    if not isinstance(symbol, str) or re.fullmatch(SYMBOL_PATTERN, symbol) is None:
        return None
    try:
        when = parse_timestamp(timestamp)
    except ValueError:
        return None
    return f"{symbol}@{format_timestamp(when)}"


# --- outbound --------------------------------------------------------------------------

AlertType = Literal[
    "TRADE_REJECTED",
    "POISON_MESSAGE",
    "INSUFFICIENT_MARGIN",
    "LEVERAGE_BRACKET_BREACH",
    "POSITION_LIMIT",
    "PRICE_DEVIATION",
    "LARGE_TRADE",
    "MARGIN_CALL",
    "LIQUIDATION_RISK",
    "RISK_RECOVERED",
    "STALE_MARK",
    "TRADING_STATE_CHANGED",
]


class Reason(WireModel):
    """One reason of an alert or rejection."""

    code: str
    message: str


class Alert(WireModel):
    """An alert on the ``alerts`` queue (written base64-encoded)."""

    schemaVersion: Literal[1] = 1
    alertId: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    type: AlertType
    severity: Literal["INFO", "WARNING", "CRITICAL"]
    accountId: str | None
    symbol: str | None = None
    scope: str | None = None
    sourceId: str
    correlationId: str | None = None
    reasons: tuple[Reason, ...] = ()
    metrics: dict[str, Annotated[str, Field(pattern=DECIMAL_PATTERN)]] = Field(default_factory=dict)
    createdAt: Timestamp


class OrderDecision(WireModel):
    """A pre-trade decision on the ``order-decisions`` queue (written base64-encoded);
    ``decisionId`` is 64 hex of SHA-256 over the compact JSON ``[accountId, orderId]``."""

    schemaVersion: Literal[1] = 1
    type: Literal["ORDER_DECISION"] = "ORDER_DECISION"
    decisionId: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    orderId: str
    accountId: str
    symbol: str | None
    decision: Literal["APPROVED", "REJECTED"]
    reasons: tuple[Reason, ...] = ()
    metrics: dict[str, Annotated[str, Field(pattern=DECIMAL_PATTERN)]] = Field(default_factory=dict)
    correlationId: str | None = None
    decidedAt: Timestamp
