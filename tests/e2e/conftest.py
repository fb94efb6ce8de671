"""Fixtures for devhost's end-to-end tests: a real Azurite on a free port (started and
stopped through devhost.services) and the recorder test app with unique queue names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devhost_support import AppEnv, Azurite, free_port, make_app

from devhost import services


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite (blob, queue, table) started through devhost.services on free ports; its
    process group is stopped at the end of the session."""
    run_dir = tmp_path_factory.mktemp("services")
    port = services.start_one(
        "azurite", run_dir, free_port(), blob_port=free_port(), table_port=free_port()
    )
    local = services.local_services(run_dir)
    try:
        yield Azurite(local.storage_connection_string, port, run_dir)
    finally:
        services.stop_one("azurite", run_dir)


@pytest.fixture
def recorder(tmp_path: Path, azurite: Azurite) -> AppEnv:
    """The recorder app with its default host.json."""
    return make_app("recorder", tmp_path, azurite)
