"""``python -m devhost accounts``: print the account documents the app keeps in Cosmos DB.

By default a table of the open positions and one of the wallets, rounded for reading
(:mod:`devhost.present`); ``--json`` prints the whole documents at full precision.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from devhost import present
from devhost.settings_file import SettingsError, load_settings
from handlers.settings import Settings

__all__ = ["accounts_command", "load_accounts", "render_accounts", "settle_assets"]

logger = logging.getLogger(__name__)


def load_accounts(settings: Settings, account: str | None = None) -> list[dict[str, Any]]:
    """Every account document (or the one of ``account``), without Cosmos's ``_`` keys,
    in accountId order.

    Raises:
        ValueError: ``COSMOS_ENDPOINT`` is not set.
        Exception: whatever the Cosmos SDK raises when the server cannot be read.
    """
    from devhost.cosmos import container

    ledger = container(settings, "ledger")
    query = "SELECT * FROM c WHERE c.type = 'account'"
    params: list[dict[str, Any]] = []
    if account:
        query += " AND c.accountId = @account"
        params.append({"name": "@account", "value": account})
    docs = ledger.query_items(query, parameters=params, enable_cross_partition_query=True)
    clean = [{k: v for k, v in doc.items() if not k.startswith("_")} for doc in docs]
    return sorted(clean, key=lambda d: str(d.get("accountId")))


def settle_assets(settings: Settings) -> dict[str, str]:
    """Symbol → settle asset of the app's catalog (empty when it cannot be read)."""
    from handlers.core.catalog import load_catalog

    try:
        catalog = load_catalog(settings.instruments_file)
    except Exception as exc:
        logger.warning("instrument catalog %s: %s", settings.instruments_file, exc)
        return {}
    return {symbol: i.settle_asset for symbol, i in catalog.instruments.items()}


def render_accounts(
    docs: list[dict[str, Any]], call_ratio: Any, assets: Mapping[str, str]
) -> list[str]:
    """The positions table, a blank line and the wallets table."""
    positions = present.positions_table(docs, call_ratio, assets)
    return ["positions", *positions, "", "wallets", *present.wallets_table(docs, call_ratio)]


def accounts_command(
    *,
    account: str | None = None,
    as_json: bool = False,
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print every account document (or one): tables rounded for reading, or with
    ``as_json`` the documents as JSON.

    Returns the exit code: 0 done, 2 settings error, 1 Cosmos error.
    """
    from handlers.settings import load_settings as app_settings

    try:
        settings = app_settings(load_settings(app_dir, settings_file))
    except (SettingsError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    if not settings.cosmos_endpoint:
        logger.error("COSMOS_ENDPOINT is not set")
        return 2
    try:
        docs = load_accounts(settings, account)
    except Exception as exc:
        logger.error("reading accounts failed: %s", exc)
        return 1
    if as_json:
        for doc in docs:
            print(json.dumps(doc, indent=2), file=out)
    else:
        lines = render_accounts(docs, settings.margin_call_ratio, settle_assets(settings))
        print("\n".join(lines), file=out)
    logger.info("%d account(s)", len(docs))
    return 0
