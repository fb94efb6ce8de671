"""The Cosmos server with Azure-like latency (``slow_cosmos``): every request waits 5..10 ms
there, the session's own server answers at once, and a malformed latency is refused before
anything starts. A behaviour check with margins, not a benchmark."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from azure.cosmos import CosmosClient, PartitionKey

from devhost import services
from devhost.__main__ import main
from devhost.services import LocalServices
from tests.support import SLOW_COSMOS_LATENCY_MS, AppUnderTest

READS = 20
LEAST_MS = 5  # the slow server's least delay per request


def _point_reads(app: AppUnderTest, reads: int = READS) -> list[float]:
    """Milliseconds of each of ``reads`` point reads of one document through the SDK, after
    one untimed read (connection and account metadata)."""
    client = CosmosClient(app.settings["COSMOS_ENDPOINT"], credential=app.settings["COSMOS_KEY"])
    database = app.settings["COSMOS_DATABASE"]
    try:
        container = client.create_database(database).create_container(
            id="ledger", partition_key=PartitionKey(path="/accountId")
        )
        container.create_item({"id": "@account", "accountId": "a1"})
        container.read_item(item="@account", partition_key="a1")
        times: list[float] = []
        for _ in range(reads):
            started = time.perf_counter()
            container.read_item(item="@account", partition_key="a1")
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        client.delete_database(database)
        client.close()


@pytest.mark.services
def test_slow_cosmos_delays_every_request_and_the_session_server_is_unaffected(
    app: AppUnderTest,
    slow_app: AppUnderTest,
    local_services: LocalServices,
    slow_cosmos: LocalServices,
) -> None:
    assert slow_app.settings["AzureWebJobsStorage"] == app.settings["AzureWebJobsStorage"]
    assert slow_app.settings["COSMOS_ENDPOINT"] != app.settings["COSMOS_ENDPOINT"]
    assert services.status(slow_cosmos.run_dir)["cosmos"]["latency_ms"] == SLOW_COSMOS_LATENCY_MS
    assert services.status(local_services.run_dir)["cosmos"]["latency_ms"] is None

    slow = _point_reads(slow_app)
    normal = _point_reads(app)
    # Lower bounds only, with margin (a timer may fire up to ~1 ms early): the total, and
    # each read (every request is delayed, not some).
    assert sum(slow) >= READS * LEAST_MS * 0.8, slow
    assert min(slow) >= LEAST_MS - 1, slow
    # The session's server adds no delay: its fastest read beats the slow server's least.
    assert min(normal) < LEAST_MS, normal


@pytest.mark.parametrize("value", ["5-x", "10-5", "-5", "5-10-20", "", "60001"])
def test_a_malformed_latency_is_refused_naming_the_option(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["services", "start", "--run-dir", str(tmp_path), "--cosmos-latency-ms", value])
    assert exited.value.code == 2
    assert "argument --cosmos-latency-ms:" in capsys.readouterr().err
    with pytest.raises(services.ServiceError, match=r"cosmos_latency_ms: .* is not a latency"):
        services.start(tmp_path, cosmos_latency_ms=value)
    assert not list(tmp_path.iterdir())  # nothing was started


def test_latency_is_for_the_cosmos_server_only(tmp_path: Path) -> None:
    with pytest.raises(services.ServiceError, match="Cosmos server only"):
        services.start_one("azurite", tmp_path, cosmos_latency_ms="5-10")
