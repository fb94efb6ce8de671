"""The ``extensions.queues`` section of host.json, read the way the Functions host reads it.

Defaults and limits follow ``QueuesOptions`` of the Storage Queues extension (v5): batchSize
16 (1..32), newBatchThreshold ``processorCount * batchSize / 2``, maxPollingInterval 1 minute
(at least 100 ms), visibilityTimeout 0, maxDequeueCount 5 (at least 1), messageEncoding
``base64``. Option names are matched case-insensitively, as .NET configuration does.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HostJsonError", "QueuesOptions", "load_queues_options", "parse_timespan"]

logger = logging.getLogger(__name__)

MIN_POLLING_INTERVAL = 0.1
_TIMESPAN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d+):(?P<minutes>\d+)(?::(?P<seconds>\d+(?:\.\d+)?))?$"
)


class HostJsonError(Exception):
    """host.json cannot be read or holds a queue option the real host would refuse."""


@dataclass(frozen=True)
class QueuesOptions:
    """The queue trigger options of one host; durations in seconds."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @property
    def parallelism(self) -> int:
        """The most messages one function processes at once: batchSize + newBatchThreshold."""
        return self.batch_size + self.new_batch_threshold


def parse_timespan(value: object, name: str) -> float:
    """Parse a .NET TimeSpan (``"00:00:02"``, ``"1.00:00:00"``) or integer milliseconds.

    Returns seconds.

    Raises:
        HostJsonError: the value is neither form, or is negative.
    """
    if isinstance(value, bool):
        raise HostJsonError(f"extensions.queues.{name}: expected a TimeSpan, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip()) / 1000.0
    elif isinstance(value, str) and (match := _TIMESPAN.match(value.strip())):
        seconds = (
            int(match["days"] or 0) * 86400
            + int(match["hours"]) * 3600
            + int(match["minutes"]) * 60
            + float(match["seconds"] or 0)
        )
    else:
        raise HostJsonError(
            f"extensions.queues.{name}: {value!r} is not a TimeSpan like '00:00:02' "
            "or a number of milliseconds"
        )
    if seconds < 0:
        raise HostJsonError(f"extensions.queues.{name} must not be negative, got {value!r}")
    return seconds


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise HostJsonError(f"extensions.queues.{name}: expected an integer, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise HostJsonError(
            f"extensions.queues.{name}: expected an integer, got {value!r}"
        ) from exc


def queues_options_from_dict(
    section: Mapping[str, Any], processor_count: int | None = None
) -> QueuesOptions:
    """Build :class:`QueuesOptions` from an ``extensions.queues`` mapping.

    Raises:
        HostJsonError: an option is malformed or out of the range the real host accepts.
    """
    options = {key.lower(): value for key, value in section.items()}
    cpus = processor_count if processor_count is not None else (os.cpu_count() or 1)

    batch_size = _int(options.get("batchsize", 16), "batchSize")
    if not 1 <= batch_size <= 32:
        raise HostJsonError(f"extensions.queues.batchSize must be 1..32, got {batch_size}")

    threshold = _int(options.get("newbatchthreshold", -1), "newBatchThreshold")
    if threshold < -1:
        raise HostJsonError(f"extensions.queues.newBatchThreshold must be >= 0, got {threshold}")
    if threshold == -1:
        threshold = cpus * batch_size // 2

    polling = parse_timespan(options.get("maxpollinginterval", 60000), "maxPollingInterval")
    if polling < MIN_POLLING_INTERVAL:
        raise HostJsonError(
            f"extensions.queues.maxPollingInterval must be at least 100 ms, got {polling * 1000:g} ms"
        )
    visibility = parse_timespan(options.get("visibilitytimeout", 0), "visibilityTimeout")

    max_dequeue = _int(options.get("maxdequeuecount", 5), "maxDequeueCount")
    if max_dequeue < 1:
        raise HostJsonError(f"extensions.queues.maxDequeueCount must be >= 1, got {max_dequeue}")

    encoding = options.get("messageencoding", "base64")
    if not isinstance(encoding, str) or encoding.strip().lower() not in ("base64", "none"):
        raise HostJsonError(
            f"extensions.queues.messageEncoding must be 'base64' or 'none', got {encoding!r}"
        )
    return QueuesOptions(
        batch_size=batch_size,
        new_batch_threshold=threshold,
        max_polling_interval=polling,
        visibility_timeout=visibility,
        max_dequeue_count=max_dequeue,
        message_encoding=encoding.strip().lower(),
    )


def load_queues_options(app_dir: Path, processor_count: int | None = None) -> QueuesOptions:
    """Read ``<app_dir>/host.json`` and return its queue options (defaults when absent).

    Raises:
        HostJsonError: host.json is not valid JSON or an option is invalid.
    """
    path = app_dir / "host.json"
    if not path.is_file():
        logger.warning("no host.json in %s: using the host's default queue options", app_dir)
        return queues_options_from_dict({}, processor_count)
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HostJsonError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise HostJsonError(f"{path}: expected a JSON object")
    raw_extensions = document.get("extensions") or {}
    if not isinstance(raw_extensions, dict):
        raise HostJsonError(f"{path}: extensions must be an object")
    extensions = {str(k).lower(): v for k, v in raw_extensions.items()}
    section = extensions.get("queues") or {}
    if not isinstance(section, dict):
        raise HostJsonError(f"{path}: extensions.queues must be an object")
    return queues_options_from_dict(section, processor_count)
