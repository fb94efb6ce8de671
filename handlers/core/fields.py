"""The field types of the wire models: ids, symbols, decimals, integers and timestamps as
the contract writes them, and the strict base model (:class:`WireModel`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    Strict,
    WithJsonSchema,
)

from handlers.core.decimals import DECIMAL_PATTERN, format_decimal, parse_decimal
from handlers.core.decode import JsonNumber

__all__ = [
    "ID_PATTERN",
    "SYMBOL_PATTERN",
    "TIMESTAMP_PATTERN",
    "Flag",
    "Id",
    "Leverage",
    "NonNegativeDecimal",
    "NonZeroDecimal",
    "PositiveDecimal",
    "SchemaVersion",
    "Text",
    "Timestamp",
    "WireModel",
    "checked_id",
    "decimal_check",
    "format_timestamp",
    "integer_check",
    "is_well_formed_id",
    "parse_timestamp",
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


def checked_id(value: object) -> str:
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


def decimal_check(check: str) -> Any:
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
        PlainValidator(decimal_check(check)),
        _DECIMAL_SCHEMA,
        WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN}, mode="serialization"),
        _DECIMAL_OUT,
    ]


PositiveDecimal: TypeAlias = _decimal_type("positive")  # type: ignore[valid-type]
NonNegativeDecimal: TypeAlias = _decimal_type("non_negative")  # type: ignore[valid-type]
NonZeroDecimal: TypeAlias = _decimal_type("non_zero")  # type: ignore[valid-type]


def integer_check(low: int, high: int) -> Any:
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
        if zone == "Z":  # already UTC, whole milliseconds: what the lines below return
            return parsed
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
    PlainValidator(checked_id),
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
    PlainValidator(integer_check(1, 125)),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 125}),
]
SchemaVersion = Annotated[
    int,
    PlainValidator(integer_check(1, 1)),
    WithJsonSchema({"type": "integer", "const": 1}),
]
Text = Annotated[str, Strict()]
Flag = Annotated[bool, Strict()]


class WireModel(BaseModel):
    """The strict base of every model of the contract."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=False)
