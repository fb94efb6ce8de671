"""Readable renderings for devhost's inspection commands: one line per alert or order
decision, and tables of positions and wallets from account documents.

Figures are rounded for reading only (the documents and alerts keep full precision):
prices and amounts to six significant digits with at least two decimals, margin ratios to
four decimals, distances to liquidation to two decimals of a percent, quantities as
written. Text from the messages is printed as it is (no ``\\uXXXX`` escapes); control
characters are shown escaped so that one alert stays one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

__all__ = [
    "DEFAULT_CALL_RATIO",
    "PositionRow",
    "alert_line",
    "amount",
    "call_ratio_setting",
    "decision_line",
    "distance_to_liquidation",
    "percent",
    "position_rows",
    "positions_table",
    "price",
    "quantity",
    "ratio",
    "ratio_against",
    "table",
    "wallets_table",
]

#: ``RISK_MARGIN_CALL_RATIO``'s default (the contract's).
DEFAULT_CALL_RATIO = Decimal("0.80")
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_RISK_TYPES = {"MARGIN_CALL", "LIQUIDATION_RISK", "RISK_RECOVERED"}
#: Types whose reason messages echo the input; their numbers are never rounded.
_VERBATIM_TYPES = {"TRADE_REJECTED", "POISON_MESSAGE"}
_MESSAGE_LIMIT = 200
_LONG_DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d{7,}(?![\d.])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _decimal(value: object) -> Decimal | None:
    """``value`` (a decimal string or number) as a finite Decimal; None when it is not one."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return out if out.is_finite() else None


def _strip(text: str, keep: int) -> str:
    """``text`` (fixed-point) without trailing zeros beyond ``keep`` decimals."""
    if "." not in text:
        return text
    whole, frac = text.split(".")
    frac = frac.rstrip("0")
    frac = frac + "0" * max(0, keep - len(frac))
    return f"{whole}.{frac}" if frac else whole


def _significant(value: Decimal, digits: int = 6, min_places: int = 2) -> str:
    """``value`` rounded half-even to ``digits`` significant digits, at least
    ``min_places`` decimals shown, no exponent."""
    if value.is_zero():
        return "0." + "0" * min_places if min_places else "0"
    places = max(min_places, digits - 1 - value.adjusted())
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    text = _strip(f"{rounded:f}", min_places)
    return "0" + text[2:] if text.startswith("-0") and _decimal(text) == 0 else text


def price(value: object) -> str:
    """A price for reading: six significant digits, at least two decimals; ``-`` when none."""
    number = _decimal(value)
    return "-" if number is None else _significant(number)


def amount(value: object) -> str:
    """A money amount in its settle asset, rounded as :func:`price`."""
    return price(value)


def quantity(value: object) -> str:
    """A quantity as written (they are multiples of the step size), without sign."""
    number = _decimal(value)
    if number is None:
        return "-"
    return _strip(f"{abs(number):f}", 0)


def ratio(value: object) -> str:
    """A margin ratio to four decimals; ``-`` when there is none."""
    number = _decimal(value)
    if number is None:
        return "-"
    return f"{number.quantize(Decimal('0.0001'), rounding=ROUND_HALF_EVEN):f}"


def percent(value: Decimal | None) -> str:
    """A fraction as a percentage with two decimals (``0.0438`` → ``4.38 %``)."""
    if value is None:
        return "-"
    scaled = (value * _HUNDRED).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return f"{scaled:f} %"


def ratio_against(value: object, call_ratio: Decimal, state: str | None = None) -> str:
    """A margin ratio next to the threshold it is judged by: ``0.0840 < 0.80`` (NORMAL),
    ``0.8611 ≥ 0.80`` (MARGIN_CALL), ``1.2040 ≥ 1`` (LIQUIDATION). A null ratio of a
    position in LIQUIDATION means its margin balance is ≤ 0."""
    number = _decimal(value)
    if number is None:
        return "none (margin balance ≤ 0)" if state == "LIQUIDATION" else "-"
    threshold = str(call_ratio)
    if number >= _ONE:
        return f"{ratio(number)} ≥ 1"
    if number >= call_ratio:
        return f"{ratio(number)} ≥ {threshold}"
    return f"{ratio(number)} < {threshold}"


def call_ratio_setting(settings: Mapping[str, str]) -> Decimal:
    """The margin-call threshold of the app's settings (``RISK_MARGIN_CALL_RATIO``, default
    0.80): what a margin ratio is shown against."""
    text = (settings.get("RISK_MARGIN_CALL_RATIO") or "").strip()
    try:
        return Decimal(text) if text else DEFAULT_CALL_RATIO
    except InvalidOperation:
        return DEFAULT_CALL_RATIO


def _clean(text: object) -> str:
    """One line of readable text: control characters escaped, at most 200 characters."""
    out = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return out if len(out) <= _MESSAGE_LIMIT else out[: _MESSAGE_LIMIT - 1] + "…"


def _round_numbers(text: str) -> str:
    """``text`` with every decimal of seven or more decimals rounded as :func:`amount`."""
    return _LONG_DECIMAL.sub(lambda m: amount(m.group()), text)


def _risk_figures(metrics: Mapping[str, Any], call_ratio: Decimal, alert_type: str) -> list[str]:
    figures: list[str] = []
    if "markPrice" in metrics:
        figures.append(f"mark {price(metrics['markPrice'])}")
    if "liquidationPrice" in metrics:
        figures.append(f"liq. price {price(metrics['liquidationPrice'])}")
    state = "LIQUIDATION" if alert_type == "LIQUIDATION_RISK" else None
    figures.append(f"margin ratio {ratio_against(metrics.get('marginRatio'), call_ratio, state)}")
    if "marginBalance" in metrics:
        figures.append(f"margin balance {amount(metrics['marginBalance'])}")
    if "maintMargin" in metrics:
        figures.append(f"maint. margin {amount(metrics['maintMargin'])}")
    return figures


def alert_line(alert: Any, call_ratio: Decimal = DEFAULT_CALL_RATIO) -> str:
    """One readable line for an alert: severity, type, account, scope, source, then what
    happened with its key figures rounded.

    ``alert`` is a decoded alert body (a JSON object); anything else is shown as
    ``(not an alert)`` with its text.
    """
    if not isinstance(alert, Mapping) or not isinstance(alert.get("type"), str):
        return f"(not an alert) {_clean(alert)}"
    kind = str(alert["type"])
    head = "  ".join(
        (
            f"{_clean(alert.get('severity') or '-'):<8}",
            f"{_clean(kind):<16}",
            f"{_clean(alert.get('accountId') or '-'):<6}",
            f"{_clean(alert.get('scope') or '-'):<12}",
            f"{_clean(alert.get('sourceId') or '-'):<32}",
        )
    )
    parts: list[str] = []
    reasons = alert.get("reasons")
    for reason in reasons if isinstance(reasons, list) else []:
        if not isinstance(reason, Mapping):
            continue
        code, message = str(reason.get("code", "")), str(reason.get("message", ""))
        if kind not in _VERBATIM_TYPES:
            message = _round_numbers(message)
        parts.append(_clean(message) if code == kind else f"{_clean(code)}: {_clean(message)}")
    metrics = alert.get("metrics")
    if kind in _RISK_TYPES and isinstance(metrics, Mapping):
        parts.extend(_risk_figures(metrics, call_ratio, kind))
    return f"{head}  {' · '.join(parts)}".rstrip()


#: The figures of a decision's line, in order: (metric, label, rendering).
_DECISION_FIGURES = (
    ("price", "price", "price"),
    ("openingQuantity", "opening qty", "quantity"),
    ("cost", "cost", "amount"),
    ("availableForOrders", "available", "amount"),
    ("availableForOrdersAfter", "after", "amount"),
    ("marginRatioAfter", "margin ratio after", "ratio"),
)


def decision_line(decision: Any) -> str:
    """One readable line for an order decision: APPROVED or REJECTED, account, order,
    symbol, then the reasons (``CODE: message``) and the key figures rounded.

    ``decision`` is a decoded ORDER_DECISION body; anything else is shown as ``(not a
    decision)`` with its text.
    """
    if not isinstance(decision, Mapping) or decision.get("type") != "ORDER_DECISION":
        return f"(not a decision) {_clean(decision)}"
    head = "  ".join(
        (
            f"{_clean(decision.get('decision') or '-'):<8}",
            f"{_clean(decision.get('accountId') or '-'):<6}",
            f"{_clean(decision.get('orderId') or '-'):<16}",
            f"{_clean(decision.get('symbol') or '-'):<12}",
        )
    )
    parts: list[str] = []
    reasons = decision.get("reasons")
    for reason in reasons if isinstance(reasons, list) else []:
        if isinstance(reason, Mapping):
            code, message = reason.get("code", ""), reason.get("message", "")
            parts.append(f"{_clean(code)}: {_clean(_round_numbers(str(message)))}")
    metrics = decision.get("metrics")
    shown = {"price": price, "quantity": quantity, "amount": amount, "ratio": ratio}
    for key, label, kind in _DECISION_FIGURES:
        if isinstance(metrics, Mapping) and metrics.get(key) is not None:
            parts.append(f"{label} {shown[kind](metrics[key])}")
    return f"{head}  {' · '.join(parts)}".rstrip()


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()
) -> list[str]:
    """Rows under headers, columns padded to their widest cell (``right``: the indexes of
    right-aligned columns), two spaces apart."""
    body = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    aligned = set(right)

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(w) if i in aligned else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)]


def distance_to_liquidation(
    mark: object, liquidation: object, net_quantity: Decimal
) -> Decimal | None:
    """How far the mark may move before it reaches the liquidation price, as a fraction of
    the mark: down for a long (net quantity > 0), up for a short. Negative when the mark is
    already beyond it; None without a liquidation price."""
    mark_value, liq_value = _decimal(mark), _decimal(liquidation)
    if mark_value is None or liq_value is None or mark_value <= 0:
        return None
    if net_quantity > 0:
        return (mark_value - liq_value) / mark_value
    if net_quantity < 0:
        return (liq_value - mark_value) / mark_value
    return abs(liq_value - mark_value) / mark_value


class PositionRow:
    """The figures of one open position as the tables show them."""

    HEADERS = (
        "account",
        "symbol",
        "side",
        "mode",
        "qty",
        "entry",
        "mark",
        "liq. price",
        "to liq.",
        "margin ratio",
        "state",
    )
    RIGHT = (4, 5, 6, 7, 8)

    def __init__(
        self,
        account: str,
        position: Mapping[str, Any],
        wallet: Mapping[str, Any] | None,
        net_quantity: Decimal,
        call_ratio: Decimal,
    ) -> None:
        qty = _decimal(position.get("quantity")) or Decimal(0)
        side = str(position.get("positionSide") or "BOTH")
        mode = str(position.get("marginMode") or "CROSS")
        self.account = account
        self.symbol = str(position.get("symbol"))
        self.scope = f"{self.symbol}:{side}"
        self.side = side if side != "BOTH" else ("LONG" if qty > 0 else "SHORT")
        self.mode = mode.lower()
        self.state = str(position.get("riskState") or "-")
        mark = position.get("markPrice")
        self.mark_from_fill = mark is None
        if mark is None:  # no stored mark yet: valued at the last fill price
            mark = position.get("lastFillPrice")
        self.mark = _decimal(mark)
        self.liquidation = _decimal(position.get("liquidationPrice"))
        self.distance = distance_to_liquidation(mark, self.liquidation, net_quantity)
        if mode == "ISOLATED":
            balance = (_decimal(position.get("isolatedMargin")) or Decimal(0)) + (
                _decimal(position.get("unrealizedPnl")) or Decimal(0)
            )
            maint = _decimal(position.get("maintMargin")) or Decimal(0)
            self.margin_ratio: Decimal | None = maint / balance if balance > 0 else None
        else:
            self.margin_ratio = _decimal((wallet or {}).get("marginRatio"))
        self.cells = [
            account,
            self.symbol,
            self.side,
            self.mode,
            quantity(qty),
            price(position.get("entryPrice")),
            price(mark) + ("*" if self.mark_from_fill else ""),
            price(self.liquidation),
            percent(self.distance),
            ratio_against(self.margin_ratio, call_ratio, self.state),
            self.state,
        ]


def _open_positions(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    positions = doc.get("positions")
    return [
        p
        for p in (positions if isinstance(positions, list) else [])
        if isinstance(p, Mapping) and (_decimal(p.get("quantity")) or 0) != 0
    ]


def position_rows(
    docs: Iterable[Mapping[str, Any]],
    call_ratio: Decimal = DEFAULT_CALL_RATIO,
    settle_assets: Mapping[str, str] | None = None,
) -> list[PositionRow]:
    """One row per open position of the account documents, in account then symbol order.

    A cross position is judged by its wallet's margin ratio, an isolated one by its own
    (maintenance margin / (isolated margin + uPnL)); ``settle_assets`` (symbol → settle
    asset, from the catalog) says which wallet a cross position belongs to. A hedge pair's
    legs share one liquidation price, so the distance uses the net quantity of the symbol."""
    rows: list[PositionRow] = []
    for doc in sorted(docs, key=lambda d: str(d.get("accountId"))):
        account = str(doc.get("accountId"))
        held = doc.get("wallets")
        wallets: Mapping[str, Any] = held if isinstance(held, Mapping) else {}
        positions = _open_positions(doc)
        for p in sorted(
            positions, key=lambda p: (str(p.get("symbol")), str(p.get("positionSide")))
        ):
            net = sum(
                (
                    _decimal(q.get("quantity")) or Decimal(0)
                    for q in positions
                    if q.get("symbol") == p.get("symbol")
                    and q.get("marginMode") == p.get("marginMode")
                ),
                Decimal(0),
            )
            wallet = _wallet_of(wallets, p, settle_assets or {})
            rows.append(PositionRow(account, p, wallet, net, call_ratio))
    return rows


def _wallet_of(
    wallets: Mapping[str, Any], position: Mapping[str, Any], settle_assets: Mapping[str, str]
) -> Mapping[str, Any] | None:
    """The wallet a cross position is judged by: its symbol's settle asset's (from the
    catalog), or the account's only wallet."""
    asset = settle_assets.get(str(position.get("symbol")))
    wallet = wallets.get(asset) if asset is not None else None
    if wallet is None and len(wallets) == 1:
        wallet = next(iter(wallets.values()))
    return wallet if isinstance(wallet, Mapping) else None


def positions_table(
    docs: Iterable[Mapping[str, Any]],
    call_ratio: Decimal = DEFAULT_CALL_RATIO,
    settle_assets: Mapping[str, str] | None = None,
) -> list[str]:
    """The table of open positions (see :func:`position_rows`); ``*`` marks a position
    valued at its fill price because its symbol has no mark yet."""
    rows = position_rows(docs, call_ratio, settle_assets)
    lines = table(PositionRow.HEADERS, (r.cells for r in rows), PositionRow.RIGHT)
    if any(r.mark_from_fill for r in rows):
        lines.append("* no mark yet: valued at the last fill price")
    return lines


def wallets_table(
    docs: Iterable[Mapping[str, Any]], call_ratio: Decimal = DEFAULT_CALL_RATIO
) -> list[str]:
    """One row per wallet (settle asset) of each account: balances and the cross margin
    ratio against its threshold, with the wallet's risk state."""
    rows: list[list[str]] = []
    for doc in sorted(docs, key=lambda d: str(d.get("accountId"))):
        wallets = doc.get("wallets")
        for asset, w in sorted((wallets if isinstance(wallets, Mapping) else {}).items()):
            if not isinstance(w, Mapping):
                continue
            state = str(w.get("riskState") or "-")
            rows.append(
                [
                    str(doc.get("accountId")),
                    str(asset),
                    amount(w.get("walletBalance")),
                    amount(w.get("marginBalance")),
                    amount(w.get("availableBalance")),
                    ratio_against(w.get("marginRatio"), call_ratio, state),
                    state,
                ]
            )
    headers = (
        "account",
        "asset",
        "wallet balance",
        "margin balance",
        "available",
        "cross margin ratio",
        "state",
    )
    return table(headers, rows, right=(2, 3, 4))
