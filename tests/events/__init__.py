"""Canonical queue messages of the contract, and how to put them on a queue.

``load_event("fill_btcusdt_long")`` returns a fresh dict (edit it freely);
``as_body(event)`` gives the queue body: base64 of the compact UTF-8 JSON by default (what
``TextBase64EncodePolicy`` writes), or the raw JSON with ``base64=False``.
"""

from __future__ import annotations

import base64 as b64
import json
from pathlib import Path
from typing import Any

__all__ = ["EVENTS_DIR", "as_body", "event_names", "load_event"]

EVENTS_DIR = Path(__file__).resolve().parent


def event_names() -> list[str]:
    """The names of every canonical event (file stems)."""
    return sorted(p.stem for p in EVENTS_DIR.glob("*.json"))


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of the canonical event ``name`` (with or without ``.json``)."""
    stem = name.removesuffix(".json")
    data = json.loads((EVENTS_DIR / f"{stem}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise TypeError(f"{stem}.json is not a JSON object")
    return data


def as_body(event: dict[str, Any], base64: bool = True) -> bytes:
    """The queue body of ``event``: base64 of its compact JSON, or the raw JSON bytes."""
    raw = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b64.b64encode(raw) if base64 else raw
