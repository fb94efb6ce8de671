"""Shared fixtures of the unit suite (pure: no network, no Azure services)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m` from another directory
    sys.path.insert(0, str(ROOT))

from handlers.core.catalog import Catalog, Instrument, load_catalog  # noqa: E402
from handlers.flows import Deps  # noqa: E402
from handlers.settings import SHIPPED_CATALOG  # noqa: E402

from .fakes import FakeClock, FakeDecisions, FakeSink, FakeStore  # noqa: E402
from .flowkit import make_deps  # noqa: E402


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(SHIPPED_CATALOG)


@pytest.fixture(scope="session")
def btcusdt(catalog: Catalog) -> Instrument:
    inst = catalog.get("BTCUSDT")
    assert inst is not None
    return inst


@pytest.fixture(scope="session")
def ethusdt(catalog: Catalog) -> Instrument:
    inst = catalog.get("ETHUSDT")
    assert inst is not None
    return inst


@pytest.fixture(scope="session")
def btcusd_perp(catalog: Catalog) -> Instrument:
    inst = catalog.get("BTCUSD_PERP")
    assert inst is not None
    return inst


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def decisions() -> FakeDecisions:
    return FakeDecisions()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def deps(store: FakeStore, sink: FakeSink, clock: FakeClock, decisions: FakeDecisions) -> Deps:
    """The flows' dependencies over the fakes, with the default settings (the decisions
    sent go to the ``decisions`` fixture)."""
    return make_deps(store, sink, clock, decisions=decisions)
