"""The floor phases of the end-to-end bench: the least any correct pipeline does per
message (receive, one account read, one conditional write, delete; optionally the
workload's alerts), on one asyncio loop with CONCURRENCY in flight."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from typing import Any

from bench.harness import (
    CONCURRENCY,
    FLOOR_BATCH,
    Names,
    cleanup,
    cpu_delta,
    enqueue,
    node_cpu_seconds,
    rounded,
)
from bench.workload import Workload, b64, is_large
from devhost.services import LocalServices

logger = logging.getLogger("bench.e2e")

#: The floor gives up when the queue yields nothing for this long (it should never).
STALL_SECONDS = 60.0


async def _floor_loop(ls: LocalServices, names: Names, n: int, alerts: bool) -> dict[str, Any]:
    """Receive (FLOOR_BATCH per call), read the account, write it conditionally (replace
    with the ETag, or create), [send one alert,] delete; CONCURRENCY in flight."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
    from azure.cosmos.aio import CosmosClient
    from azure.cosmos.exceptions import (
        CosmosAccessConditionFailedError,
        CosmosResourceExistsError,
        CosmosResourceNotFoundError,
    )
    from azure.storage.queue.aio import QueueClient

    conflicts = 0
    done = 0
    delete_errors = 0
    started = time.monotonic()
    conn = ls.storage_connection_string
    async with (
        QueueClient.from_connection_string(conn, names.trades) as queue,
        QueueClient.from_connection_string(conn, names.alerts) as alert_queue,
        CosmosClient(ls.cosmos_endpoint, credential=ls.settings()["COSMOS_KEY"]) as cosmos,
    ):
        if alerts:
            with contextlib.suppress(ResourceExistsError):
                await alert_queue.create_queue()
        ledger = cosmos.get_database_client(names.database).get_container_client("ledger")
        slots = asyncio.Semaphore(CONCURRENCY)
        tasks: set[asyncio.Task[None]] = set()

        async def handle(message: Any) -> None:
            nonlocal conflicts, done, delete_errors
            try:
                event = json.loads(base64.b64decode(message.content))
                account = event["accountId"]
                while True:
                    try:
                        doc = await ledger.read_item(item="@account", partition_key=account)
                    except CosmosResourceNotFoundError:
                        doc = None
                    try:
                        if doc is None:
                            body = {
                                "id": "@account",
                                "accountId": account,
                                "n": 1,
                                "last": event["tradeId"],
                            }
                            await ledger.create_item(body=body)
                        else:
                            body = {k: v for k, v in doc.items() if not k.startswith("_")}
                            body["n"] = int(body["n"]) + 1
                            body["last"] = event["tradeId"]
                            await ledger.replace_item(
                                item="@account",
                                body=body,
                                etag=doc["_etag"],
                                match_condition=MatchConditions.IfNotModified,
                            )
                        break
                    except (CosmosAccessConditionFailedError, CosmosResourceExistsError):
                        conflicts += 1
                if alerts and is_large(event):
                    alert = {
                        "type": "LARGE_TRADE",
                        "sourceId": event["tradeId"],
                        "accountId": account,
                    }
                    await alert_queue.send_message(b64(alert))
                try:
                    await queue.delete_message(message)
                except ResourceNotFoundError:
                    delete_errors += 1
                done += 1
            finally:
                slots.release()

        received = 0
        last_seen = time.monotonic()
        while received < n and time.monotonic() - last_seen < STALL_SECONDS:
            pages = queue.receive_messages(
                messages_per_page=FLOOR_BATCH, visibility_timeout=300
            ).by_page()
            batch = []
            async for page in pages:
                batch = [m async for m in page]
                break
            if not batch:
                await asyncio.sleep(0.05)
                continue
            last_seen = time.monotonic()
            received += len(batch)
            for message in batch:
                await slots.acquire()
                task = asyncio.create_task(handle(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
    seconds = time.monotonic() - started
    if received < n:
        logger.warning(
            "floor: %d of %d messages received before a %g s stall", received, n, STALL_SECONDS
        )
    return {
        "seconds": seconds,
        "processed": done,
        "etag_conflicts": conflicts,
        "delete_errors": delete_errors,
    }


def floor_phase(ls: LocalServices, workload: Workload, run: int, alerts: bool) -> dict[str, Any]:
    from azure.cosmos import CosmosClient, PartitionKey

    names = Names("fa" if alerts else "fl")
    try:
        with CosmosClient(ls.cosmos_endpoint, credential=ls.settings()["COSMOS_KEY"]) as cosmos:
            db = cosmos.create_database(names.database)
            db.create_container(id="ledger", partition_key=PartitionKey(path="/accountId"))
        asyncio.run(enqueue(ls.storage_connection_string, names.trades, workload.fills))
        n = len(workload.fills)
        nodes = node_cpu_seconds(ls.run_dir)
        cpu = time.process_time()
        stats = asyncio.run(_floor_loop(ls, names, n, alerts))
        cpu = time.process_time() - cpu
        node_cpu = cpu_delta(nodes, node_cpu_seconds(ls.run_dir))
        logger.info(
            "run %d floor%s: %d messages in %.1f s",
            run,
            " with alerts" if alerts else "",
            n,
            stats["seconds"],
        )
        return {
            "messages": n,
            "processed": stats["processed"],
            "etag_conflicts": stats["etag_conflicts"],
            "delete_errors": stats["delete_errors"],
            "wall_s": rounded(stats["seconds"]),
            "msgs_per_s": rounded(n / stats["seconds"]),
            "cpu_ms_per_msg": {
                "bench": rounded(cpu * 1000 / n),
                **{k: rounded(v * 1000 / n) for k, v in node_cpu.items()},
            },
        }
    finally:
        cleanup(ls, names)
