"""The pure path's fast paths give exactly what the general paths give.

Each fast path (decode, FILL validation, stored rounding, bracket lookup, per-asset
valuation memo) is compared with the general code it shortcuts, over the hostile-input
corpus and generated values.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from handlers.core import decode as decode_module
from handlers.core.catalog import Catalog, load_catalog
from handlers.core.contracts import INBOUND, Fill, _valid_fill, validate_inbound
from handlers.core.decimals import MONEY, WRITE_PLACES, stored
from handlers.core.decode import _BASE64_RE, BodyError, _is_base64, decode_body
from handlers.core.state import Ledger, Wallet, apply_fill, apply_mark
from handlers.core.valuation import value
from handlers.settings import SHIPPED_CATALOG

CATALOG: Catalog = load_catalog(SHIPPED_CATALOG)


def _corpus() -> Iterator[bytes]:
    from tests.unit.test_hostile_input import all_cases

    for case in all_cases():
        for body, _expect in case.variants():
            yield body


def _reference_decode(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> Any:
    """decode_body with its fast paths switched off (the regex; the full JSON decoding)."""

    class _Never:
        def decode(self, text: str) -> Any:
            raise ValueError("fast path off")

    with monkeypatch.context() as m:
        m.setattr(decode_module, "_FAST_DECODER", _Never())
        m.setattr(decode_module, "_is_base64", lambda c: _BASE64_RE.fullmatch(c) is not None)
        return _outcome(decode_body, raw)


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except BodyError as exc:
        return ("error", exc.code, exc.message)


def test_decode_fast_path_matches_the_full_decoding_on_the_hostile_corpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked = 0
    for raw in _corpus():
        assert _outcome(decode_body, raw) == _reference_decode(raw, monkeypatch), raw[:200]
        checked += 1
    assert checked > 10_000


@settings(max_examples=500)
@given(st.binary(max_size=24).map(lambda b: b.translate(bytes.maketrans(b"\x00\x01\x02", b"=A+"))))
def test_base64_check_is_the_regex(candidate: bytes) -> None:
    assert _is_base64(candidate) == (_BASE64_RE.fullmatch(candidate) is not None)


@pytest.mark.parametrize(
    "candidate",
    [b"QQ==", b"QUI=", b"QUJD", b"Q===", b"QQ=", b"Q", b"QQ=A", b"=QQQ", b"QU I=", b"QU-_"],
)
def test_base64_check_edges(candidate: bytes) -> None:
    assert _is_base64(candidate) == (_BASE64_RE.fullmatch(candidate) is not None)


def _validated(clean: dict[str, Any]) -> Any:
    try:
        return INBOUND.validate_python(clean)
    except ValidationError:
        return None


def _check_fill_fast_path(obj: Any) -> bool:
    """True when the fast path took it; asserts it agrees with the model either way."""
    if not isinstance(obj, dict):
        return False
    clean = {k: v for k, v in obj.items() if not str(k).startswith("$")}
    fast = _valid_fill(clean)
    model = _validated(clean)
    if fast is None:
        return False
    assert isinstance(model, Fill), clean
    assert fast == model
    assert fast.model_fields_set == model.model_fields_set
    assert fast.model_dump(mode="json") == model.model_dump(mode="json")
    assert list(fast.__dict__) == list(model.__dict__)
    return True


def test_fill_fast_path_agrees_with_the_model_on_the_hostile_corpus() -> None:
    taken = 0
    for raw in _corpus():
        try:
            obj = decode_body(raw).obj
        except BodyError:
            continue
        taken += _check_fill_fast_path(obj)
    assert taken > 100


_FILL = {
    "type": "FILL",
    "schemaVersion": 1,
    "tradeId": "t-1",
    "accountId": "acc-1",
    "symbol": "BTCUSDT",
    "side": "BUY",
    "quantity": "0.010",
    "price": "60000.1",
    "leverage": 10,
    "executedAt": "2024-10-01T02:00:00.1234+02:00",
}
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-200, 200),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            "",
            "FILL",
            "BUY",
            "SELL",
            "CROSS",
            "ISOLATED",
            "BOTH",
            "LONG",
            "SHORT",
            "1",
            "0",
            "-0",
            "1e3",
            "0.0001",
            "60000.1",
            "1.",
            "+1",
            "NaN",
            "１",
            "2024-10-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "rejection:x",
            "sha256:y",
            "a" * 65,
        ]
    ),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=1500, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*Fill.model_fields, "extra", "$host"]), _VALUES, max_size=4),
    st.lists(st.sampled_from(list(_FILL)), max_size=2),
    st.booleans(),
)
def test_fill_fast_path_agrees_with_the_model(
    changes: dict[str, Any], drop: list[str], numbers_as_json: bool
) -> None:
    body = {k: v for k, v in {**_FILL, **changes}.items() if k not in drop}
    text = json.dumps(body)
    if numbers_as_json:
        text = text.replace('"0.010"', "0.010").replace('"60000.1"', "6.00001e4")
    try:
        obj = decode_body(base64.b64encode(text.encode())).obj
    except BodyError:
        return
    _check_fill_fast_path(obj)
    # and through the public entry point: the same model or the same errors
    clean = {k: v for k, v in obj.items() if not k.startswith("$")}
    try:
        got: Any = validate_inbound(obj)
    except ValidationError as exc:
        got = ("error", [e["type"] for e in exc.errors()])
    try:
        want: Any = INBOUND.validate_python(clean)
    except ValidationError as exc:
        want = ("error", [e["type"] for e in exc.errors()])
    assert got == want


def _stored_reference(value: Decimal) -> Decimal:
    """stored() as it was written before its fast path."""
    quantum = Decimal(1).scaleb(-WRITE_PLACES)
    with localcontext(MONEY) as ctx:
        ctx.prec = max(MONEY.prec, value.adjusted() + WRITE_PLACES + 2)
        out = value.quantize(quantum) if value.as_tuple().exponent < -WRITE_PLACES else value  # type: ignore[operator]
    return out.normalize(MONEY) if not out.is_zero() else Decimal(0)


@settings(max_examples=2000)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: abs(d.adjusted()) < 900
    )
)
def test_stored_fast_path_is_the_general_rounding(number: Decimal) -> None:
    got, want = stored(number), _stored_reference(number)
    assert got == want and str(got) == str(want)


@pytest.mark.parametrize(
    "text",
    [
        "-1e-20",
        "1e-19",
        "0.0000000000000000005",
        "-0.0000000000000000015",
        "1e40",
        "1e41",
        "123456789012345678901234567890.1234567890123456789",
        "-0",
        "0E-30",
        "5E+3",
        "1.000",
    ],
)
def test_stored_edges(text: str) -> None:
    got, want = stored(Decimal(text)), _stored_reference(Decimal(text))
    assert got == want and str(got) == str(want)


def test_bracket_lookup_is_the_linear_scan() -> None:
    rng = random.Random(5)
    for inst in CATALOG.instruments.values():
        points = [b.notional_cap for b in inst.brackets] + [b.notional_floor for b in inst.brackets]
        points += [Decimal(rng.uniform(0, 3e9)).quantize(Decimal("0.01")) for _ in range(300)]
        for notional in points:
            want = next((b for b in inst.brackets if notional < b.notional_cap), inst.brackets[-1])
            assert inst.bracket_for(notional) is want
        for leverage in range(0, 130):
            allowed = [b for b in inst.brackets if b.max_leverage >= leverage]
            assert inst.leverage_cap(leverage) == (allowed[-1].notional_cap if allowed else 0)


def test_valuation_memo_gives_what_a_fresh_valuation_gives() -> None:
    """Replaying a random stream, every valuation (memo warm) equals one with no memo."""
    rng = random.Random(11)
    ratio = Decimal("0.8")
    fresh_catalog = Catalog(CATALOG.instruments)
    ledgers: dict[str, Ledger] = {}
    t0 = datetime(2024, 10, 1, tzinfo=UTC)
    for n in range(600):
        account = f"a{rng.randrange(8)}"
        ledger = ledgers.get(account) or Ledger(
            {"USDT": Wallet("USDT", Decimal(20000)), "BTC": Wallet("BTC", Decimal("0.5"))}
        )
        symbol = rng.choice(["BTCUSDT", "ETHUSDT", "BTCUSD_PERP"])
        inst = CATALOG.instruments[symbol]
        price = {"BTCUSDT": 60000, "ETHUSDT": 2500, "BTCUSD_PERP": 60000}[symbol]
        fill = Fill(
            type="FILL",
            schemaVersion=1,
            tradeId=f"t{n}",
            accountId=account,
            symbol=symbol,
            side=rng.choice(["BUY", "SELL"]),
            quantity=inst.step_size * rng.randint(1, 400) * (10 if symbol == "BTCUSDT" else 1),
            price=Decimal(price + rng.randint(-price // 20, price // 20)),
            leverage=rng.choice([5, 20, 75]),
            marginMode="CROSS" if symbol != "ETHUSDT" else "ISOLATED",
            executedAt=t0,
        )
        try:
            ledger = apply_fill(ledger, fill, inst, None)
        except Exception:
            continue
        if n % 7 == 0:
            ledger = apply_mark(
                ledger, symbol, Decimal(price + rng.randint(-price // 6, price // 6)), t0
            )
        warm = value(ledger, CATALOG, ratio)
        fresh_catalog.valuation_cache.clear()
        cold = value(ledger, fresh_catalog, ratio)
        assert warm == cold
        ledgers[account] = ledger
    assert len(CATALOG.valuation_cache) > 0


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(["BTCUSDT", "ETHUSDT", "BTCUSD_PERP"]),
    st.integers(-(10**7), 10**7).filter(bool),
    st.integers(1, 10**6),
    st.integers(1, 10**6),
    st.integers(-(10**9), 10**9),
    st.integers(0, 10**6),
    st.integers(-(10**6), 10**6),
)
def test_one_leg_liquidation_is_the_general_formula(
    symbol: str, qty: int, entry: int, mark: int, wallet: int, tmm: int, upnl: int
) -> None:
    from handlers.core import margin

    inst = CATALOG.instruments[symbol]
    scale = Decimal("0.001")
    leg = margin.Leg(Decimal(qty) * scale, Decimal(entry) / 10)
    args = (
        Decimal(mark) / 10,
        Decimal(wallet) * scale,
        Decimal(tmm) * scale,
        Decimal(upnl) * scale,
    )
    assert margin._one_leg(inst, leg, *args) == margin._legs(inst, [leg], *args)
