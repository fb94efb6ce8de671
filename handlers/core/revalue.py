"""One account re-valued at marks (pure): the step a mark's pass, a fill's catch-up and the
soundness test's exhaustive reference all take.

The marks are applied in order (a mark not newer than a position's own changes nothing),
the account is valued once at the result, and the risk-state changes between the stored
states and that valuation are the alerts; the new states are stored on the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from handlers.core.alerts import AlertSpec, risk_alerts
from handlers.core.catalog import Catalog
from handlers.core.state import Ledger, apply_mark
from handlers.core.valuation import Valuation, settle_risk_states, value

__all__ = ["MarkAt", "revalue_at"]

#: (symbol, price, timestamp) of one mark.
MarkAt = tuple[str, Decimal, datetime]


def revalue_at(
    ledger: Ledger, marks: Sequence[MarkAt], catalog: Catalog, margin_call_ratio: Decimal
) -> tuple[Ledger, list[AlertSpec], Valuation]:
    """The ledger moved to ``marks`` with its risk states settled, the risk alerts of the
    move (see :func:`handlers.core.alerts.risk_alerts`), and the valuation at the marks."""
    moved = ledger
    for symbol, price, when in marks:
        moved = apply_mark(moved, symbol, price, when)
    after = value(moved, catalog, margin_call_ratio)
    return settle_risk_states(moved, after), risk_alerts(ledger, after), after
