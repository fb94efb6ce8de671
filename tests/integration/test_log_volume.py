"""What a processed message logs where the Python worker runs the app: the worker sets the
root logger to INFO and forwards every record to the host (and Application Insights). The
Azure SDKs log each HTTP request and response at INFO; the app keeps them at WARNING
unless ``AZURE_SDK_LOG_LEVEL`` says otherwise."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from bench.workload import b64, deposit, fill
from handlers import bootstrap, observability
from tests import aio
from tests.support import AppUnderTest
from tests.unit.fakes import Capture, FakeMessage

pytestmark = pytest.mark.services


@pytest.fixture
def worker_logging() -> Iterator[Capture]:
    """The root logger as the worker sets it: INFO, every record forwarded (captured)."""
    root = logging.getLogger()
    level, capture = root.level, Capture()
    root.setLevel(logging.INFO)
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


def processed(app: AppUnderTest, capture: Capture, **settings: str) -> Counter[str]:
    """Process a deposit and a fill with the app's real adapters; records by logger."""
    env: dict[str, Any] = {**app.settings, **settings}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    bootstrap.reset()
    observability.reset()
    logging.getLogger("azure").setLevel(logging.NOTSET)
    try:
        for n, message in enumerate([deposit("log-1", "1000", "log-dep"), fill("log-1", "log-t")]):
            aio.trade(FakeMessage(f"m{n}", 1, b64(message).encode()))
        # Records of this thread only: the test's own synchronous Cosmos client (for
        # reading the app's documents) health-checks its endpoint from a thread of its
        # own, and those records are not the app's.
        me = threading.get_ident()
        return Counter(r.name.split(".")[0] for r in capture.records if r.thread == me)
    finally:
        aio.run(bootstrap.close())
        bootstrap.reset()
        observability.reset()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_processed_message_forwards_the_apps_records_only(
    app: AppUnderTest, worker_logging: Capture
) -> None:
    by_logger = processed(app, worker_logging)
    print(f"records for 2 messages: {dict(by_logger)}")
    assert by_logger["azure"] == 0
    assert 1 <= sum(by_logger.values()) <= 6  # the outcome line of each, and little else


def test_the_sdk_logs_return_when_the_setting_asks_for_them(
    app: AppUnderTest, worker_logging: Capture
) -> None:
    by_logger = processed(app, worker_logging, AZURE_SDK_LOG_LEVEL="INFO")
    print(f"records for 2 messages with AZURE_SDK_LOG_LEVEL=INFO: {dict(by_logger)}")
    assert by_logger["azure"] > 10
