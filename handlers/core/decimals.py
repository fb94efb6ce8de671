"""Exact decimal text: the contract's one rule for reading and writing money.

Read: ``^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]{1,3})?$``, at most 40 significant digits
(leading zeros do not count). Arithmetic: :data:`MONEY`, 60 significant digits, half-even,
traps on invalid operations. Written: no exponent, trailing zeros stripped, rounded
half-even to at most 18 decimal places (:func:`format_decimal`).
"""

from __future__ import annotations

import re
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

__all__ = [
    "DECIMAL_PATTERN",
    "MAX_SIGNIFICANT_DIGITS",
    "MONEY",
    "WRITE_PLACES",
    "format_decimal",
    "m_abs",
    "m_add",
    "m_div",
    "m_integral",
    "m_minus",
    "m_mul",
    "m_sub",
    "parse_decimal",
    "stored",
]

DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?$"
_DECIMAL_RE = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?(?:[eE][-+]?[0-9]{1,3})?")
MAX_SIGNIFICANT_DIGITS = 40
WRITE_PLACES = 18
_QUANTUM = Decimal(1).scaleb(-WRITE_PLACES)
_ZERO = Decimal(0)

#: The arithmetic context of every money computation: 60 significant digits, half-even,
#: and an exponent range wide enough for any accepted input (|exponent| ≤ 999 + 40 digits).
MONEY = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

# MONEY's operations as functions of an explicit context: the same results as the
# operators inside ``localcontext(MONEY)``, without switching the thread's context (about
# 1 µs a switch). A private copy, so MONEY's own flags stay untouched; flags are never read.
_CALC = MONEY.copy()
m_add = _CALC.add
m_sub = _CALC.subtract
m_mul = _CALC.multiply
m_div = _CALC.divide
m_abs = _CALC.abs
m_minus = _CALC.minus
m_integral = _CALC.to_integral_value
_m_quantize = _CALC.quantize
_m_normalize = _CALC.normalize
#: Values with ``adjusted()`` at most this have ≤ 59 digits at 18 places: MONEY holds them.
_FAST_ADJUSTED = MONEY.prec - WRITE_PLACES - 2


def parse_decimal(text: str, max_digits: int = MAX_SIGNIFICANT_DIGITS) -> Decimal:
    """Parse decimal text exactly (never through float).

    ``max_digits`` is the contract's 40 for what the app reads from messages; documents the
    app wrote itself (≤ 18 places, any magnitude) are read back with a larger limit.

    Raises:
        ValueError: the text does not match the contract's pattern or has more than
            ``max_digits`` significant digits.
    """
    if not isinstance(text, str):
        raise ValueError("a decimal must be a string or a JSON number")
    match = _DECIMAL_RE.fullmatch(text)
    if match is None or not text.isascii():
        raise ValueError(f"not a decimal: {text[:40]!r}")
    if len(text) > max_digits:  # else it has at most max_digits digits of any kind
        digits = (match.group(1) + (match.group(2) or "")).lstrip("0")
        if len(digits) > max_digits:
            raise ValueError(f"more than {max_digits} significant digits")
    value = Decimal(text)
    return value + 0 if value.is_zero() else value  # -0 reads as 0


def format_decimal(value: Decimal) -> str:
    """Write a decimal as the contract does: no exponent, ≤ 18 places, no trailing zeros.

    Raises:
        ValueError: the value is NaN or infinite.
    """
    if not value.is_finite():
        raise ValueError("NaN and Infinity cannot be written")
    if value.as_tuple().exponent >= -WRITE_PLACES:  # type: ignore[operator]
        # Nothing to round: 'f' without a precision writes the value exactly, whatever
        # the context (the general path below, without its context).
        if value.is_zero():
            return "0"
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    with localcontext(MONEY) as ctx:
        ctx.prec = max(MONEY.prec, value.adjusted() + WRITE_PLACES + 2)
        rounded = value.quantize(_QUANTUM) if value.as_tuple().exponent < -WRITE_PLACES else value  # type: ignore[operator]
        if rounded.is_zero():
            return "0"
        text = format(rounded, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def stored(value: Decimal) -> Decimal:
    """Round a stored value as documents keep it: half-even to 18 places, trailing zeros
    stripped (``normalize`` in MONEY), -0 → 0."""
    if value.is_zero():
        return _ZERO
    if value.adjusted() <= _FAST_ADJUSTED:
        # Quantizing to 18 places is exact or rounds half-even, within MONEY's 60 digits
        # (≤ 59 of them), so normalize keeps every digit: as the general path below.
        out = _m_quantize(value, _QUANTUM)
        return _m_normalize(out) if not out.is_zero() else _ZERO
    with localcontext(MONEY) as ctx:
        ctx.prec = max(MONEY.prec, value.adjusted() + WRITE_PLACES + 2)
        out = value.quantize(_QUANTUM) if value.as_tuple().exponent < -WRITE_PLACES else value  # type: ignore[operator]
    return out.normalize(MONEY) if not out.is_zero() else _ZERO
