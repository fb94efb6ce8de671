"""``python -m devhost accounts``: print the account documents the app keeps in Cosmos DB."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from devhost.settings_file import SettingsError, load_settings

__all__ = ["accounts_command"]

logger = logging.getLogger(__name__)


def _summary(doc: dict[str, Any]) -> str:
    lines = [
        f"account {doc['accountId']}  riskState={doc['riskState']}  updatedAt={doc['updatedAt']}"
    ]
    for asset, w in sorted(doc["wallets"].items()):
        lines.append(
            f"  wallet {asset}: walletBalance={w['walletBalance']} marginBalance={w['marginBalance']} "
            f"availableBalance={w['availableBalance']} marginRatio={w['marginRatio']} riskState={w['riskState']}"
        )
    for p in doc["positions"]:
        lines.append(
            f"  position {p['symbol']}:{p['positionSide']} {p['marginMode']} qty={p['quantity']} "
            f"entry={p['entryPrice']} mark={p['markPrice']} notional={p['notional']} "
            f"uPnL={p['unrealizedPnl']} liq={p['liquidationPrice']} riskState={p['riskState']}"
        )
    return "\n".join(lines)


def accounts_command(
    *,
    account: str | None = None,
    as_json: bool = False,
    app_dir: Path | None = None,
    settings_file: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print every account document (or one), as a summary or as JSON.

    Returns the exit code: 0 done, 2 settings error, 1 Cosmos error.
    """
    from devhost.cosmos import container
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
        ledger = container(settings, "ledger")
        query = "SELECT * FROM c WHERE c.type = 'account'"
        params: list[dict[str, Any]] = []
        if account:
            query += " AND c.accountId = @account"
            params.append({"name": "@account", "value": account})
        docs = list(ledger.query_items(query, parameters=params, enable_cross_partition_query=True))
    except Exception as exc:
        logger.error("reading accounts failed: %s", exc)
        return 1
    for doc in sorted(docs, key=lambda d: str(d.get("accountId"))):
        clean = {k: v for k, v in doc.items() if not k.startswith("_")}
        print(json.dumps(clean, indent=2) if as_json else _summary(clean), file=out)
    logger.info("%d account(s)", len(docs))
    return 0
