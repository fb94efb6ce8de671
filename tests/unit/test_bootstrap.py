"""handlers.bootstrap: dependencies per event loop, closed when the loop shuts down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from handlers import bootstrap
from handlers.core.catalog import Catalog
from handlers.flows import Deps
from handlers.settings import Settings

from .fakes import FakeSink, FakeStore


class Closing:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Deps]]:
    made: list[Deps] = []

    def fake_build(settings: Settings, catalog: Catalog) -> Deps:
        deps = Deps(settings, catalog, Closing(FakeStore()), Closing(FakeSink()))  # type: ignore[arg-type]
        made.append(deps)
        return deps

    monkeypatch.setattr(bootstrap, "_build", fake_build)
    monkeypatch.setattr(bootstrap, "configuration", lambda: (object(), object()))
    bootstrap.reset()
    yield made
    bootstrap.reset()


def test_one_set_per_loop_and_closed_at_its_shutdown(built: list[Deps]) -> None:
    async def twice() -> bool:
        return bootstrap.deps() is bootstrap.deps()

    assert asyncio.run(twice())
    assert asyncio.run(twice())
    assert len(built) == 2  # a new loop gets its own clients (they belong to their loop)
    for deps in built:
        assert deps.store.closed == 1  # type: ignore[attr-defined]
        assert deps.sink.closed == 1  # type: ignore[attr-defined]


def test_deps_needs_a_running_loop(built: list[Deps]) -> None:
    with pytest.raises(RuntimeError):
        bootstrap.deps()
