"""Shared fixtures: the local services for the session, and one isolated app per test;
a second Cosmos server with Azure-like latency, and apps on it, for race tests."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost import services
from devhost.services import LocalServices
from tests.support import SLOW_COSMOS_LATENCY_MS, AppUnderTest, free_port


@pytest.fixture(scope="session")
def local_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    """Azurite and the Cosmos server on free ports for the whole session; stopped by
    process group at the end."""
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    run_dir = tmp_path_factory.mktemp("services")
    started = services.start(
        run_dir,
        queue_port=free_port(),
        cosmos_port=free_port(),
        blob_port=free_port(),
        table_port=free_port(),
    )
    try:
        yield started
    finally:
        services.stop(run_dir)


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Path) -> AppUnderTest:
    """A fresh app (own queues and database) on the session's services; on the Cosmos
    server with Azure-like latency instead when ``TRADEGUARD_TEST_LATENCY=1`` (to run any
    service test the way Azure widens races)."""
    if os.environ.get("TRADEGUARD_TEST_LATENCY") == "1":
        return AppUnderTest(request.getfixturevalue("slow_cosmos"), tmp_path)
    return AppUnderTest(request.getfixturevalue("local_services"), tmp_path)


@pytest.fixture(scope="session")
def slow_cosmos(
    local_services: LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServices]:
    """The session's Azurite with ANOTHER Cosmos server, on a free port, whose every request
    waits a random 5..10 ms (``SLOW_COSMOS_LATENCY_MS``) as in Azure: for race tests that
    need Azure's windows. It has its own run dir (``run_dir`` of the value returned) and is
    stopped by process group at the end of the session."""
    run_dir = tmp_path_factory.mktemp("slow-cosmos")
    try:
        port = services.start_one(
            "cosmos", run_dir, free_port(), cosmos_latency_ms=SLOW_COSMOS_LATENCY_MS
        )
        yield dataclasses.replace(local_services, cosmos_port=port, run_dir=run_dir)
    finally:
        services.stop_one("cosmos", run_dir)


@pytest.fixture
def slow_app(slow_cosmos: LocalServices, tmp_path: Path) -> AppUnderTest:
    """A fresh app (own queues and database) on the slow Cosmos server and the session's
    Azurite; ``AppUnderTest(slow_cosmos, tmp_path, overrides)`` for other settings."""
    return AppUnderTest(slow_cosmos, tmp_path)
