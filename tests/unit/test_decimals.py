"""parse_decimal / format_decimal against the contract's Decimals convention."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.core.decimals import format_decimal, parse_decimal

ACCEPTED: list[tuple[str, str]] = [
    ("0", "0"),
    ("1", "1"),
    ("-1", "-1"),
    ("60000", "60000"),
    ("0.1", "0.1"),
    ("-12.500", "-12.5"),
    ("1E+3", "1000"),
    ("1e3", "1000"),
    ("1e-3", "0.001"),
    ("2.5E-2", "0.025"),
    ("1e999", "1" + "0" * 999),
    ("0001.50", "1.5"),
    ("1234567890123456789012345678901234567890", "1234567890123456789012345678901234567890"),
    # leading zeros do not count towards the 40 significant digits
    (
        "0000000000" + "1234567890123456789012345678901234567890",
        "1234567890123456789012345678901234567890",
    ),
    ("0.0000000001234567890123456789012345678901234567890", "0.000000000123456789"),
    ("1.234567890123456789012345678901234567890", "1.234567890123456789"),  # 40 digits
]


@pytest.mark.parametrize(("text", "written"), ACCEPTED)
def test_accepted_text_parses_exactly(text: str, written: str) -> None:
    value = parse_decimal(text)
    assert isinstance(value, Decimal)
    assert value == Decimal(text)
    assert format_decimal(value) == written


REJECTED: list[str] = [
    "",
    " 1",
    "1 ",
    "1\n",
    "+1",
    "1.",
    ".5",
    "-.5",
    "1_000",
    "1,5",
    "0x10",
    "NaN",
    "nan",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "١٢٣",  # Arabic-Indic digits
    "１２３",  # fullwidth digits
    "1e",
    "1e+",
    "1e1000",  # exponent of 4 digits
    "1E0001",
    "1.5.5",
    "--1",
    "- 1",
    "1e1.5",
    "12345678901234567890123456789012345678901",  # 41 significant digits
    "1.2345678901234567890123456789012345678901",  # 41 significant digits
    "-0.00012345678901234567890123456789012345678901",  # 41 after the leading zeros
    "1234567890123456789012345678901234567890.0",  # a trailing zero is significant
]


@pytest.mark.parametrize("text", REJECTED)
def test_rejected_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_decimal(text)


@pytest.mark.parametrize("value", [1, 1.5, None, Decimal("1"), b"1"])
def test_only_strings_are_parsed(value: object) -> None:
    with pytest.raises(ValueError):
        parse_decimal(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["-0", "-0.000", "-0e5", "-0E-7"])
def test_negative_zero_reads_as_zero(text: str) -> None:
    value = parse_decimal(text)
    assert value == 0
    assert not value.is_signed()
    assert format_decimal(value) == "0"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("1E+3", "1000"),
        ("1.000", "1"),
        ("1.500", "1.5"),
        ("100", "100"),
        ("1E+1", "10"),
        ("-0", "0"),
        ("0E-30", "0"),
        ("-2.50", "-2.5"),
        ("1E-18", "0.000000000000000001"),
        # half-even to 18 places
        ("0.1234567890123456785", "0.123456789012345678"),  # ...78|5 → even 8 stays
        ("0.1234567890123456775", "0.123456789012345678"),  # ...77|5 → odd 7 rounds up
        ("0.12345678901234567851", "0.123456789012345679"),  # above the half rounds up
        ("0.0000000000000000005", "0"),
        ("0.0000000000000000015", "0.000000000000000002"),
        ("0.0000000000000000025", "0.000000000000000002"),
        ("-0.0000000000000000005", "0"),  # rounds to -0, written 0
        ("-0.1234567890123456775", "-0.123456789012345678"),
        (
            "123456789012345678901234567890.123456789012345678901",
            "123456789012345678901234567890.123456789012345679",
        ),
    ],
)
def test_format_decimal(value: str, written: str) -> None:
    assert format_decimal(Decimal(value)) == written


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_format_refuses_non_finite(value: str) -> None:
    with pytest.raises(ValueError):
        format_decimal(Decimal(value))


WRITTEN = r"^-?[0-9]+(\.[0-9]{1,18})?$"


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**30), max_value=10**30))
def test_written_text_has_no_exponent(value: Decimal) -> None:
    text = format_decimal(value)
    assert re.fullmatch(WRITTEN, text), text
    assert not text.endswith("0") or "." not in text
    assert text != "-0"
    assert abs(Decimal(text) - value) <= Decimal("0.5e-18")


@given(
    st.decimals(
        allow_nan=False,
        allow_infinity=False,
        min_value=-(10**21) + 1,
        max_value=10**21 - 1,
        places=18,
    )
)
def test_written_text_reads_back(value: Decimal) -> None:
    # at most 22 integer digits + 18 places: within the 40 significant digits read
    assert parse_decimal(format_decimal(value)) == value


def _written_in_context(value: Decimal) -> str:
    """format_decimal's general path, in MONEY with room for every digit: the reference
    its fast path (values with at most 18 places) must equal."""
    from decimal import localcontext

    from handlers.core.decimals import MONEY, WRITE_PLACES

    with localcontext(MONEY) as ctx:
        ctx.prec = max(MONEY.prec, value.adjusted() + WRITE_PLACES + 2)
        quantum = Decimal(1).scaleb(-WRITE_PLACES)
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        rounded = value.quantize(quantum) if exponent < -WRITE_PLACES else value
        if rounded.is_zero():
            return "0"
        text = format(rounded, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_the_fast_path_writes_what_the_general_one_does(value: Decimal) -> None:
    assert format_decimal(value) == _written_in_context(value)
