"""The instrument catalog: contract specs and Binance-style leverage brackets.

A catalog is a JSON file ``{"instruments": [...]}`` (decimals as strings). It is checked
when loaded: brackets must start at 0, be ordered and contiguous, and continuous
(``maintAmount`` is the "cum" that makes maintenance margin equal on both sides of every
boundary); a catalog that breaks any rule is refused.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any, Literal

from handlers.core.decimals import MONEY, m_abs, m_add, m_div, m_mul, m_sub, parse_decimal
from handlers.errors import ConfigurationError

__all__ = ["Bracket", "Catalog", "Instrument", "Memo", "load_catalog", "parse_catalog"]

ContractType = Literal["LINEAR", "INVERSE"]


@dataclass(frozen=True, slots=True)
class Bracket:
    """One leverage/maintenance tier: notionals in the settle asset, [floor, cap)."""

    bracket: int
    notional_floor: Decimal
    notional_cap: Decimal
    max_leverage: int
    maint_margin_ratio: Decimal
    maint_amount: Decimal


@dataclass(frozen=True, slots=True)
class Instrument:
    """One symbol's contract spec."""

    symbol: str
    contract_type: ContractType
    base_asset: str
    quote_asset: str
    settle_asset: str
    contract_size: Decimal
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    max_leverage: int
    price_band: Decimal
    brackets: tuple[Bracket, ...]
    # Compiled once from the fields above (not arguments, not compared):
    #: contract_type == "INVERSE"
    is_inverse: bool = field(init=False, repr=False, compare=False)
    #: notional caps of the brackets, in order (bisect finds the bracket of a notional)
    caps: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    #: the caps but the last: ``bisect_right`` over them is the index of the bracket of a
    #: notional (the last bracket above its cap)
    inner_caps: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    #: by bracket index: maintMarginRatio, and maintAmount as ``0 + maintAmount`` in MONEY
    #: (the term the liquidation price adds)
    maint_ratios: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    maint_terms: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    #: by leverage 0..125: the cap of the highest bracket whose maxLeverage ≥ it (0: none)
    leverage_caps: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        zero = Decimal(0)
        by_leverage = []
        for leverage in range(126):
            allowed = [b for b in self.brackets if b.max_leverage >= leverage]
            by_leverage.append(allowed[-1].notional_cap if allowed else zero)
        object.__setattr__(self, "is_inverse", self.contract_type == "INVERSE")
        object.__setattr__(self, "caps", tuple(b.notional_cap for b in self.brackets))
        object.__setattr__(self, "inner_caps", self.caps[:-1])
        ratios = tuple(b.maint_margin_ratio for b in self.brackets)
        object.__setattr__(self, "maint_ratios", ratios)
        terms = tuple(m_add(zero, b.maint_amount) for b in self.brackets)
        object.__setattr__(self, "maint_terms", terms)
        object.__setattr__(self, "leverage_caps", tuple(by_leverage))

    @property
    def inverse(self) -> bool:
        return self.is_inverse

    def notional(self, quantity: Decimal, price: Decimal) -> Decimal:
        """Notional in the settle asset of ``|quantity|`` at ``price`` (in MONEY)."""
        size = m_mul(m_abs(quantity), self.contract_size)
        return m_div(size, price) if self.is_inverse else m_mul(size, price)

    def pnl(self, quantity: Decimal, entry: Decimal, price: Decimal) -> Decimal:
        """Profit of signed ``quantity`` opened at ``entry`` and valued at ``price``."""
        size = m_mul(quantity, self.contract_size)
        if self.is_inverse:
            return m_mul(size, m_sub(m_div(1, entry), m_div(1, price)))
        return m_mul(size, m_sub(price, entry))

    def bracket_for(self, notional: Decimal) -> Bracket:
        """The bracket whose [floor, cap) holds ``notional`` (the last one above its cap)."""
        return self.brackets[bisect_right(self.inner_caps, notional)]

    def leverage_cap(self, leverage: int) -> Decimal:
        """The notional cap of the highest bracket whose maxLeverage ≥ ``leverage`` (0 when
        none allows it)."""
        if 0 <= leverage < len(self.leverage_caps):
            return self.leverage_caps[leverage]
        allowed = [b for b in self.brackets if b.max_leverage >= leverage]
        return allowed[-1].notional_cap if allowed else Decimal(0)


class Memo:
    """A bounded map of results of pure functions of one catalog (least recently used out).

    Safe to share between threads: each operation on the ordered dict is atomic, and a
    race only loses an entry (recomputed next time), never mixes one up. (An ordered dict
    drops its oldest entry in constant time; a plain dict's first entry sits behind the
    holes its evictions leave, which ``next(iter(...))`` walks.)
    """

    __slots__ = ("_items", "size")

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self.size = size

    def get(self, key: Any) -> Any:
        items = self._items
        found = items.get(key)
        if found is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs a context manager a lookup
                items.move_to_end(key)  # most recently used last
            except KeyError:  # evicted by another thread meanwhile
                pass
        return found

    def put(self, key: Any, found: Any) -> None:
        items = self._items
        items[key] = found
        while len(items) > self.size:
            try:
                items.popitem(last=False)
            except KeyError:
                break

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True)
class Catalog:
    """Instruments by symbol; the set of settle assets."""

    instruments: Mapping[str, Instrument]
    source: str = ""
    #: Per-asset valuations of this catalog (:func:`handlers.core.valuation.value`).
    valuation_cache: Memo = field(default_factory=Memo, init=False, repr=False, compare=False)

    def get(self, symbol: str) -> Instrument | None:
        return self.instruments.get(symbol)

    @property
    def settle_assets(self) -> frozenset[str]:
        return frozenset(i.settle_asset for i in self.instruments.values())


def _dec(entry: Mapping[str, Any], key: str, where: str) -> Decimal:
    value = entry.get(key)
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}: {key} must be a decimal string")
    try:
        return parse_decimal(value)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {key}: {exc}") from exc


def _int(entry: Mapping[str, Any], key: str, where: str) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{where}: {key} must be a positive integer")
    return value


def _str(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: {key} must be a non-empty string")
    return value


def _brackets(raw: object, where: str) -> tuple[Bracket, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(f"{where}: brackets must be a non-empty list")
    out: list[Bracket] = []
    for n, item in enumerate(raw, start=1):
        at = f"{where} bracket {n}"
        if not isinstance(item, dict):
            raise ConfigurationError(f"{at}: must be an object")
        b = Bracket(
            bracket=_int(item, "bracket", at),
            notional_floor=_dec(item, "notionalFloor", at),
            notional_cap=_dec(item, "notionalCap", at),
            max_leverage=_int(item, "maxLeverage", at),
            maint_margin_ratio=_dec(item, "maintMarginRatio", at),
            maint_amount=_dec(item, "maintAmount", at),
        )
        if b.bracket != n:
            raise ConfigurationError(f"{at}: brackets must be numbered 1, 2, … in order")
        if not b.notional_floor < b.notional_cap:
            raise ConfigurationError(f"{at}: notionalFloor must be below notionalCap")
        if not Decimal(0) < b.maint_margin_ratio < Decimal(1):
            raise ConfigurationError(f"{at}: maintMarginRatio must be in (0, 1)")
        if out:
            prev = out[-1]
            if b.notional_floor != prev.notional_cap:
                raise ConfigurationError(f"{at}: notionalFloor must equal the previous cap")
            if b.maint_margin_ratio < prev.maint_margin_ratio or b.max_leverage > prev.max_leverage:
                raise ConfigurationError(f"{at}: tiers must not loosen as notional grows")
            with localcontext(MONEY):
                expected = prev.maint_amount + b.notional_floor * (
                    b.maint_margin_ratio - prev.maint_margin_ratio
                )
            if b.maint_amount != expected:
                raise ConfigurationError(
                    f"{at}: not continuous: maintAmount {b.maint_amount} should be {expected}"
                )
        elif b.notional_floor != 0 or b.maint_amount != 0:
            raise ConfigurationError(f"{at}: the first bracket starts at 0 with maintAmount 0")
        out.append(b)
    return tuple(out)


def _instrument(item: object, index: int) -> Instrument:
    where = f"instrument {index}"
    if not isinstance(item, dict):
        raise ConfigurationError(f"{where}: must be an object")
    symbol = _str(item, "symbol", where)
    where = f"instrument {symbol}"
    contract_type = item.get("contractType")
    if contract_type not in ("LINEAR", "INVERSE"):
        raise ConfigurationError(f"{where}: contractType must be LINEAR or INVERSE")
    inst = Instrument(
        symbol=symbol,
        contract_type=contract_type,
        base_asset=_str(item, "baseAsset", where),
        quote_asset=_str(item, "quoteAsset", where),
        settle_asset=_str(item, "settleAsset", where),
        contract_size=_dec(item, "contractSize", where),
        tick_size=_dec(item, "tickSize", where),
        step_size=_dec(item, "stepSize", where),
        min_qty=_dec(item, "minQty", where),
        max_qty=_dec(item, "maxQty", where),
        min_notional=_dec(item, "minNotional", where),
        max_leverage=_int(item, "maxLeverage", where),
        price_band=_dec(item, "priceBand", where),
        brackets=_brackets(item.get("brackets"), where),
    )
    for name in ("contract_size", "tick_size", "step_size", "min_qty", "max_qty", "price_band"):
        if not getattr(inst, name) > 0:
            raise ConfigurationError(f"{where}: {name} must be > 0")
    if inst.min_notional < 0 or inst.min_qty > inst.max_qty:
        raise ConfigurationError(f"{where}: minNotional ≥ 0 and minQty ≤ maxQty required")
    if inst.contract_type == "LINEAR" and inst.settle_asset != inst.quote_asset:
        raise ConfigurationError(f"{where}: a linear contract settles in its quote asset")
    if inst.contract_type == "INVERSE" and inst.settle_asset != inst.base_asset:
        raise ConfigurationError(f"{where}: an inverse contract settles in its base asset")
    if inst.max_leverage > inst.brackets[0].max_leverage or inst.max_leverage > 125:
        raise ConfigurationError(f"{where}: maxLeverage above the first bracket's (or 125)")
    return inst


def parse_catalog(data: object, source: str = "") -> Catalog:
    """Build a catalog from parsed JSON.

    Raises:
        ConfigurationError: the shape is wrong, a symbol repeats, or brackets are not
            ordered, contiguous and continuous.
    """
    if not isinstance(data, dict) or not isinstance(data.get("instruments"), list):
        raise ConfigurationError(f"{source}: a catalog is {{'instruments': [...]}}")
    out: dict[str, Instrument] = {}
    for index, item in enumerate(data["instruments"]):
        inst = _instrument(item, index)
        if inst.symbol in out:
            raise ConfigurationError(f"{source}: symbol {inst.symbol} appears twice")
        out[inst.symbol] = inst
    if not out:
        raise ConfigurationError(f"{source}: the catalog lists no instrument")
    return Catalog(instruments=out, source=source)


def load_catalog(path: Path) -> Catalog:
    """Load and check a catalog file.

    Raises:
        ConfigurationError: the file cannot be read or parsed, or breaks a rule.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the instrument catalog {path}: {exc}") from exc
    return parse_catalog(data, str(path))
