"""The messages the benchmarks and the integration tests send: one definition of each.

- Builders of one message: :func:`fill`, :func:`deposit`, :func:`mark`, and :func:`b64`
  (the base64 JSON text producers write on a queue).
- :func:`make_workload`: the end-to-end bench's seeded stream (deposits, one MARK per
  symbol, FILLs that only add to a position, every K-th a large one that alerts).
- :func:`duplicated`: a stream delivered K times, in place or shuffled (duplicate storms).

No import of the app: the tests and :mod:`bench.e2e` use these without ``handlers``.
"""

from __future__ import annotations

import base64
import json
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

__all__ = [
    "DEPOSIT_USDT",
    "LARGE_BTC",
    "LARGE_TRADE_USDT",
    "LEVERAGE",
    "MARK_PRICES",
    "Workload",
    "b64",
    "deposit",
    "duplicated",
    "fill",
    "is_large",
    "iso",
    "make_fills",
    "make_workload",
    "mark",
]

MARK_PRICES = {"BTCUSDT": 60000, "ETHUSDT": 2500}
#: A large fill: 0.02 BTC at ~60,000 = ~1,200 USDT, at or above LARGE_TRADE_USDT.
LARGE_BTC = Decimal("0.02")
LARGE_TRADE_USDT = 1000
DEPOSIT_USDT = "1000000"
LEVERAGE = 10

M = TypeVar("M")


# --------------------------------------------------------------------------- one message


def iso(when: datetime) -> str:
    """``2024-10-01T00:00:00.000Z``: UTC, milliseconds."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def b64(message: Mapping[str, Any] | str) -> str:
    """Queue text of a message: base64 of its JSON (of the text itself for a string)."""
    raw = message if isinstance(message, str) else json.dumps(message)
    return base64.b64encode(raw.encode()).decode()


def fill(account: str, trade_id: str, **fields: Any) -> dict[str, Any]:
    """A FILL: 0.1 BTCUSDT bought at 60000 with leverage 10 unless ``fields`` say otherwise
    (any field, by its message name: ``side="SELL"``, ``executedAt=...``, ``fee=...``)."""
    message: dict[str, Any] = {
        "type": "FILL",
        "schemaVersion": 1,
        "tradeId": trade_id,
        "accountId": account,
        "symbol": "BTCUSDT",
        "side": "BUY",
        "quantity": "0.1",
        "price": "60000",
        "leverage": 10,
        "executedAt": "2024-10-01T00:01:00Z",
    }
    message.update(fields)
    return message


def deposit(
    account: str,
    amount: str,
    transfer_id: str,
    asset: str = "USDT",
    occurred_at: str = "2024-10-01T00:00:00Z",
) -> dict[str, Any]:
    """A TRANSFER with reason DEPOSIT (a negative ``amount`` is a debit)."""
    return {
        "type": "TRANSFER",
        "schemaVersion": 1,
        "transferId": transfer_id,
        "accountId": account,
        "asset": asset,
        "amount": amount,
        "reason": "DEPOSIT",
        "occurredAt": occurred_at,
    }


def mark(symbol: str, price: str, timestamp: str) -> dict[str, Any]:
    """A MARK of one symbol."""
    return {
        "type": "MARK",
        "schemaVersion": 1,
        "symbol": symbol,
        "markPrice": price,
        "timestamp": timestamp,
    }


# --------------------------------------------------------------------------- streams


def duplicated(messages: Iterable[M], copies: int, rng: random.Random | None = None) -> list[M]:
    """Each message ``copies`` times in a row; shuffled by ``rng`` when one is given."""
    out = [message for message in messages for _ in range(copies)]
    if rng is not None:
        rng.shuffle(out)
    return out


@dataclass(frozen=True)
class Workload:
    """The messages of one pipeline: marks and deposits (set-up) and the fills."""

    accounts: list[str]
    marks: list[dict[str, Any]]
    deposits: list[dict[str, Any]]
    fills: list[dict[str, Any]]


def make_fills(
    count: int,
    accounts: Sequence[str],
    rng: random.Random,
    prefix: str,
    when: datetime,
    alert_every: int = 1,
) -> list[dict[str, Any]]:
    """Valid FILLs that only add to a position (one side per account and symbol), on tick
    and step, notional above minNotional (100 USDT BTCUSDT, 20 USDT ETHUSDT), within 0.5 %
    of the mark (the price band is 5 %). Every ``alert_every``-th is a large BTCUSDT fill
    (~1,200 USDT); the others stay below 1,000 USDT."""
    sides = {
        (a, s): ("BUY" if zlib.crc32(f"{a}/{s}".encode()) % 2 else "SELL")
        for a in accounts
        for s in MARK_PRICES
    }
    out: list[dict[str, Any]] = []
    for n in range(count):
        account = accounts[rng.randrange(len(accounts))]
        symbol = rng.choice(list(MARK_PRICES))
        large = n % alert_every == alert_every - 1
        if large:
            symbol = "BTCUSDT"
        if symbol == "BTCUSDT":  # 0.002..0.010 BTC at 59700..60300: 119..603 USDT
            quantity = LARGE_BTC if large else Decimal("0.002") * rng.randint(1, 5)
            price = f"{60000 + rng.randint(-300, 300)}.{rng.randint(0, 9)}"
        else:  # 0.01..0.10 ETH at 2490..2510: 24.9..251 USDT
            quantity = Decimal("0.01") * rng.randint(1, 10)
            price = f"{2500 + rng.randint(-10, 10)}.{rng.randint(0, 99):02d}"
        out.append(
            fill(
                account,
                f"{prefix}{n:07d}",
                symbol=symbol,
                side=sides[(account, symbol)],
                quantity=str(quantity),
                price=price,
                leverage=LEVERAGE,
                executedAt=iso(when),
            )
        )
    return out


def is_large(message: Mapping[str, Any]) -> bool:
    """Whether a fill's notional (at its price) reaches the LARGE_TRADE threshold."""
    return abs(float(message["quantity"]) * float(message["price"])) >= LARGE_TRADE_USDT


def make_workload(
    fills: int, accounts: int, seed: int, prefix: str = "t", alert_every: int = 1
) -> Workload:
    """Deposits of DEPOSIT_USDT for ``accounts`` accounts, one MARK per symbol (a second
    old), then ``fills`` fills (:func:`make_fills`), seeded."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ids = [f"acc{i:05d}" for i in range(accounts)]
    marks = [
        mark(symbol, str(price), iso(now - timedelta(seconds=1)))
        for symbol, price in MARK_PRICES.items()
    ]
    deposits = [deposit(a, DEPOSIT_USDT, f"dep-{a}", occurred_at=iso(now)) for a in ids]
    return Workload(ids, marks, deposits, make_fills(fills, ids, rng, prefix, now, alert_every))
