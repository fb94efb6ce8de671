"""JSON Schemas of the contract, generated from the wire models; documents by hand.

``python -m handlers.schemas`` rewrites ``schemas/*.json``; ``--check`` exits 1 when a
committed file differs from what the models generate (CI runs the same check as a test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from handlers.core.contracts import (
    AccountControl,
    Alert,
    Fill,
    Mark,
    MarkEntry,
    Marks,
    Order,
    OrderDecision,
    OrderDone,
    Transfer,
)
from handlers.schemas.documents import BASE, documents

__all__ = ["SCHEMA_DIR", "build_schemas", "main"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def _model(model: type[BaseModel], name: str, mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE + name,
        **schema,
    }


#: An ORDER's price follows its type (the model's own rule): a LIMIT order has one, a
#: MARKET order none (absent, or null as the model reads it).
_PRICE_BY_TYPE = [
    {
        "if": {"required": ["orderType"], "properties": {"orderType": {"const": "LIMIT"}}},
        "then": {"required": ["price"], "properties": {"price": {"not": {"type": "null"}}}},
    },
    {
        "if": {"required": ["orderType"], "properties": {"orderType": {"const": "MARKET"}}},
        "then": {"properties": {"price": {"type": "null"}}},
    },
]


#: A FILL carries an orderId only with schemaVersion 2 (the model's own rule).
_ORDER_ID_IS_V2 = {
    "if": {"required": ["orderId"], "properties": {"orderId": {"type": "string"}}},
    "then": {"properties": {"schemaVersion": {"const": 2}}},
}


def build_schemas() -> dict[str, dict[str, Any]]:
    """Every schema by file name: inbound messages (the trades, marks and orders queues),
    the Alert and the ORDER_DECISION, the Cosmos documents."""
    out = {
        "fill.schema.json": _model(Fill, "fill.schema.json", "validation"),
        "transfer.schema.json": _model(Transfer, "transfer.schema.json", "validation"),
        "mark.message.schema.json": _model(Mark, "mark.message.schema.json", "validation"),
        "marks.message.schema.json": _model(Marks, "marks.message.schema.json", "validation"),
        "mark-entry.schema.json": _model(MarkEntry, "mark-entry.schema.json", "validation"),
        "alert.schema.json": _model(Alert, "alert.schema.json", "serialization"),
        "order.schema.json": _model(Order, "order.schema.json", "validation"),
        "order-done.schema.json": _model(OrderDone, "order-done.schema.json", "validation"),
        "account-control.schema.json": _model(
            AccountControl, "account-control.schema.json", "validation"
        ),
        "order-decision.schema.json": _model(
            OrderDecision, "order-decision.schema.json", "serialization"
        ),
    }
    for name in (
        "fill.schema.json",
        "transfer.schema.json",
        "mark.message.schema.json",
        "marks.message.schema.json",
        "order.schema.json",
        "order-done.schema.json",
        "account-control.schema.json",
    ):
        # Keys beginning with "$" (stamped by the Functions host) are ignored, not refused.
        out[name]["patternProperties"] = {"^\\$": {}}
    marks = out["marks.message.schema.json"]
    marks["properties"]["marks"]["items"] = {"$ref": "mark-entry.schema.json"}
    out["order.schema.json"]["allOf"] = _PRICE_BY_TYPE
    out["fill.schema.json"]["allOf"] = [_ORDER_ID_IS_V2]
    out.update(documents())
    return out


def _render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (default) or check (``--check``) the committed schemas."""
    parser = argparse.ArgumentParser(prog="python -m handlers.schemas")
    parser.add_argument("--check", action="store_true", help="exit 1 when schemas/ is stale")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for name, schema in build_schemas().items():
        path = SCHEMA_DIR / name
        text = _render(schema)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            SCHEMA_DIR.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale schemas (run `python -m handlers.schemas`): " + ", ".join(stale))
        return 1
    return 0
