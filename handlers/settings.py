"""Every app setting the code reads: names, defaults, and one loader.

Settings are read when :func:`load_settings` is called, never at import, so tests and the
local host can set them first. Names match the contract's settings table, ``infra/`` and
``local.settings.sample.json``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from handlers.core.decimals import parse_decimal
from handlers.errors import ConfigurationError

__all__ = [
    "ALERTS_QUEUE",
    "COSMOS_DATABASE",
    "COSMOS_ENDPOINT",
    "COSMOS_KEY",
    "DEFAULT_LARGE_TRADE_NOTIONAL",
    "DEFAULT_POSITION_LIMIT_NOTIONAL",
    "INSTRUMENTS_FILE",
    "MARKS_FANOUT_BATCH",
    "MARKS_FANOUT_QUEUE",
    "MARKS_QUEUE",
    "MARK_CACHE_SECONDS",
    "RISK_LARGE_TRADE_NOTIONAL",
    "RISK_MARGIN_CALL_RATIO",
    "RISK_POSITION_LIMIT_NOTIONAL",
    "STALE_MARK_AFTER_SECONDS",
    "STORAGE_CONNECTION",
    "TRADES_QUEUE",
    "Settings",
    "fanout_queue_expression",
    "load_settings",
    "parse_asset_amounts",
]

STORAGE_CONNECTION = "AzureWebJobsStorage"
TRADES_QUEUE = "TRADES_QUEUE"
MARKS_QUEUE = "MARKS_QUEUE"
ALERTS_QUEUE = "ALERTS_QUEUE"
COSMOS_ENDPOINT = "COSMOS_ENDPOINT"
COSMOS_KEY = "COSMOS_KEY"
COSMOS_DATABASE = "COSMOS_DATABASE"
INSTRUMENTS_FILE = "INSTRUMENTS_FILE"
RISK_MARGIN_CALL_RATIO = "RISK_MARGIN_CALL_RATIO"
RISK_LARGE_TRADE_NOTIONAL = "RISK_LARGE_TRADE_NOTIONAL"
RISK_POSITION_LIMIT_NOTIONAL = "RISK_POSITION_LIMIT_NOTIONAL"
STALE_MARK_AFTER_SECONDS = "STALE_MARK_AFTER_SECONDS"
MARK_CACHE_SECONDS = "MARK_CACHE_SECONDS"
MARKS_FANOUT_QUEUE = "MARKS_FANOUT_QUEUE"
MARKS_FANOUT_BATCH = "MARKS_FANOUT_BATCH"
#: Prefixes of every setting name the app (or its telemetry) reads (not itself a setting, so
#: not in __all__, whose upper-case names are the settings): tools that start the
#: app with a settings file drop these from the inherited environment, so only the file
#: counts.
APP_SETTING_PREFIXES = (
    "AzureWebJobs",  # AzureWebJobsStorage and its __queueServiceUri etc. forms, host flags
    TRADES_QUEUE,
    MARKS_QUEUE,
    ALERTS_QUEUE,
    "COSMOS_",
    INSTRUMENTS_FILE,
    "RISK_",
    STALE_MARK_AFTER_SECONDS,
    MARK_CACHE_SECONDS,
    "MARKS_FANOUT_",
    "APPLICATIONINSIGHTS_",
)

#: Documented defaults (docs/settings.md): a trade worth 1,000,000 USDT or 20 BTC is large;
#: a position worth more than 10,000,000 USDT or 200 BTC is over the limit.
DEFAULT_LARGE_TRADE_NOTIONAL = "USDT:1000000,BTC:20"
DEFAULT_POSITION_LIMIT_NOTIONAL = "USDT:10000000,BTC:200"
SHIPPED_CATALOG = Path(__file__).resolve().parent / "data" / "instruments.json"


def fanout_queue_expression(environ: Mapping[str, str] | None = None) -> str:
    """The ``queueName`` of the marks fan-out trigger, read when ``function_app`` is
    indexed: ``%MARKS_FANOUT_QUEUE%`` when that setting is set, else ``%MARKS_QUEUE%-fanout``
    (its default, ``marks-fanout`` with the default MARKS_QUEUE). The host resolves a
    ``%SETTING%`` expression and refuses to index a function whose setting is missing, so
    the default has to be an expression of a setting that is always there."""
    env = os.environ if environ is None else environ
    if env.get(MARKS_FANOUT_QUEUE, "").strip():
        return f"%{MARKS_FANOUT_QUEUE}%"
    return f"%{MARKS_QUEUE}%-fanout"


def parse_asset_amounts(text: str, name: str) -> dict[str, Decimal]:
    """Parse ``"USDT:1000000,BTC:20"`` into ``{"USDT": Decimal("1000000"), ...}``.

    An empty text gives an empty mapping (nothing is checked).

    Raises:
        ConfigurationError: an entry is not ``ASSET:decimal`` with a decimal > 0, or an
            asset repeats.
    """
    out: dict[str, Decimal] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        asset, sep, amount = entry.partition(":")
        asset = asset.strip()
        if not sep or not asset or asset in out:
            raise ConfigurationError(f"{name}: bad entry {entry!r} (want ASSET:amount, once each)")
        try:
            value = parse_decimal(amount.strip())
        except ValueError as exc:
            raise ConfigurationError(f"{name}: {entry!r}: {exc}") from exc
        if value <= 0:
            raise ConfigurationError(f"{name}: {entry!r}: the amount must be > 0")
        out[asset] = value
    return out


@dataclass(frozen=True)
class Settings:
    """The app's settings, resolved from a mapping of strings (the environment)."""

    trades_queue: str = "trades"
    marks_queue: str = "marks"
    alerts_queue: str = "alerts"
    storage_connection: str = STORAGE_CONNECTION
    cosmos_endpoint: str | None = None
    cosmos_key: str | None = field(default=None, repr=False)
    cosmos_database: str = "tradeguard"
    instruments_file: Path = SHIPPED_CATALOG
    margin_call_ratio: Decimal = Decimal("0.80")
    large_trade_notional: Mapping[str, Decimal] = field(default_factory=dict)
    position_limit_notional: Mapping[str, Decimal] = field(default_factory=dict)
    stale_mark_after_seconds: int = 300
    #: How old this process's copy of a stored mark may be for a fill's first look at a
    #: symbol it does not hold (0, the default: always read). A duration, not money.
    mark_cache_seconds: float = 0.0
    #: The app's own queue that carries the units of a mark's pass over many holders
    #: (default ``<MARKS_QUEUE>-fanout``, so apps that share a storage account do not share
    #: it unless told to).
    marks_fanout_queue: str = "marks-fanout"
    #: Accounts one invocation re-values for a mark; a mark with more holders hands the
    #: rest to ``marks_fanout_queue`` in units of this many (the bound on its work).
    marks_fanout_batch: int = 200
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``).

    Raises:
        ConfigurationError: a setting is present but malformed.
    """
    env = dict(os.environ if environ is None else environ)

    def get(name: str, default: str) -> str:
        value = env.get(name, "").strip()
        return value or default

    ratio_text = get(RISK_MARGIN_CALL_RATIO, "0.80")
    try:
        ratio = parse_decimal(ratio_text)
    except ValueError as exc:
        raise ConfigurationError(f"{RISK_MARGIN_CALL_RATIO}: {exc}") from exc
    if not Decimal(0) < ratio < Decimal(1):
        raise ConfigurationError(
            f"{RISK_MARGIN_CALL_RATIO} must be between 0 and 1, got {ratio_text}"
        )
    stale_text = get(STALE_MARK_AFTER_SECONDS, "300")
    if not stale_text.isdigit() or int(stale_text) < 1:
        raise ConfigurationError(
            f"{STALE_MARK_AFTER_SECONDS} must be a positive integer, got {stale_text}"
        )
    cache_text = get(MARK_CACHE_SECONDS, "0")
    try:
        cache_seconds = parse_decimal(cache_text)
    except ValueError as exc:
        raise ConfigurationError(f"{MARK_CACHE_SECONDS}: {exc}") from exc
    if not Decimal(0) <= cache_seconds <= Decimal(60):
        raise ConfigurationError(
            f"{MARK_CACHE_SECONDS} must be between 0 and 60 seconds, got {cache_text}"
        )
    batch_text = get(MARKS_FANOUT_BATCH, "200")
    if not batch_text.isdigit() or not 1 <= int(batch_text) <= 5000:
        raise ConfigurationError(
            f"{MARKS_FANOUT_BATCH} must be an integer from 1 to 5000, got {batch_text}"
        )
    return Settings(
        marks_fanout_queue=get(MARKS_FANOUT_QUEUE, get(MARKS_QUEUE, "marks") + "-fanout"),
        marks_fanout_batch=int(batch_text),
        stale_mark_after_seconds=int(stale_text),
        mark_cache_seconds=float(cache_seconds),
        trades_queue=get(TRADES_QUEUE, "trades"),
        marks_queue=get(MARKS_QUEUE, "marks"),
        alerts_queue=get(ALERTS_QUEUE, "alerts"),
        cosmos_endpoint=env.get(COSMOS_ENDPOINT) or None,
        cosmos_key=env.get(COSMOS_KEY) or None,
        cosmos_database=get(COSMOS_DATABASE, "tradeguard"),
        instruments_file=Path(get(INSTRUMENTS_FILE, str(SHIPPED_CATALOG))),
        margin_call_ratio=ratio,
        large_trade_notional=parse_asset_amounts(
            env.get(RISK_LARGE_TRADE_NOTIONAL, DEFAULT_LARGE_TRADE_NOTIONAL),
            RISK_LARGE_TRADE_NOTIONAL,
        ),
        position_limit_notional=parse_asset_amounts(
            env.get(RISK_POSITION_LIMIT_NOTIONAL, DEFAULT_POSITION_LIMIT_NOTIONAL),
            RISK_POSITION_LIMIT_NOTIONAL,
        ),
        environ=env,
    )
