"""The CPython floor of a FILL: the least work any correct implementation does per fill.

A straight-line kernel over the same stream as :mod:`bench.pure` (one-way CROSS fills on
BTCUSDT, ETHUSDT and BTCUSD_PERP, marks every 1,000 fills): no classes, no views, no
caches, no error messages, every operation a bound method of the MONEY context. It does
a strict subset of what the contract asks of a fill — base64, JSON with the duplicate-key
check, the field rules, the catalog rules, the position and wallet update rounded as
documents store it, the settle asset's margin figures and each cross position's
liquidation price, the fill alerts and the risk state — and leaves out what a real
implementation needs besides (hedge and isolated modes, transfers, rejection paths,
reason texts, the account document, records, alerts' content, the digest).

Before timing, it checks itself against the engine (:mod:`handlers.core`): on a sample of
fills every figure it computes must equal the engine's, written to 18 places — so the
kernel is the real computation, not a cheaper one. It prints one JSON document: CPU µs per
fill of the kernel and of its parts, and the fills/s per core that bounds any CPython
implementation of the pure path on this machine.

    .venv/bin/python -m bench.bound [--fills 100000] [--accounts 1000] [--runs 3] [--check 5000]
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import re
import statistics
import sys
import time
from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench.pure import MARK_EVERY, SYMBOLS, stream
from handlers.core.catalog import Catalog, Instrument, load_catalog
from handlers.core.contracts import Fill, validate_inbound
from handlers.core.decimals import MONEY, format_decimal, stored
from handlers.core.decode import decode_body
from handlers.core.state import Ledger, Wallet, apply_fill, apply_mark
from handlers.core.valuation import value
from handlers.settings import SHIPPED_CATALOG

CTX = MONEY.copy()
add, sub, mul, div, neg = CTX.add, CTX.subtract, CTX.multiply, CTX.divide, CTX.minus
ZERO = Decimal(0)
ONE = Decimal(1)
KEYS = frozenset(Fill.model_fields)  # the contract's FILL fields, from its model
ID = re.compile(r"[A-Za-z0-9._:-]{1,64}").fullmatch
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?").fullmatch
CALL_RATIO = Decimal("0.8")
LARGE = {"USDT": Decimal(1000000), "BTC": Decimal(20)}
LIMIT = {"USDT": Decimal(10000000), "BTC": Decimal(200)}
START_BALANCE = {"USDT": Decimal(100000), "BTC": Decimal(5)}


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


JSON = json.JSONDecoder(object_pairs_hook=_pairs, parse_float=str, parse_int=int)


class Spec:
    """An instrument's numbers as plain attributes (built once)."""

    __slots__ = (
        "amount",
        "asset",
        "band",
        "caps",
        "cs",
        "inverse",
        "lev_caps",
        "max_lev",
        "max_qty",
        "min_notional",
        "min_qty",
        "mmr",
        "step",
        "tick",
    )

    def __init__(self, inst: Instrument) -> None:
        self.asset = inst.settle_asset
        self.cs = inst.contract_size
        self.inverse = inst.is_inverse
        self.tick, self.step = inst.tick_size, inst.step_size
        self.min_qty, self.max_qty = inst.min_qty, inst.max_qty
        self.min_notional, self.max_lev = inst.min_notional, inst.max_leverage
        self.band = inst.price_band
        self.caps = inst.caps
        self.mmr = [b.maint_margin_ratio for b in inst.brackets]
        self.amount = [b.maint_amount for b in inst.brackets]
        self.lev_caps = inst.leverage_caps


def _bracket(spec: Spec, notional: Decimal) -> int:
    i = bisect_right(spec.caps, notional)
    return i if i < len(spec.caps) else len(spec.caps) - 1


def _liq(
    spec: Spec, qty: Decimal, entry: Decimal, mark: Decimal, base: Decimal
) -> tuple[Decimal | None, bool]:
    """One-leg liquidation price (cross: ``base`` = cross wallet − other MM + other uPnL),
    with the engine's bracket check; (price, falls_to) or (None, False)."""
    cs, inverse = spec.cs, spec.inverse
    size = mul(abs(qty), cs)
    qcs = mul(qty, cs)
    terms = div(qcs, entry) if inverse else mul(qcs, entry)
    b = _bracket(spec, div(size, mark) if inverse else mul(size, mark))
    seen: dict[int, tuple[Decimal | None, bool]] = {}
    result: tuple[Decimal | None, bool] = (None, False)
    for _ in range(10):
        full = add(base, spec.amount[b])
        if inverse:
            num = add(mul(size, spec.mmr[b]), qcs)
            den = add(full, terms)
        else:
            num = sub(full, terms)
            den = sub(mul(size, spec.mmr[b]), qcs)
        if den == 0:
            return (None, False)
        price = div(num, den)
        if not price > 0:
            return (None, False)
        result = (price, den < 0 if not inverse else num > 0)
        seen[b] = result
        nb = _bracket(spec, div(size, price) if inverse else mul(size, price))
        if nb == b:
            return result
        if nb in seen:
            return seen[max(b, nb)]
        b = nb
    return result


class Account:
    """Balances by asset; positions by symbol: [qty, entry, leverage, last price, mark,
    mark time]; risk state by asset."""

    __slots__ = ("balance", "positions", "state")

    def __init__(self) -> None:
        self.balance = dict(START_BALANCE)
        self.positions: dict[str, list[Any]] = {}
        self.state = {"USDT": "NORMAL", "BTC": "NORMAL"}


def fill(
    body: bytes,
    accounts: dict[str, Account],
    specs: dict[str, Spec],
    marks: dict[str, tuple[Decimal, datetime]],
) -> tuple[dict[str, Any], list[str]]:
    """One fill through the kernel: its figures (for the check) and its alert types.

    Raises:
        ValueError: a body the kernel does not cover (it has no rejection path).
    """
    # decode
    text = base64.b64decode(body, validate=True).decode("utf-8")
    obj = JSON.decode(text)
    # validate: the field rules
    if type(obj) is not dict or not obj.keys() <= KEYS or obj["type"] != "FILL":
        raise ValueError("not a FILL the kernel covers")
    if obj["schemaVersion"] != 1 or type(obj["schemaVersion"]) is not int:
        raise ValueError("schemaVersion")
    account_id = obj["accountId"]
    if not (ID(obj["tradeId"]) and ID(account_id)):
        raise ValueError("id")
    spec = specs[obj["symbol"]]
    symbol = obj["symbol"]
    side = obj["side"]
    qtext, ptext = obj["quantity"], obj["price"]
    if not (NUMBER(qtext) and NUMBER(ptext)) or side not in ("BUY", "SELL"):
        raise ValueError("fields")
    qty_in, price = Decimal(qtext), Decimal(ptext)
    lev = obj["leverage"]
    if type(lev) is not int or not 1 <= lev <= 125 or obj.get("marginMode", "CROSS") != "CROSS":
        raise ValueError("leverage or mode")
    if obj.get("positionSide", "BOTH") != "BOTH" or obj.get("reduceOnly", False):
        raise ValueError("hedge or reduce-only")
    fee = Decimal(obj["fee"]) if "fee" in obj else ZERO
    at = datetime.fromisoformat(obj["executedAt"]).astimezone(UTC)
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)
    if not (qty_in > 0 and price > 0) or fee < 0:
        raise ValueError("signs")
    # validate: the catalog rules
    notional_in = (
        div(mul(qty_in, spec.cs), price) if spec.inverse else mul(mul(qty_in, spec.cs), price)
    )
    if (
        CTX.remainder(price, spec.tick) != 0
        or CTX.remainder(qty_in, spec.step) != 0
        or not spec.min_qty <= qty_in <= spec.max_qty
        or notional_in < spec.min_notional
        or lev > spec.max_lev
    ):
        raise ValueError("catalog rule")
    # state transition: one-way, cross
    account = accounts.get(account_id)
    if account is None:
        account = accounts[account_id] = Account()
    asset = spec.asset
    delta = qty_in if side == "BUY" else neg(qty_in)
    held = account.positions.get(symbol)
    qty, entry = (held[0], held[1]) if held else (ZERO, price)
    realized = ZERO
    if qty == 0 or (qty > 0) == (delta > 0):
        a, b = abs(qty), qty_in
        if a != 0:
            entry = (
                div(add(a, b), add(div(a, entry), div(b, price)))
                if spec.inverse
                else div(add(mul(a, entry), mul(b, price)), add(a, b))
            )
        else:
            entry = price
        qty = add(qty, delta)
        leverage = lev
    else:
        closing = min(qty_in, abs(qty))
        signed = closing if qty > 0 else neg(closing)
        size = mul(signed, spec.cs)
        realized = (
            mul(size, sub(div(ONE, entry), div(ONE, price)))
            if spec.inverse
            else mul(size, sub(price, entry))
        )
        rest = sub(qty_in, closing)
        qty = add(qty, neg(signed))
        leverage = held[2] if held else lev
        if rest > 0:
            qty, entry, leverage = (rest if delta > 0 else neg(rest)), price, lev
    if held and held[0] != 0 and held[4] is not None:
        mark_price, mark_time = held[4], held[5]
    else:
        mark_price, mark_time = marks.get(symbol, (None, None))
    account.positions[symbol] = [
        stored(qty),
        stored(entry) if qty != 0 else ZERO,
        leverage,
        price,
        mark_price,
        mark_time,
    ]
    balance = account.balance[asset] = stored(sub(add(account.balance[asset], realized), fee))
    # risk: the settle asset's cross wallet
    figures: dict[str, Any] = {}
    rows = []
    mm_sum = im_sum = upnl_sum = ZERO
    for sym, (q, e, lv, last, mk, _t) in account.positions.items():
        s = specs[sym]
        if s.asset != asset or q == 0:
            continue
        m = mk if mk is not None else last
        size = mul(abs(q), s.cs)
        notional = div(size, m) if s.inverse else mul(size, m)
        b = _bracket(s, notional)
        mm = sub(mul(notional, s.mmr[b]), s.amount[b]) if notional != 0 else ZERO
        im = div(notional, lv)
        qcs = mul(q, s.cs)
        upnl = mul(qcs, sub(div(ONE, e), div(ONE, m))) if s.inverse else mul(qcs, sub(m, e))
        mm_sum, im_sum, upnl_sum = add(mm_sum, mm), add(im_sum, im), add(upnl_sum, upnl)
        rows.append((sym, s, q, e, lv, m, notional, mm, upnl))
    mb = add(balance, upnl_sum)
    ratio = div(mm_sum, mb) if mb > 0 else None
    reached = False
    for sym, s, q, e, _lv, m, notional, mm, upnl in rows:
        base = add(sub(balance, sub(mm_sum, mm)), sub(upnl_sum, upnl))
        price_l, falls = _liq(s, q, e, m, base)
        if price_l is not None and (m <= price_l if falls else m >= price_l):
            reached = True
        figures[sym] = (notional, mm, upnl, price_l)
    if not rows:
        state = "NORMAL"
    elif ratio is None or reached or ratio >= 1:
        state = "LIQUIDATION"
    else:
        state = "MARGIN_CALL" if ratio >= CALL_RATIO else "NORMAL"
    figures["wallet"] = (mb, sub(mb, im_sum), im_sum, mm_sum, ratio)
    # alert decision
    alerts = []
    if im_sum > mb:
        alerts.append("INSUFFICIENT_MARGIN")
    mine = figures.get(symbol)
    if mine is not None:
        if mine[0] >= spec.lev_caps[leverage]:
            alerts.append("LEVERAGE_BRACKET_BREACH")
        if mine[0] > LIMIT[asset]:
            alerts.append("POSITION_LIMIT")
    stored_mark = marks.get(symbol)
    if stored_mark is not None and div(abs(sub(price, stored_mark[0])), stored_mark[0]) > spec.band:
        alerts.append("PRICE_DEVIATION")
    if notional_in >= LARGE[asset]:
        alerts.append("LARGE_TRADE")
    before = account.state[asset]
    if state != before:
        account.state[asset] = state
        if state == "MARGIN_CALL" and before == "NORMAL":
            alerts.append("MARGIN_CALL")
        elif state == "LIQUIDATION":
            alerts.append("LIQUIDATION_RISK")
        elif state == "NORMAL":
            alerts.append("RISK_RECOVERED")
    return figures, alerts


def _mark_round(
    accounts: dict[str, Account], marks: dict[str, tuple[Decimal, datetime]], at: datetime
) -> None:
    for symbol, (base, _, _) in SYMBOLS.items():
        marks[symbol] = (Decimal(base), at)
    for account in accounts.values():
        for symbol, row in account.positions.items():
            row[4], row[5] = marks[symbol]


def check(bodies: list[bytes], catalog: Catalog, specs: dict[str, Spec]) -> int:
    """Run the kernel and the engine side by side over ``bodies``; every figure the
    kernel computes must equal the engine's at 18 places.

    Raises:
        AssertionError: a figure differs (the kernel is not the real computation).
    """
    accounts: dict[str, Account] = {}
    ledgers: dict[str, Ledger] = {}
    marks: dict[str, tuple[Decimal, datetime]] = {}
    at = datetime(2024, 10, 1, tzinfo=UTC)
    compared = 0
    for n, body in enumerate(bodies):
        figures, _ = fill(body, accounts, specs, marks)
        event = validate_inbound(decode_body(body).obj)
        assert isinstance(event, Fill)
        inst = catalog.get(event.symbol)
        assert inst is not None
        ledger = ledgers.get(event.accountId) or Ledger().with_wallet(
            Wallet("USDT", START_BALANCE["USDT"])
        ).with_wallet(Wallet("BTC", START_BALANCE["BTC"]))
        held = next((p for p in ledger.positions if p.symbol == event.symbol and p.is_open), None)
        mark = (
            (held.mark_price, held.mark_time)
            if held and held.mark_price
            else marks.get(event.symbol)
        )
        ledger = ledgers[event.accountId] = apply_fill(ledger, event, inst, mark)  # type: ignore[arg-type]
        valuation = value(ledger, catalog, CALL_RATIO)
        wallet = valuation.wallets[inst.settle_asset]
        w = figures["wallet"]
        want = (
            wallet.cross_margin_balance,
            wallet.available_balance,
            wallet.cross_initial_margin,
            wallet.cross_maint_margin,
            wallet.margin_ratio,
        )
        pairs = list(zip(w, want, strict=True))
        for view in valuation.positions:
            if (
                view.instrument.settle_asset != inst.settle_asset
                or view.position.margin_mode != "CROSS"
            ):
                continue
            got = figures[view.position.symbol]
            liq = view.liquidation.price if view.liquidation else None
            pairs += list(
                zip(got, (view.notional, view.maint_margin, view.unrealized_pnl, liq), strict=True)
            )
        for got_v, want_v in pairs:
            g = None if got_v is None else format_decimal(got_v)
            e = None if want_v is None else format_decimal(want_v)
            assert g == e, f"fill {n}: kernel {g} != engine {e}"
            compared += 1
        if n % MARK_EVERY == MARK_EVERY - 1:
            at += timedelta(seconds=1)
            _mark_round(accounts, marks, at)
            for key, held_ledger in ledgers.items():
                for symbol, (price, when) in marks.items():
                    held_ledger = apply_mark(held_ledger, symbol, price, when)
                ledgers[key] = held_ledger
    return compared


def run(bodies: list[bytes], specs: dict[str, Spec]) -> dict[str, float]:
    accounts: dict[str, Account] = {}
    marks: dict[str, tuple[Decimal, datetime]] = {}
    at = datetime(2024, 10, 1, tzinfo=UTC)
    cpu = time.process_time
    marks_cpu = 0.0
    alerts = 0
    started = cpu()
    for n, body in enumerate(bodies):
        alerts += len(fill(body, accounts, specs, marks)[1])
        if n % MARK_EVERY == MARK_EVERY - 1:
            t = cpu()
            at += timedelta(seconds=1)
            _mark_round(accounts, marks, at)
            marks_cpu += cpu() - t
    return {"fill_cpu_seconds": cpu() - started - marks_cpu, "alerts": alerts}


def parts(bodies: list[bytes]) -> dict[str, float]:
    """CPU µs per fill of the kernel's first steps alone: base64 + JSON (with the
    duplicate-key hook), and those plus the Decimal and timestamp parsing."""
    cpu = time.process_time
    t = cpu()
    for body in bodies:
        JSON.decode(base64.b64decode(body, validate=True).decode("utf-8"))
    decode = cpu() - t
    t = cpu()
    for body in bodies:
        obj = JSON.decode(base64.b64decode(body, validate=True).decode("utf-8"))
        Decimal(obj["quantity"]), Decimal(obj["price"])
        datetime.fromisoformat(obj["executedAt"])
    parse = cpu() - t
    n = len(bodies)
    return {"decode": round(decode / n * 1e6, 2), "decode_and_parse": round(parse / n * 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bound")
    parser.add_argument("--fills", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians reported")
    parser.add_argument("--check", type=int, default=5_000, help="fills compared with the engine")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    catalog = load_catalog(SHIPPED_CATALOG)
    specs = {symbol: Spec(inst) for symbol, inst in catalog.instruments.items()}
    bodies = stream(args.fills, args.accounts, args.seed)
    compared = check(bodies[: args.check], catalog, specs)
    wall = time.perf_counter()
    runs = [run(bodies, specs) for _ in range(args.runs)]
    wall = time.perf_counter() - wall
    cpu = [r["fill_cpu_seconds"] for r in runs]
    per_fill = statistics.median(cpu) / args.fills * 1e6
    result = {
        "benchmark": "the CPython floor of the pure path: a straight-line kernel (see bench/bound.py)",
        "command": " ".join(["python -m bench.bound", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {
            "cores": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "params": {"fills": args.fills, "accounts": args.accounts, "runs": args.runs},
        "checked_against_engine": {"fills": min(args.check, args.fills), "figures_equal": compared},
        "kernel_us_per_fill": round(per_fill, 2),
        "kernel_us_per_fill_runs": [round(c / args.fills * 1e6, 2) for c in cpu],
        "kernel_fills_per_s_per_core": round(1e6 / per_fill),
        "parts_us_per_fill": parts(bodies[:20_000]),
        "alerts": runs[0]["alerts"],
        "target_fills_per_s_per_core": 50_000,
        "target_us_per_fill": 20.0,
        "wall_seconds": round(wall, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
