"""bench.bound's kernel is the engine's computation, not a cheaper one: the figures it
computes equal handlers.core's on a stream that crosses mark rounds."""

from __future__ import annotations

import pytest

from bench import bound
from bench.pure import MARK_EVERY, stream
from handlers.core.catalog import load_catalog
from handlers.settings import SHIPPED_CATALOG


def test_the_kernel_computes_what_the_engine_computes() -> None:
    catalog = load_catalog(SHIPPED_CATALOG)
    specs = {symbol: bound.Spec(inst) for symbol, inst in catalog.instruments.items()}
    bodies = stream(2 * MARK_EVERY + 100, 40, seed=3)
    compared = bound.check(bodies, catalog, specs)
    assert compared > 10 * len(bodies)  # wallet figures and every cross position's


def test_a_differing_figure_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = load_catalog(SHIPPED_CATALOG)
    specs = {symbol: bound.Spec(inst) for symbol, inst in catalog.instruments.items()}
    real = bound._liq

    def off_by_one_tick(*args: object) -> tuple[object, bool]:
        price, falls = real(*args)  # type: ignore[arg-type]
        return (None if price is None else price + 1, falls)

    monkeypatch.setattr(bound, "_liq", off_by_one_tick)
    with pytest.raises(AssertionError, match=r"kernel .* != engine"):
        bound.check(stream(50, 5, seed=3), catalog, specs)
