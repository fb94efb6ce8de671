"""The counts phase of the end-to-end bench: the app's own code in this process on the
real Cosmos store and alert sink, whose SDK clients are wrapped by counting proxies, so
what is counted per fill is Cosmos and queue requests (and their time, and the CPU)."""

from __future__ import annotations

import asyncio
import inspect
import statistics
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from bench.harness import Names, app_settings, cleanup, rounded
from bench.workload import Workload, b64
from devhost.services import LocalServices
from handlers.settings import load_settings


class _Counting:
    """Wraps an object of async methods and counts (and times) every call by name."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        if not inspect.iscoroutinefunction(attr):  # e.g. query_items: a pager, one query

            def counted_sync(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] += 1
                return attr(*args, **kwargs)

            return counted_sync

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            started = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return counted

    def reset(self) -> None:
        self.calls.clear()
        self.seconds = 0.0


class _CountingAll:
    """The sum of several counters (one per Cosmos container), by container.method."""

    def __init__(self, parts: Mapping[str, _Counting]) -> None:
        self._parts = parts

    @property
    def calls(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for container, part in self._parts.items():
            out.update({f"{container}.{k}": v for k, v in part.calls.items()})
        return out

    @property
    def seconds(self) -> float:
        return sum(part.seconds for part in self._parts.values())

    def reset(self) -> None:
        for part in self._parts.values():
            part.reset()


def count_phase(ls: LocalServices, sample: Workload) -> dict[str, Any]:
    """Cosmos and queue calls per applied fill, by the service code in this process."""
    return asyncio.run(_count_phase(ls, sample))


async def _count_phase(ls: LocalServices, sample: Workload) -> dict[str, Any]:
    from bench.inprocess import (
        CosmosLedgerStore,
        Deps,
        QueueAlertSink,
        connect,
        load_catalog,
        process_mark_message,
        process_trade_message,
    )

    names = Names("ct")
    cosmos: Any = None
    sink: Any = None
    try:
        settings = load_settings(app_settings(ls, names))
        assert settings.cosmos_endpoint is not None
        cosmos = connect(settings.cosmos_endpoint, settings.cosmos_key, settings.cosmos_database)
        inner = CosmosLedgerStore(cosmos, settings.cosmos_database)
        await inner.ensure()
        # Count Cosmos requests, not store methods: a read the account cache answers is
        # no request. Each container proxy of the store is wrapped; their calls are added.
        proxies = {name: _Counting(proxy) for name, proxy in inner._containers.items()}
        inner._containers.update(proxies)
        store = _CountingAll(proxies)
        sink = QueueAlertSink(settings.environ, settings.storage_connection, settings.alerts_queue)
        client = _Counting(sink._client)  # the SDK QueueClient the sink sends with
        sink._client = client  # type: ignore[assignment]
        deps = Deps(
            settings=settings,
            catalog=load_catalog(settings.instruments_file),
            store=inner,
            sink=sink,
        )
        for mark in sample.marks:
            await process_mark_message(b64(mark).encode(), deps)
        for deposit in sample.deposits:
            outcome = await process_trade_message(b64(deposit).encode(), deps)
            assert outcome.kind == "APPLIED"

        held: set[tuple[str, str]] = set()
        per: dict[str, dict[str, Any]] = {
            kind: {
                "fills": 0,
                "cpu_ms": [],
                "cosmos": Counter(),
                "queue": Counter(),
                "ms": [],
                "cosmos_ms": [],
                "queue_ms": [],
            }
            for kind in ("held", "opening")
        }
        for fill in sample.fills:
            key = (fill["accountId"], fill["symbol"])
            kind = "held" if key in held else "opening"
            held.add(key)
            store.reset()
            client.reset()
            cpu = time.process_time()
            started = time.perf_counter()
            outcome = await process_trade_message(b64(fill).encode(), deps)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            client.calls.pop("create_queue", None)  # the sink creates its queue once per process
            if outcome.kind != "APPLIED":
                raise RuntimeError(f"sample fill not applied: {outcome}")
            bucket = per[kind]
            bucket["fills"] += 1
            bucket["cosmos"].update(store.calls)
            bucket["queue"].update(client.calls)
            bucket["ms"].append(elapsed * 1000)
            bucket["cpu_ms"].append(cpu * 1000)
            bucket["cosmos_ms"].append(store.seconds * 1000)
            bucket["queue_ms"].append(client.seconds * 1000)
        out: dict[str, Any] = {}
        for kind, b in per.items():
            f = b["fills"] or 1
            cosmos_total = sum(b["cosmos"].values())
            queue_total = sum(b["queue"].values())
            out[kind] = {
                "fills": b["fills"],
                "cosmos_calls_per_fill": rounded(cosmos_total / f),
                "cosmos_calls_by_method": {
                    k: rounded(v / f) for k, v in sorted(b["cosmos"].items())
                },
                "queue_calls_per_fill": rounded(queue_total / f),
                "queue_calls_by_method": {k: rounded(v / f) for k, v in sorted(b["queue"].items())},
                "ms_per_fill": rounded(statistics.mean(b["ms"]) if b["ms"] else None),
                "cosmos_ms_per_fill": rounded(statistics.mean(b["cosmos_ms"]) if b["ms"] else None),
                "queue_ms_per_fill": rounded(statistics.mean(b["queue_ms"]) if b["ms"] else None),
            }
            if b["ms"]:
                other = [
                    t - c - q
                    for t, c, q in zip(b["ms"], b["cosmos_ms"], b["queue_ms"], strict=True)
                ]
                out[kind]["other_ms_per_fill"] = rounded(statistics.mean(other))
                out[kind]["cpu_ms_per_fill"] = rounded(statistics.mean(b["cpu_ms"]))
        total = sum(per[k]["fills"] for k in per) or 1
        out["app_queue_calls_per_fill"] = rounded(
            sum(sum(per[k]["queue"].values()) for k in per) / total
        )
        return out
    finally:
        if cosmos is not None:
            await cosmos.close()
        if sink is not None:
            await sink.close()
        cleanup(ls, names)
