"""Wire models of the contract: FILL, TRANSFER, MARK, MARKS in; Alert out.

Inputs are validated from the Python objects :func:`handlers.core.decode.decode_body`
produces (numbers as :class:`JsonNumber`, so decimals keep their exact text). Every model
is strict and frozen and forbids unknown keys; keys beginning with ``$`` (stamped by the
Functions host) are dropped before validation by :func:`validate_inbound`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from handlers.core.decimals import DECIMAL_PATTERN, format_decimal, parse_decimal
from handlers.core.decode import JsonNumber

__all__ = [
    "ID_PATTERN",
    "INBOUND",
    "SYMBOL_PATTERN",
    "Alert",
    "AlertType",
    "Fill",
    "Inbound",
    "Mark",
    "MarkEntry",
    "Marks",
    "Reason",
    "Transfer",
    "ValidationError",
    "format_timestamp",
    "is_well_formed_id",
    "mark_id",
    "parse_timestamp",
    "validate_inbound",
]

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
SYMBOL_PATTERN = r"^[A-Za-z0-9._-]{1,32}$"
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
_ID_RE = re.compile(ID_PATTERN)
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
_TS_RE = re.compile(TIMESTAMP_PATTERN)
_RESERVED_PREFIXES = ("rejection:", "sha256:")


# --- field types -----------------------------------------------------------------------


def is_well_formed_id(value: object) -> bool:
    """True when ``value`` is an id string the contract accepts."""
    return (
        isinstance(value, str)
        and _ID_RE.fullmatch(value) is not None
        and not value.startswith(_RESERVED_PREFIXES)
    )


def _id(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("an id must be a string")
    if not is_well_formed_id(value):
        raise ValueError(
            "an id is 1-64 chars of [A-Za-z0-9._:-], not beginning with rejection: or sha256:"
        )
    return value


def _decimal_text(value: object) -> str:
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    raise ValueError("a decimal must be a string or a JSON number")


def _decimal(check: str) -> Any:
    def validate(value: object) -> Decimal:
        number = parse_decimal(_decimal_text(value))
        if check == "positive" and not number > 0:
            raise ValueError("must be greater than 0")
        if check == "non_negative" and number < 0:
            raise ValueError("must be at least 0")
        if check == "non_zero" and number == 0:
            raise ValueError("must not be 0")
        return number

    return validate


_DECIMAL_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": DECIMAL_PATTERN},
            {"type": "number"},
        ],
        "description": "decimal: a string or a JSON number, parsed exactly",
    },
    mode="validation",
)
_DECIMAL_OUT = PlainSerializer(format_decimal, return_type=str, when_used="always")


def _decimal_type(check: str) -> Any:
    return Annotated[
        Decimal,
        PlainValidator(_decimal(check)),
        _DECIMAL_SCHEMA,
        WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN}, mode="serialization"),
        _DECIMAL_OUT,
    ]


PositiveDecimal: TypeAlias = _decimal_type("positive")  # type: ignore[valid-type]
NonNegativeDecimal: TypeAlias = _decimal_type("non_negative")  # type: ignore[valid-type]
NonZeroDecimal: TypeAlias = _decimal_type("non_zero")  # type: ignore[valid-type]


def _integer(low: int, high: int) -> Any:
    def validate(value: object) -> int:
        if isinstance(value, JsonNumber):
            if not value.is_integer or len(value.text) > 8:
                raise ValueError("must be a JSON integer")
            number = int(value.text)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise ValueError("must be a JSON integer")
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return validate


def parse_timestamp(value: object) -> datetime:
    """Parse an RFC 3339 timestamp to an aware UTC datetime truncated to milliseconds.

    Raises:
        ValueError: not a string, not the contract's form, or not a real date/time.
    """
    if isinstance(value, datetime) and value.tzinfo is not None:
        parsed = value
    else:
        text = value if isinstance(value, str) else ""
        match = _TS_RE.fullmatch(text)
        if match is None:
            raise ValueError("must be an RFC 3339 timestamp YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)")
        zone = match.group(2)
        try:
            parsed = datetime.fromisoformat(text[:19] + ("+00:00" if zone == "Z" else zone))
        except ValueError as exc:
            raise ValueError(f"not a valid date/time: {exc}") from exc
        fraction = (match.group(1) or ".")[1:]
        parsed = parsed.replace(microsecond=int((fraction + "000")[:3]) * 1000)
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp out of range") from exc
    return utc.replace(microsecond=(utc.microsecond // 1000) * 1000)


def format_timestamp(value: datetime) -> str:
    """Write a timestamp as the contract does: ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


Id = Annotated[
    str,
    PlainValidator(_id),
    WithJsonSchema(
        {"type": "string", "pattern": ID_PATTERN, "not": {"pattern": "^(rejection:|sha256:)"}}
    ),
]
Timestamp = Annotated[
    datetime,
    PlainValidator(parse_timestamp),
    PlainSerializer(format_timestamp, return_type=str, when_used="always"),
    WithJsonSchema({"type": "string", "pattern": TIMESTAMP_PATTERN, "format": "date-time"}),
]
Leverage = Annotated[
    int,
    PlainValidator(_integer(1, 125)),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 125}),
]
SchemaVersion = Annotated[
    int,
    PlainValidator(_integer(1, 1)),
    WithJsonSchema({"type": "integer", "const": 1}),
]
Text = Annotated[str, Strict()]
Flag = Annotated[bool, Strict()]


class WireModel(BaseModel):
    """The strict base of every model of the contract."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=False)


# --- inbound ---------------------------------------------------------------------------


class Fill(WireModel):
    """One trade execution (``type`` FILL)."""

    type: Literal["FILL"]
    schemaVersion: SchemaVersion
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


Inbound = Annotated[Fill | Transfer | Mark | Marks, Field(discriminator="type")]
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
_positive = _decimal("positive")
_non_negative = _decimal("non_negative")
_schema_version = _integer(1, 1)
_leverage = _integer(1, 125)
_new_object = object.__new__
_set_attribute = object.__setattr__


def _valid_fill(clean: dict[str, Any]) -> Fill | None:
    """The Fill ``Fill.model_validate(clean)`` returns when ``clean`` breaks no rule, built
    with the model's own field validators; None when any rule may be broken (the model
    then validates it and words the errors). Only exact ``str``/``bool`` values are taken,
    so pydantic's strict-mode coercions never need copying."""
    keys = clean.keys()
    if not keys >= _FILL_REQUIRED or not keys <= _FILL_FIELD_SET:
        return None
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
            "tradeId": _id(clean["tradeId"]),
            "accountId": _id(clean["accountId"]),
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
            "correlationId": None if correlation is None else _id(correlation),
        }
    except Exception:  # any rule broken: the model says which
        return None
    fill = _new_object(Fill)
    _set_attribute(fill, "__dict__", values)
    _set_attribute(fill, "__pydantic_fields_set__", set(keys))
    _set_attribute(fill, "__pydantic_extra__", None)
    _set_attribute(fill, "__pydantic_private__", None)
    return fill


def mark_id(symbol: object, timestamp: object) -> str | None:
    """``<symbol>@<UTC ms Z>`` when the symbol and the timestamp are well formed, else None."""
    if not isinstance(symbol, str) or _SYMBOL_RE.fullmatch(symbol) is None:
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
