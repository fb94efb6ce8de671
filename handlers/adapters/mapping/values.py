"""Values as documents store them: decimal strings, timestamps, risk states, alerts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_args

from handlers.core.contracts import Alert, format_timestamp, parse_timestamp
from handlers.core.decimals import MONEY, WRITE_PLACES, format_decimal, parse_decimal
from handlers.core.documents import STORED_DIGITS
from handlers.core.orders import MarginMode, OrderType, PositionSide, Side
from handlers.core.state import RiskState
from handlers.errors import UnreadableDocument

__all__ = [
    "MARGIN_MODES",
    "ORDER_SIDES",
    "ORDER_TYPES",
    "POSITION_SIDES",
    "SCHEMA_VERSION",
    "TRADING_STATES",
    "alerts_json",
    "dec",
    "dec_or_none",
    "decimal_text",
    "figure_text",
    "header",
    "opt_dec",
    "read_alerts",
    "reading",
    "risk",
    "shape",
    "stamp_text",
    "stored_decimal",
    "stored_time",
    "ts",
]

SCHEMA_VERSION = 1
_RISK = ("NORMAL", "MARGIN_CALL", "LIQUIDATION")
#: The values an account document's ``tradingState`` and open orders' enums may hold.
TRADING_STATES: tuple[str, ...] = ("ACTIVE", "REDUCING", "HALTED")
ORDER_SIDES: tuple[Side, ...] = get_args(Side)
ORDER_TYPES: tuple[OrderType, ...] = get_args(OrderType)
MARGIN_MODES: tuple[MarginMode, ...] = get_args(MarginMode)
POSITION_SIDES: tuple[PositionSide, ...] = get_args(PositionSide)


def dec_or_none(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


def dec(raw: object, what: str) -> Decimal:
    if not isinstance(raw, str):
        raise UnreadableDocument(f"{what} must be a decimal string")
    try:
        return parse_decimal(raw, max_digits=STORED_DIGITS)
    except ValueError as exc:
        raise UnreadableDocument(f"{what}: {exc}") from exc


def opt_dec(raw: object, what: str) -> Decimal | None:
    return None if raw is None else dec(raw, what)


def ts(raw: object, what: str) -> datetime:
    try:
        return parse_timestamp(raw)
    except ValueError as exc:
        raise UnreadableDocument(f"{what}: {exc}") from exc


def risk(raw: object, what: str) -> RiskState:
    if raw not in _RISK:
        raise UnreadableDocument(f"{what}: unknown risk state {raw!r}")
    return raw  # type: ignore[return-value]


def header(doc_id: str, kind: str, **partition: str) -> dict[str, Any]:
    """The fields every document starts with: its id, its partition key (one keyword),
    its ``type`` and ``schemaVersion``."""
    return {"id": doc_id, **partition, "type": kind, "schemaVersion": SCHEMA_VERSION}


def shape(doc: Mapping[str, Any], kind: str, versions: tuple[int, ...] = (SCHEMA_VERSION,)) -> None:
    if doc.get("type") != kind or doc.get("schemaVersion") not in versions:
        raise UnreadableDocument(
            f"{kind} document of type {doc.get('type')!r} version {doc.get('schemaVersion')!r}"
        )


def alerts_json(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """Alerts as stored in documents (JSON mode)."""
    return [a.model_dump(mode="json") for a in alerts]


def read_alerts(raw: object) -> tuple[Alert, ...]:
    if not isinstance(raw, list):
        raise UnreadableDocument("alerts must be a list")
    return tuple(Alert.model_validate(a, strict=False) for a in raw)


@contextlib.contextmanager
def reading(
    what: str,
    doc: Mapping[str, Any] | None = None,
    kind: str = "",
    versions: tuple[int, ...] = (SCHEMA_VERSION,),
) -> Iterator[None]:
    """Read a stored document's fields: a missing key or item, or a value of the wrong kind,
    becomes :class:`UnreadableDocument` naming ``what``; with ``doc`` and ``kind``, a
    document of another ``type`` or ``schemaVersion`` is refused first.

    Raises:
        UnreadableDocument: another type or version, or a wrong shape.
    """
    if doc is not None:
        shape(doc, kind, versions)
    try:
        yield
    except UnreadableDocument:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise UnreadableDocument(f"{what}: {exc!r}") from exc


# --- remembered conversions ---------------------------------------------------------------
# A document's figures and times repeat: every holder of a symbol carries its mark's time,
# most positions a "0" somewhere, an unchanged position the same texts it was read from.
# Each conversion below is a pure function of its key, so a remembered result is the one
# the conversion gives; the memos are bounded (cleared when full) and keep successes only.

_MEMO_SIZE = 8192
_quantize = MONEY.copy().quantize  # a private copy: MONEY's flags stay untouched
_QUANTUM = Decimal(1).scaleb(-WRITE_PLACES)
#: Values with ``adjusted()`` at most this have ≤ 59 digits at 18 places: MONEY holds them.
_FAST_ADJUSTED = MONEY.prec - WRITE_PLACES - 2
#: Texts longer than this are not remembered (a hostile "1e999" writes 1,000 digits).
_MEMO_TEXT = 64
_DECIMALS: dict[str, Decimal] = {}
_TIMES: dict[str, datetime] = {}
_TEXTS: dict[Decimal, str] = {}
_STAMPS: dict[datetime, str] = {}


def stored_decimal(raw: object) -> Decimal | None:
    """:func:`dec` of a stored decimal string, remembered; None where :func:`dec` would
    raise (or for anything but a str), so the caller can let :func:`dec` say why."""
    if type(raw) is not str:
        return None
    found = _DECIMALS.get(raw)
    if found is None:
        try:
            found = parse_decimal(raw, max_digits=STORED_DIGITS)
        except ValueError:
            return None
        if len(raw) <= _MEMO_TEXT:
            if len(_DECIMALS) >= _MEMO_SIZE:
                _DECIMALS.clear()
            _DECIMALS[raw] = found
    return found


def stored_time(raw: object) -> datetime | None:
    """:func:`ts` of a stored timestamp string, remembered; None where :func:`ts` would
    raise (or for anything but a str)."""
    if type(raw) is not str:
        return None
    found = _TIMES.get(raw)
    if found is None:
        try:
            found = parse_timestamp(raw)
        except ValueError:
            return None
        if len(raw) <= _MEMO_TEXT:
            if len(_TIMES) >= _MEMO_SIZE:
                _TIMES.clear()
            _TIMES[raw] = found
    return found


def figure_text(value: Decimal) -> str:
    """:func:`~handlers.core.decimals.format_decimal`'s text, by shorter ways for a value
    below 1e41: one of at most 18 places written with 'f' (exact); one of more rounded
    half-even to 18 places in MONEY first (≤ 59 digits: rounded as ``format_decimal``
    rounds); trailing zeros stripped.

    Raises:
        ValueError: the value is NaN or infinite.
    """
    if type(value) is not Decimal or not value.is_finite() or value.adjusted() > _FAST_ADJUSTED:
        return format_decimal(value)
    if value.is_zero():
        return "0"
    if value.adjusted() >= -WRITE_PLACES:  # else 'f' would write its many leading zeros
        text = format(value, "f")
        dot = text.find(".")
        if dot < 0:
            return text
        if len(text) - dot - 1 <= WRITE_PLACES:
            return text.rstrip("0").rstrip(".")
    rounded = _quantize(value, _QUANTUM)
    if rounded.is_zero():
        return "0"
    return format(rounded, "f").rstrip("0").rstrip(".")


def decimal_text(value: Decimal) -> str:
    """:func:`figure_text`, remembered by value, for the stored figures that repeat (its
    text depends on the number alone: equal values, whatever their exponents, write the
    same).

    Raises:
        ValueError: the value is NaN or infinite.
    """
    if type(value) is not Decimal or not value.is_finite():
        return format_decimal(value)
    found = _TEXTS.get(value)
    if found is None:
        found = figure_text(value)
        if len(found) <= _MEMO_TEXT:
            if len(_TEXTS) >= _MEMO_SIZE:
                _TEXTS.clear()
            _TEXTS[value] = found
    return found


def stamp_text(value: datetime) -> str:
    """:func:`~handlers.core.contracts.format_timestamp`, remembered for UTC datetimes
    (equal ones have equal fields, so write the same text)."""
    if type(value) is not datetime or value.tzinfo is not UTC:
        return format_timestamp(value)
    found = _STAMPS.get(value)
    if found is None:
        found = format_timestamp(value)
        if len(_STAMPS) >= _MEMO_SIZE:
            _STAMPS.clear()
        _STAMPS[value] = found
    return found
