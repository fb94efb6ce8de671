"""Every app setting the code reads: names, defaults, and one loader.

Settings are read when :func:`load_settings` is called, never at import, so tests and the
local host can set them first. Names match the contract's settings table, ``infra/`` and
``local.settings.sample.json``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from handlers.core.decimals import parse_decimal
from handlers.errors import ConfigurationError

__all__ = [
    "ALERTS_QUEUE",
    "AZURE_SDK_LOG_LEVEL",
    "COSMOS_DATABASE",
    "COSMOS_ENDPOINT",
    "COSMOS_KEY",
    "DEFAULT_LARGE_TRADE_NOTIONAL",
    "DEFAULT_POSITION_LIMIT_NOTIONAL",
    "INSTRUMENTS_FILE",
    "MARKS_FANOUT_BATCH",
    "MARKS_FANOUT_QUEUE",
    "MARKS_INDEX_SHARDS",
    "MARKS_QUEUE",
    "MARK_CACHE_SECONDS",
    "ORDERS_QUEUE",
    "ORDER_DECISIONS_QUEUE",
    "ORDER_MARKET_SLIPPAGE",
    "ORDER_MAX_MARGIN_RATIO",
    "ORDER_RATE_LIMIT_PER_SECOND",
    "RISK_BAND_WIDTH",
    "RISK_LARGE_TRADE_NOTIONAL",
    "RISK_MARGIN_CALL_RATIO",
    "RISK_POSITION_LIMIT_NOTIONAL",
    "STALE_MARK_AFTER_SECONDS",
    "STORAGE_CONNECTION",
    "TRADES_QUEUE",
    "Settings",
    "fanout_queue_expression",
    "load_settings",
    "orders_queue_expression",
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
MARKS_INDEX_SHARDS = "MARKS_INDEX_SHARDS"
RISK_BAND_WIDTH = "RISK_BAND_WIDTH"
ORDERS_QUEUE = "ORDERS_QUEUE"
ORDER_DECISIONS_QUEUE = "ORDER_DECISIONS_QUEUE"
ORDER_MARKET_SLIPPAGE = "ORDER_MARKET_SLIPPAGE"
ORDER_RATE_LIMIT_PER_SECOND = "ORDER_RATE_LIMIT_PER_SECOND"
ORDER_MAX_MARGIN_RATIO = "ORDER_MAX_MARGIN_RATIO"
AZURE_SDK_LOG_LEVEL = "AZURE_SDK_LOG_LEVEL"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
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
    "MARKS_INDEX_",
    "ORDER",  # ORDERS_QUEUE, ORDER_DECISIONS_QUEUE, ORDER_*
    AZURE_SDK_LOG_LEVEL,
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
            asset repeats (naming the setting and its value).
    """
    out: dict[str, Decimal] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        asset, sep, amount = entry.partition(":")
        asset = asset.strip()
        if not sep or not asset or asset in out:
            raise ConfigurationError(
                f"bad entry {entry!r} (want ASSET:amount, once each)", name, text
            )
        try:
            value = parse_decimal(amount.strip())
        except ValueError as exc:
            raise ConfigurationError(f"{entry!r}: {exc}", name, text) from exc
        if value <= 0:
            raise ConfigurationError(f"{entry!r}: the amount must be > 0", name, text)
        out[asset] = value
    return out


def orders_queue_expression(environ: Mapping[str, str] | None = None) -> str:
    """The ``queueName`` of the orders trigger: ``%ORDERS_QUEUE%`` when that setting is
    set, else its default ``orders`` (the host refuses to index a function whose
    ``%SETTING%`` is missing, and apps deployed before orders existed do not set it)."""
    env = os.environ if environ is None else environ
    return f"%{ORDERS_QUEUE}%" if env.get(ORDERS_QUEUE, "").strip() else "orders"


_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,55}$")


def _queue(env: Mapping[str, str], name: str, default: str) -> str:
    """A queue name setting: 3–56 characters (room for ``-poison``) of lowercase letters,
    digits and single hyphens, as Azure Queue Storage names queues."""
    value = env.get(name, "").strip() or default
    if not _QUEUE_NAME.fullmatch(value):
        raise ConfigurationError(
            "a queue name is 3-56 lowercase letters, digits and single hyphens "
            "(starting and ending with a letter or digit)",
            name,
            value,
        )
    return value


def _number(
    env: Mapping[str, str], name: str, default: str, low: Decimal, high: Decimal, what: str
) -> Decimal:
    text = env.get(name, "").strip() or default
    try:
        value = parse_decimal(text)
    except ValueError as exc:
        raise ConfigurationError(f"must be {what}: {exc}", name, text) from exc
    if not low <= value <= high:
        raise ConfigurationError(f"must be {what}", name, text)
    return value


def _integer(env: Mapping[str, str], name: str, default: str, low: int, high: int) -> int:
    text = env.get(name, "").strip() or default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigurationError(f"must be an integer from {low} to {high}", name, text)
    return int(text)


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
    #: Logical partitions the holder index of one symbol spans (``MARKS_INDEX_SHARDS``).
    marks_index_shards: int = 4
    #: The widest risk band, a fraction of the mark each way (``RISK_BAND_WIDTH``).
    risk_band_width: Decimal = Decimal("0.05")
    #: The pre-trade checks (``ORDERS_QUEUE`` in, ``ORDER_DECISIONS_QUEUE`` out).
    orders_queue: str = "orders"
    order_decisions_queue: str = "order-decisions"
    #: How far beyond the mark a MARKET order is valued (a fraction).
    order_market_slippage: Decimal = Decimal("0.0005")
    #: Orders per account per second of ``submittedAt`` (0: no limit).
    order_rate_limit_per_second: int = 50
    #: The margin ratio an order may not bring its wallet to (``MARGIN_RATIO_LIMIT``).
    order_max_margin_ratio: Decimal = Decimal("0.80")
    #: The level of the Azure SDKs' loggers (their HTTP logs are INFO: kept out of the
    #: worker's forwarded logs, and so of Application Insights, by default).
    azure_sdk_log_level: str = "WARNING"
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``).

    Raises:
        ConfigurationError: a setting is present but malformed (the error names the
            setting and its value).
    """
    env = dict(os.environ if environ is None else environ)

    def get(name: str, default: str) -> str:
        value = env.get(name, "").strip()
        return value or default

    ratio = _number(env, RISK_MARGIN_CALL_RATIO, "0.80", Decimal(0), Decimal(1), "in (0, 1)")
    if ratio in (0, 1):
        raise ConfigurationError("must be in (0, 1)", RISK_MARGIN_CALL_RATIO, str(ratio))
    stale = _integer(env, STALE_MARK_AFTER_SECONDS, "300", 1, 10**9)
    cache_seconds = _number(
        env, MARK_CACHE_SECONDS, "0", Decimal(0), Decimal(60), "from 0 to 60 seconds"
    )
    batch = _integer(env, MARKS_FANOUT_BATCH, "200", 1, 5000)
    shards = _integer(env, MARKS_INDEX_SHARDS, "4", 1, 64)
    width = _number(env, RISK_BAND_WIDTH, "0.05", Decimal(0), Decimal("0.5"), "in (0, 0.5]")
    if width == 0:
        raise ConfigurationError("must be in (0, 0.5]", RISK_BAND_WIDTH, str(width))
    level = get(AZURE_SDK_LOG_LEVEL, "WARNING").upper()
    if level not in _LOG_LEVELS:
        raise ConfigurationError(
            f"must be one of {', '.join(_LOG_LEVELS)}", AZURE_SDK_LOG_LEVEL, level
        )
    endpoint = env.get(COSMOS_ENDPOINT, "").strip() or None
    if endpoint is not None and not re.fullmatch(r"https://[^\s/]+(:\d+)?/?", endpoint):
        raise ConfigurationError(
            "must be the account's https endpoint, e.g. https://<account>.documents.azure.com:443/",
            COSMOS_ENDPOINT,
            endpoint,
        )
    marks_queue = _queue(env, MARKS_QUEUE, "marks")
    slippage = _number(
        env, ORDER_MARKET_SLIPPAGE, "0.0005", Decimal(0), Decimal("0.5"), "in [0, 0.5)"
    )
    if slippage == Decimal("0.5"):
        raise ConfigurationError("must be in [0, 0.5)", ORDER_MARKET_SLIPPAGE, str(slippage))
    max_ratio = _number(
        env, ORDER_MAX_MARGIN_RATIO, str(ratio), Decimal(0), Decimal(1), "in (0, 1]"
    )
    if max_ratio == 0:
        raise ConfigurationError("must be in (0, 1]", ORDER_MAX_MARGIN_RATIO, str(max_ratio))
    return Settings(
        orders_queue=_queue(env, ORDERS_QUEUE, "orders"),
        order_decisions_queue=_queue(env, ORDER_DECISIONS_QUEUE, "order-decisions"),
        order_market_slippage=slippage,
        order_rate_limit_per_second=_integer(env, ORDER_RATE_LIMIT_PER_SECOND, "50", 0, 10**6),
        order_max_margin_ratio=max_ratio,
        marks_fanout_queue=_queue(env, MARKS_FANOUT_QUEUE, marks_queue + "-fanout"),
        marks_fanout_batch=batch,
        marks_index_shards=shards,
        risk_band_width=width,
        stale_mark_after_seconds=stale,
        mark_cache_seconds=float(cache_seconds),
        trades_queue=_queue(env, TRADES_QUEUE, "trades"),
        marks_queue=marks_queue,
        alerts_queue=_queue(env, ALERTS_QUEUE, "alerts"),
        azure_sdk_log_level=level,
        cosmos_endpoint=endpoint,
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
