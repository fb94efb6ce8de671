"""``python -m devhost accounts``: print the account documents the app keeps in Cosmos DB.

By default a table of the open positions and one of the wallets at the latest stored
marks, rounded for reading (:mod:`devhost.present`); ``--json`` prints the whole documents
as stored, at full precision (their figures as of each one's ``valuedAt``).
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

__all__ = [
    "accounts_command",
    "at_stored_marks",
    "load_accounts",
    "render_accounts",
    "settle_assets",
]

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


def at_stored_marks(settings: Settings, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents with their figures at the latest stored mark of every symbol (a
    document's own are as of its ``valuedAt``: a mark inside its risk bands leaves them
    there). A document the app cannot read is returned as stored.

    Raises:
        Exception: whatever the Cosmos SDK raises when the marks cannot be read.
    """
    from dataclasses import replace

    from devhost.cosmos import container
    from handlers.adapters.mapping import (
        account_from_document,
        account_to_document,
        mark_from_document,
    )
    from handlers.core.catalog import load_catalog
    from handlers.core.valuation import value
    from handlers.errors import UnreadableDocument
    from handlers.flows.banding import at_latest_marks

    catalog = load_catalog(settings.instruments_file)
    rows = container(settings, "marks").query_items(
        "SELECT * FROM c WHERE c.type = 'mark'", enable_cross_partition_query=True
    )
    marks = {str(row["symbol"]): mark_from_document(row) for row in rows}
    out = []
    for doc in docs:
        try:
            account = account_from_document(doc)
        except UnreadableDocument:
            out.append(doc)
            continue
        ledger = at_latest_marks(account.ledger, marks)
        valuation = value(ledger, catalog, settings.margin_call_ratio)
        now = replace(account, ledger=ledger)
        figures = account_to_document(now, valuation) if now.updated_at else doc
        keep = ("wallets", "positions", "riskState", "valuedAt")
        out.append({**doc, **{k: figures[k] for k in keep if k in figures}})
    return out


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
        try:
            docs = at_stored_marks(settings, docs)
        except Exception as exc:
            logger.error("reading marks failed: %s", exc)
            return 1
        lines = render_accounts(docs, settings.margin_call_ratio, settle_assets(settings))
        print("\n".join(lines), file=out)
    logger.info("%d account(s)", len(docs))
    return 0
