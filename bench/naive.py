"""The naive phase of the end-to-end bench: the shape of the common samples, one message
at a time with the synchronous SDKs, a read and an upsert per document, no ETag."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from typing import Any

from bench.harness import Names, cleanup, cpu_delta, enqueue, node_cpu_seconds, rounded
from bench.workload import LARGE_TRADE_USDT, Workload
from devhost.services import LocalServices

logger = logging.getLogger("bench.e2e")


def naive_phase(ls: LocalServices, workload: Workload, n: int, run: int) -> dict[str, Any]:
    """One message at a time, synchronous SDKs, a read and an upsert per document (the
    trade, then the account), no ETags, float maths."""
    from azure.cosmos import CosmosClient, PartitionKey
    from azure.cosmos.exceptions import CosmosResourceNotFoundError
    from azure.storage.queue import QueueClient

    names = Names("nv")
    conn = ls.storage_connection_string
    cosmos: CosmosClient | None = None
    try:
        asyncio.run(enqueue(conn, names.trades, workload.fills[:n]))
        nodes = node_cpu_seconds(ls.run_dir)
        cpu = time.process_time()
        started = time.monotonic()
        # -- the sample's code, set-up included (as a sample's script runs it) --
        cosmos = CosmosClient(ls.cosmos_endpoint, credential=ls.settings()["COSMOS_KEY"])
        database = cosmos.create_database_if_not_exists(names.database)
        container = database.create_container_if_not_exists(
            id="ledger", partition_key=PartitionKey(path="/accountId")
        )
        trades = QueueClient.from_connection_string(conn, names.trades)
        alerts = QueueClient.from_connection_string(conn, names.alerts)
        with contextlib.suppress(Exception):
            alerts.create_queue()
        processed = 0
        while processed < n:
            message = trades.receive_message(visibility_timeout=30)
            if message is None:
                time.sleep(0.05)
                continue
            data = json.loads(base64.b64decode(message.content))
            account_id = data["accountId"]
            # A read and an upsert per document (the definition): the trade first,
            # the samples' "skip it if it exists", then the account.
            try:
                container.read_item(item=data["tradeId"], partition_key=account_id)
                trades.delete_message(message)  # a redelivery: already recorded
                processed += 1
                continue
            except CosmosResourceNotFoundError:
                pass
            account: dict[str, Any]
            try:
                account = dict(container.read_item(item=account_id, partition_key=account_id))
            except CosmosResourceNotFoundError:
                account = {
                    "id": account_id,
                    "accountId": account_id,
                    "balance": 0.0,
                    "positions": {},
                }
            qty = float(data["quantity"]) * (1 if data["side"] == "BUY" else -1)
            price = float(data["price"])
            position = account["positions"].setdefault(data["symbol"], {"qty": 0.0, "entry": 0.0})
            new_qty = position["qty"] + qty
            if new_qty:
                position["entry"] = (position["qty"] * position["entry"] + qty * price) / new_qty
            position["qty"] = new_qty
            notional = abs(qty * price)
            account["balance"] -= float(data.get("fee", 0))
            account["margin"] = (
                sum(abs(p["qty"] * p["entry"]) for p in account["positions"].values())
                / data["leverage"]
            )
            container.upsert_item(account)
            container.upsert_item({**data, "id": data["tradeId"]})
            if notional >= LARGE_TRADE_USDT:
                alerts.send_message(
                    json.dumps(
                        {
                            "type": "LARGE_TRADE",
                            "accountId": account_id,
                            "tradeId": data["tradeId"],
                            "notional": notional,
                        }
                    )
                )
            trades.delete_message(message)
            processed += 1
        seconds = time.monotonic() - started
        cpu = time.process_time() - cpu
        node_cpu = cpu_delta(nodes, node_cpu_seconds(ls.run_dir))
        logger.info("run %d naive: %d messages in %.1f s", run, n, seconds)
        return {
            "messages": n,
            "wall_s": rounded(seconds),
            "msgs_per_s": rounded(n / seconds),
            "cpu_ms_per_msg": {
                "bench": rounded(cpu * 1000 / n),
                **{k: rounded(v * 1000 / n) for k, v in node_cpu.items()},
            },
        }
    finally:
        if cosmos is not None:
            cosmos.close()
        cleanup(ls, names)
