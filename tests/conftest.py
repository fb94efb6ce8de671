"""Shared fixtures: the local services for the session, and one isolated app per test."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost import services
from devhost.services import LocalServices
from tests.support import AppUnderTest, free_port


@pytest.fixture(scope="session")
def local_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    """Azurite and the Cosmos server on free ports for the whole session; stopped by
    process group at the end."""
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    run_dir = tmp_path_factory.mktemp("services")
    started = services.start(run_dir, queue_port=free_port(), cosmos_port=free_port())
    try:
        yield started
    finally:
        services.stop(run_dir)


@pytest.fixture
def app(local_services: LocalServices, tmp_path: Path) -> AppUnderTest:
    """A fresh app (own queues and database) on the session's services."""
    return AppUnderTest(local_services, tmp_path)
