"""The FILL checks' shortcuts give exactly what the general code gives.

``is_multiple`` divides in MONEY's own context's methods when MONEY's precision is the
one it needs; ``parse_timestamp`` returns a ``Z`` timestamp as soon as it is UTC and
whole milliseconds; ``parse_decimal`` counts digits only in a text longer than the
limit; each is compared here with the code it shortcuts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.core.decimals import _DECIMAL_RE, MONEY, parse_decimal
from handlers.core.fields import _TS_RE, parse_timestamp
from handlers.core.validation import is_multiple


def _is_multiple_reference(value: Decimal, step: Decimal) -> bool:
    with localcontext(MONEY) as ctx:
        ctx.prec = max(MONEY.prec, value.adjusted() - step.adjusted() + 5)
        try:
            ratio = value / step
            return ratio == ratio.to_integral_value()
        except InvalidOperation:
            return False


_DECIMALS = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: abs(d.adjusted()) < 400
)
_STEPS = st.one_of(
    _DECIMALS.filter(lambda d: d > 0),
    st.sampled_from([Decimal(t) for t in ("0.1", "0.001", "1", "5", "0.25", "1E-20", "3")]),
)


@settings(max_examples=3000)
@given(_DECIMALS, _STEPS)
def test_is_multiple_is_the_general_division(value: Decimal, step: Decimal) -> None:
    assert is_multiple(value, step) is _is_multiple_reference(value, step)


@settings(max_examples=1000)
@given(st.integers(-(10**40), 10**40), _STEPS, st.integers(-60, 60))
def test_is_multiple_of_exact_multiples(n: int, step: Decimal, shift: int) -> None:
    value = (step * n).scaleb(shift)
    assert is_multiple(value, step) is _is_multiple_reference(value, step)


def _parse_timestamp_reference(text: str) -> datetime:
    match = _TS_RE.fullmatch(text)
    if match is None:
        raise ValueError("pattern")
    zone = match.group(2)
    parsed = datetime.fromisoformat(text[:19] + ("+00:00" if zone == "Z" else zone))
    fraction = (match.group(1) or ".")[1:]
    parsed = parsed.replace(microsecond=int((fraction + "000")[:3]) * 1000)
    utc = parsed.astimezone(UTC)
    return utc.replace(microsecond=(utc.microsecond // 1000) * 1000)


@settings(max_examples=2000)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(["", ".1", ".12", ".123", ".1234", ".999999", ".0000000001"]),
    st.sampled_from(["Z", "+00:00", "-00:00", "+02:00", "-05:30", "+14:00"]),
)
def test_parse_timestamp_is_the_general_conversion(
    when: datetime, fraction: str, zone: str
) -> None:
    text = when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone
    try:
        want: object = _parse_timestamp_reference(text)
    except (ValueError, OverflowError) as exc:
        want = type(exc)
    try:
        got: object = parse_timestamp(text)
    except ValueError as exc:
        got = ValueError if "out of range" not in str(exc) else OverflowError
    assert got == want
    if isinstance(got, datetime) and isinstance(want, datetime):
        assert got.tzinfo is want.tzinfo and repr(got) == repr(want)


def _parse_decimal_reference(text: str, max_digits: int) -> Decimal:
    match = _DECIMAL_RE.fullmatch(text)
    if match is None or not text.isascii():
        raise ValueError("pattern")
    digits = (match.group(1) + (match.group(2) or "")).lstrip("0")
    if len(digits) > max_digits:
        raise ValueError("digits")
    value = Decimal(text)
    return value + 0 if value.is_zero() else value


@settings(max_examples=3000)
@given(
    st.from_regex(
        r"-?0{0,3}[0-9]{1,45}(\.[0-9]{1,45}0{0,3})?([eE][-+]?[0-9]{1,3})?", fullmatch=True
    ),
    st.sampled_from([5, 18, 40, 60]),
)
def test_parse_decimal_counts_digits_as_before(text: str, max_digits: int) -> None:
    try:
        want: object = str(_parse_decimal_reference(text, max_digits))
    except ValueError:
        want = ValueError
    try:
        got: object = str(parse_decimal(text, max_digits))
    except ValueError:
        got = ValueError
    assert got == want
