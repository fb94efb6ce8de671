"""Small builders of contract objects for the unit tests, validated as the service does."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from handlers.core.catalog import Catalog
from handlers.core.contracts import Fill, Transfer, validate_inbound
from handlers.core.decode import decode_body
from handlers.core.state import Ledger, apply_mark, apply_transfer
from handlers.core.valuation import Valuation, value
from tests.events import as_body, load_event

__all__ = [
    "CALL_RATIO",
    "T0",
    "D",
    "deposit",
    "fill",
    "marked",
    "parse_body",
    "transfer",
    "valued",
]

D = Decimal
T0 = datetime(2024, 10, 1, 12, 0, 0, tzinfo=UTC)
CALL_RATIO = Decimal("0.80")
_MISSING = object()
_MARK_MINUTES = itertools.count(60)


def _edit(event: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, val in changes.items():
        if val is _MISSING:
            event.pop(key, None)
        else:
            event[key] = val
    return event


def parse_body(event: dict[str, Any], base64: bool = True) -> Any:
    """Encode ``event`` as a queue body, decode it and validate it (the service's path)."""
    return validate_inbound(decode_body(as_body(event, base64=base64)).obj)


def fill(**changes: Any) -> Fill:
    """A FILL: the canonical BTCUSDT long (fee 0, no correlationId) with ``changes``.

    Decimal-valued changes may be given as Decimal/str; they are sent as strings.
    """
    event = load_event("fill_btcusdt_long")
    event.pop("correlationId")
    event["fee"] = "0"
    changes = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in changes.items()}
    out = parse_body(_edit(event, changes))
    assert isinstance(out, Fill)
    return out


def transfer(amount: str | Decimal, reason: str = "DEPOSIT", **changes: Any) -> Transfer:
    """A TRANSFER of ``amount`` (the canonical USDT deposit, edited)."""
    event = load_event("transfer_deposit_usdt")
    event.update(amount=str(amount), reason=reason)
    out = parse_body(_edit(event, changes))
    assert isinstance(out, Transfer)
    return out


def deposit(ledger: Ledger, amount: str, asset: str = "USDT") -> Ledger:
    """``ledger`` with ``amount`` of ``asset`` credited (a FUNDING-free deposit)."""
    return apply_transfer(ledger, transfer(amount, asset=asset), None)


def marked(ledger: Ledger, symbol: str, price: str) -> Ledger:
    """``ledger`` with the mark of ``symbol`` set to ``price`` (each call a newer mark)."""
    return apply_mark(ledger, symbol, Decimal(price), T0 + timedelta(minutes=next(_MARK_MINUTES)))


def valued(ledger: Ledger, catalog: Catalog) -> Valuation:
    """The valuation at the default margin-call ratio (0.80)."""
    return value(ledger, catalog, CALL_RATIO)
