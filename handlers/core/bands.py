"""PLACEHOLDER (degenerate bands) until the real module lands."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from handlers.core.catalog import Catalog
from handlers.core.state import Ledger

Band = tuple[Decimal, Decimal]


def _marks(ledger: Ledger, catalog: Catalog) -> dict[str, Decimal]:
    return {
        p.symbol: p.effective_mark
        for p in ledger.positions
        if p.is_open and catalog.get(p.symbol) is not None
    }


def band_box(
    ledger: Ledger, catalog: Catalog, margin_call_ratio: Decimal, width: Decimal
) -> dict[str, Band]:
    return {s: (m, m) for s, m in _marks(ledger, catalog).items()}


def box_holds(
    ledger: Ledger, catalog: Catalog, margin_call_ratio: Decimal, box: Mapping[str, Band]
) -> bool:
    marks = _marks(ledger, catalog)
    return set(marks) == set(box) and all(box[s] == (m, m) for s, m in marks.items())


def outside(band: Band, price: Decimal) -> bool:
    return price < band[0] or price > band[1]
