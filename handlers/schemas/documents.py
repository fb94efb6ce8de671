"""JSON Schemas of the documents the app writes (by hand: their shapes live in
:mod:`handlers.adapters.mapping`; ``tests/unit/test_document_schemas.py`` holds every
written document against these)."""

from __future__ import annotations

from typing import Any

from handlers.core.contracts import ID_PATTERN
from handlers.core.decimals import DECIMAL_PATTERN

__all__ = ["BASE", "documents"]

BASE = "https://tradeguard.example/schemas/v1/"

_DEC = {"type": "string", "pattern": DECIMAL_PATTERN}
_DEC_OR_NULL = {"anyOf": [_DEC, {"type": "null"}]}
_TS = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
}
_TS_OR_NULL = {"anyOf": [_TS, {"type": "null"}]}
_RISK = {"enum": ["NORMAL", "MARGIN_CALL", "LIQUIDATION"]}
_ALERTS = {"type": "array", "items": {"$ref": "alert.schema.json"}}
_STR = {"type": "string"}
_DIGEST = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
_TRADING_STATE = {"enum": ["ACTIVE", "REDUCING", "HALTED"]}
#: A timestamp as a message carries it (RFC 3339, any offset and fraction): the records of
#: ORDER_DONE and ACCOUNT_CONTROL keep the message's fields as it arrived.
_WIRE_TS = {"type": "string", "format": "date-time"}


def _doc(name: str, title: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """A document's schema; its ``type`` follows the name (``stale-watch.schema.json``:
    ``staleWatch``; a ``-record`` suffix is no part of it)."""
    first, *rest = name.split(".")[0].removesuffix("-record").split("-")
    kind = first + "".join(word.capitalize() for word in rest)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE + name,
        "title": title,
        "type": "object",
        "required": ["id", "type", "schemaVersion", *required],
        "properties": {"schemaVersion": {"const": 1}, "type": {"const": kind}, **properties},
    }


def _versions(
    name: str, title: str, required: list[str], properties: dict[str, Any]
) -> dict[str, Any]:
    """:func:`_doc` of a document written as schemaVersion 2 and read as 1 or 2."""
    schema = _doc(name, title, required, properties)
    schema["properties"]["schemaVersion"] = {"enum": [1, 2]}
    return schema


def documents() -> dict[str, dict[str, Any]]:
    wallet = {
        "type": "object",
        "required": [
            "walletBalance",
            "crossWalletBalance",
            "marginBalance",
            "availableBalance",
            "totalInitialMargin",
            "totalMaintMargin",
            "marginRatio",
            "riskState",
        ],
        "properties": {
            "walletBalance": _DEC,
            "crossWalletBalance": _DEC,
            "marginBalance": _DEC,
            "availableBalance": _DEC,
            "totalInitialMargin": _DEC,
            "totalMaintMargin": _DEC,
            "marginRatio": _DEC_OR_NULL,
            "riskState": _RISK,
            "openOrderMargin": {
                **_DEC,
                "description": "v2 orders: Σ reserved of the open orders whose symbol settles in this asset ('0' when none; written on every wallet, absent from documents written before orders); availableBalance is net of it",
            },
        },
    }
    open_order = {
        "type": "object",
        "required": [
            "orderId",
            "symbol",
            "side",
            "positionSide",
            "marginMode",
            "orderType",
            "price",
            "leverage",
            "quantity",
            "openingQuantity",
            "reserved",
            "submittedAt",
        ],
        "properties": {
            "orderId": {"type": "string", "pattern": ID_PATTERN},
            "symbol": _STR,
            "side": {"enum": ["BUY", "SELL"]},
            "positionSide": {"enum": ["BOTH", "LONG", "SHORT"]},
            "marginMode": {"enum": ["CROSS", "ISOLATED"]},
            "orderType": {"enum": ["LIMIT", "MARKET"]},
            "price": {**_DEC, "description": "the price P it was valued at (a MARKET order's)"},
            "leverage": {"type": "integer", "minimum": 1, "maximum": 125},
            "quantity": {**_DEC, "description": "what remains unfilled"},
            "openingQuantity": {
                **_DEC,
                "description": "the part of quantity that opens exposure (the rest reduces the position it faces)",
            },
            "reserved": {
                **_DEC,
                "description": "the margin it holds (its cost, less what fills released)",
            },
            "submittedAt": _TS,
        },
    }
    position = {
        "type": "object",
        "required": [
            "symbol",
            "positionSide",
            "marginMode",
            "quantity",
            "entryPrice",
            "leverage",
            "isolatedMargin",
            "notional",
            "initialMargin",
            "maintMargin",
            "unrealizedPnl",
            "realizedPnl",
            "liquidationPrice",
            "markPrice",
            "riskState",
            "updatedAt",
        ],
        "properties": {
            "symbol": _STR,
            "positionSide": {"enum": ["BOTH", "LONG", "SHORT"]},
            "marginMode": {"enum": ["CROSS", "ISOLATED"]},
            "quantity": _DEC,
            "entryPrice": _DEC,
            "leverage": {"type": "integer", "minimum": 1, "maximum": 125},
            "isolatedMargin": _DEC,
            "notional": _DEC,
            "initialMargin": _DEC,
            "maintMargin": _DEC,
            "unrealizedPnl": _DEC,
            "realizedPnl": _DEC,
            "liquidationPrice": _DEC_OR_NULL,
            "markPrice": _DEC_OR_NULL,
            "markSource": {"enum": ["MARK", "FILL_PRICE"]},
            "markTime": _TS_OR_NULL,
            "lastFillPrice": _DEC,
            "riskState": _RISK,
            "updatedAt": _TS,
        },
    }
    outbox_entry = {
        "type": "object",
        "required": ["key", "source", "alerts", "committedAt"],
        "properties": {
            "key": _STR,
            "source": _STR,
            "alerts": _ALERTS,
            "committedAt": _TS,
        },
    }
    event_props = {
        "accountId": {"type": "string", "pattern": ID_PATTERN},
        "alerts": _ALERTS,
        "createdAt": _TS,
    }
    return {
        "account.schema.json": _versions(
            "account.schema.json",
            "Account document (container ledger, id @account; written as schemaVersion 2, version 1 read and upgraded on write)",
            [
                "accountId",
                "wallets",
                "positions",
                "riskState",
                "updatedAt",
                "recentEventIds",
                "pending",
            ],
            {
                "id": {"const": "@account"},
                "accountId": {"type": "string", "pattern": ID_PATTERN},
                "wallets": {"type": "object", "additionalProperties": wallet},
                "positions": {"type": "array", "items": position},
                "riskState": _RISK,
                "updatedAt": _TS,
                "version": {"type": "integer", "minimum": 0},
                "recentEventIds": {"type": "array", "items": _STR, "maxItems": 1000},
                "recentIdsEvicted": {"type": "boolean"},
                "valuedAt": {
                    **_TS_OR_NULL,
                    "description": "v2: the time of the newest mark the mark-dependent figures were computed at (they are exact as of it; null without a mark)",
                },
                "riskBands": {
                    "description": "v2: per open symbol, the range [low, high] of its mark inside which no risk state of the account can change while every other symbol's mark stays in its own (docs/marks.md)",
                    "type": "object",
                    "additionalProperties": {
                        "type": "array",
                        "items": _DEC,
                        "minItems": 2,
                        "maxItems": 2,
                    },
                },
                "bandsVersion": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "v2: the account version that set riskBands; their index entries are holder:<accountId>:<bandsVersion>",
                },
                "tradingState": {
                    **_TRADING_STATE,
                    "description": "v2 orders: set by ACCOUNT_CONTROL (read as ACTIVE when absent)",
                },
                "tradingStateAt": {
                    **_TS_OR_NULL,
                    "description": "v2 orders: the occurredAt of the control that set tradingState (an older control changes nothing); null when none did",
                },
                "openOrders": {
                    "description": "v2 orders: approved orders not yet done, with the margin each reserves (read as none when absent)",
                    "type": "array",
                    "items": open_order,
                },
                "orderTimes": {
                    "description": "v2 orders: the submittedAt of the account's latest decided orders, either way, newest last (what RATE_LIMITED counts)",
                    "type": "array",
                    "items": _TS,
                    "maxItems": 1000,
                },
                "pending": {
                    "description": "outbox entries: effects committed with this write, kept until a sweep has seen their records (docs/exactly-once.md)",
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["eventId"],
                        "oneOf": [
                            {"required": ["record"]},
                            {"required": ["recordId", "committedAt"]},
                            {"required": ["doneId", "doneIn", "alerts", "committedAt"]},
                        ],
                        "properties": {
                            "eventId": {"type": "string", "description": "the entry's key"},
                            "recordId": {
                                "type": "string",
                                "description": "an event that raised no alert keeps only its record's id",
                            },
                            "committedAt": _TS,
                            "source": {
                                "type": "string",
                                "description": "the message that owns it (an event id or marks:<bodyDigest>)",
                            },
                            "record": {"type": "object"},
                            "alerts": _ALERTS,
                            "doneId": {
                                "type": "string",
                                "pattern": "^@sent:marks:",
                                "description": "a mark pass's entry: done once its invocation's pass-sent marker (this id, in partition doneIn) lists the account, or a sent marker of this id is in the account's partition",
                            },
                            "doneIn": {"type": "string", "pattern": "^@marks:"},
                            "holders": {"type": "array", "items": _STR},
                        },
                    },
                },
            },
        ),
        "trade-record.schema.json": _doc(
            "trade-record.schema.json",
            "Trade record (container ledger, id = tradeId): the FILL as applied",
            ["accountId", "tradeId", "alerts", "createdAt"],
            {"type": {"const": "trade"}, "tradeId": _STR, **event_props},
        ),
        "transfer-record.schema.json": _doc(
            "transfer-record.schema.json",
            "Transfer record (container ledger, id = transferId): the TRANSFER as applied",
            ["accountId", "transferId", "alerts", "createdAt"],
            {"type": {"const": "transfer"}, "transferId": _STR, **event_props},
        ),
        "order-record.schema.json": _doc(
            "order-record.schema.json",
            "Order record (container ledger, id @order:<orderId>, partition accountId): the decision of an ORDER, which every redelivery sends again, with the alerts it raised",
            ["accountId", "orderId", "decision", "alerts", "createdAt"],
            {
                "id": {"type": "string", "pattern": "^@order:"},
                "orderId": {"type": "string", "pattern": ID_PATTERN},
                "decision": {"$ref": "order-decision.schema.json"},
                **event_props,
            },
        ),
        "order-done-record.schema.json": _doc(
            "order-done-record.schema.json",
            "ORDER_DONE record (container ledger, id @order-done:<orderId>, partition accountId): the message as it arrived, without type",
            ["accountId", "orderId", "alerts", "createdAt"],
            {
                "id": {"type": "string", "pattern": "^@order-done:"},
                "orderId": {"type": "string", "pattern": ID_PATTERN},
                "status": {"enum": ["FILLED", "CANCELED", "EXPIRED", "REJECTED"]},
                "occurredAt": _WIRE_TS,
                **event_props,
            },
        ),
        "control-record.schema.json": _doc(
            "control-record.schema.json",
            "ACCOUNT_CONTROL record (container ledger, id @control:<controlId>, partition accountId): the message as it arrived, without type",
            ["accountId", "controlId", "alerts", "createdAt"],
            {
                "id": {"type": "string", "pattern": "^@control:"},
                "controlId": {"type": "string", "pattern": ID_PATTERN},
                "tradingState": _TRADING_STATE,
                "reason": {"type": "string", "maxLength": 200},
                "occurredAt": _WIRE_TS,
                **event_props,
            },
        ),
        "rejection-record.schema.json": _doc(
            "rejection-record.schema.json",
            "Rejection record (container ledger, id rejection:<sourceId>, partition accountId or _unattributed)",
            ["accountId", "sourceId", "reasons", "bodyDigest", "alerts", "createdAt"],
            {
                "id": {"type": "string", "pattern": "^rejection:"},
                "accountId": _STR,
                "sourceId": _STR,
                "queue": _STR,
                "bodyDigest": _DIGEST,
                "bodyExcerpt": {"type": "string", "maxLength": 512},
                "reasons": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": _STR, "message": _STR},
                    },
                },
                "alerts": _ALERTS,
                "createdAt": _TS,
            },
        ),
        "revaluation-record.schema.json": _doc(
            "revaluation-record.schema.json",
            "Re-valuation record (container ledger, id @<source>): the alerts marks raised on one account in one write; source marks:<bodyDigest> (a mark message's pass) or mark:<markId>:<eventId> (a fill catching up with a mark stored while it was in flight), each with :~<16 hex> (a digest of the symbols it applies) when a later write of the same message on the same account needs a record of its own (Cosmos refuses '#' in ids); marks:<bodyDigest>:<16 hex>, marks:<bodyDigest>:#<16 hex> and mark:<markId> were written by earlier versions",
            ["accountId", "source", "marks", "alerts", "createdAt"],
            {
                "id": {
                    "type": "string",
                    "pattern": "^@(marks:sha256:[0-9a-f]{64}(:[#~]?[0-9a-f]{16})?|mark:.+)$",
                },
                "source": _STR,
                "marks": {"type": "object", "additionalProperties": _TS},
                **event_props,
            },
        ),
        "mark.schema.json": _doc(
            "mark.schema.json",
            "Latest mark of a symbol (container marks, partition /symbol, id @mark)",
            ["symbol", "markPrice", "timestamp", "markId"],
            {
                "id": {"const": "@mark"},
                "symbol": _STR,
                "markId": _STR,
                "markPrice": _DEC,
                "timestamp": _TS,
                "updatedAt": _TS,
                "indexShards": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "the most holder-index shards any writer used for the symbol",
                },
            },
        ),
        "holder.schema.json": _doc(
            "holder.schema.json",
            "An account in the holder index of a symbol (container marks, partition <symbol> for shard 0 else <symbol>~<shard>, id holder:<accountId>:<bandsVersion>): its risk band on the symbol",
            ["symbol", "market", "accountId", "bandsVersion", "low", "high", "lowF", "highF"],
            {
                "id": {"type": "string", "pattern": "^holder:"},
                "symbol": _STR,
                "market": _STR,
                "accountId": {"type": "string", "pattern": ID_PATTERN},
                "bandsVersion": {"type": "integer", "minimum": 0},
                "low": _DEC,
                "high": _DEC,
                "lowF": {
                    "type": "number",
                    "description": "low as a float, narrowed up (the query's bound)",
                },
                "highF": {"type": "number", "description": "high as a float, narrowed down"},
            },
        ),
        "deadletter.schema.json": _doc(
            "deadletter.schema.json",
            "Deadletter (container deadletters, partition /queue, id = bodyDigest[:accountId])",
            ["queue", "rawBody", "bodyDigest", "sourceId", "count", "firstSeen", "lastSeen"],
            {
                "id": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}(:.+)?$"},
                "queue": _STR,
                "rawBody": _STR,
                "bodyDigest": _DIGEST,
                "accountId": {"type": ["string", "null"]},
                "sourceId": _STR,
                "count": {"type": "integer", "minimum": 1},
                "firstSeen": _TS,
                "lastSeen": _TS,
                "lastError": _STR,
                "pending": {
                    "description": "its POISON_MESSAGE until sent",
                    "type": "array",
                    "items": outbox_entry,
                },
            },
        ),
        "sent-marker.schema.json": _doc(
            "sent-marker.schema.json",
            "The alerts of a claimed record were sent (container ledger, id @sent:<recordId>, the record's partition): the done of a rejection that changed no account",
            ["accountId", "recordId", "at"],
            {
                "id": {"type": "string", "pattern": "^@sent:"},
                "accountId": _STR,
                "recordId": _STR,
                "at": _TS,
            },
        ),
        "pass-sent.schema.json": _doc(
            "pass-sent.schema.json",
            "The alerts one invocation of a mark pass committed on these accounts were all sent (container ledger, partition @marks:<bodyDigest>, id @sent:marks:<bodyDigest>:<chunk>): the done of their entries, one document per invocation instead of a record per account",
            ["accountId", "key", "chunk", "accounts", "at"],
            {
                "id": {"type": "string", "pattern": "^@sent:marks:"},
                "accountId": {"type": "string", "pattern": "^@marks:"},
                "key": _STR,
                "chunk": _STR,
                "accounts": {"type": "array", "items": _STR},
                "at": _TS,
            },
        ),
        "stale-watch.schema.json": _doc(
            "stale-watch.schema.json",
            "Stale-mark watch of a symbol (container marks, partition /symbol, id @stale): the stale mark a STALE_MARK alert was decided for, and that alert until sent",
            ["symbol", "alerted", "pending"],
            {
                "id": {"const": "@stale"},
                "symbol": _STR,
                "alerted": _STR,
                "pending": {"type": "array", "items": outbox_entry},
            },
        ),
        "mark-pass.schema.json": _doc(
            "mark-pass.schema.json",
            "A mark message's pass over the holders, for its fan-out units (container marks, partition @passes, id = bodyDigest; ttl 7 days)",
            ["symbol", "bodyDigest", "marks", "symbols", "rawBody", "createdAt"],
            {
                "id": _DIGEST,
                "symbol": {"const": "@passes"},
                "bodyDigest": _DIGEST,
                "marks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["symbol", "markPrice", "timestamp", "markId"],
                        "properties": {
                            "symbol": _STR,
                            "markPrice": _DEC,
                            "timestamp": _TS,
                            "markId": _STR,
                        },
                    },
                },
                "symbols": {"type": "array", "items": _STR},
                "rawBody": _STR,
                "createdAt": _TS,
                "ttl": {"type": "integer"},
            },
        ),
        "failure.schema.json": _doc(
            "failure.schema.json",
            "The last error an invocation met on a body (container deadletters, partition /queue, id failure:<bodyDigest>), for its deadletter's lastError",
            ["queue", "bodyDigest", "lastError", "at"],
            {
                "id": {"type": "string", "pattern": "^failure:sha256:[0-9a-f]{64}$"},
                "queue": _STR,
                "bodyDigest": _DIGEST,
                "lastError": _STR,
                "at": _TS,
            },
        ),
        "mark-fanout-unit.message.schema.json": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": BASE + "mark-fanout-unit.message.schema.json",
            "title": "A unit of a mark's pass on MARKS_FANOUT_QUEUE (the app's own queue, base64 JSON): the accounts one invocation visits, with the index entries that listed them",
            "type": "object",
            "required": ["type", "schemaVersion", "bodyDigest", "accounts"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": "MARK_PASS"},
                "schemaVersion": {"const": 1},
                "bodyDigest": _DIGEST,
                "retry": {
                    "type": "boolean",
                    "description": "handed on by a retry of the mark message: it may finish what the failed try left",
                },
                "accounts": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "prefixItems": [
                            _STR,
                            {
                                "description": "the index entries that listed the account: [symbol, shard, bandsVersion, etag] (a unit written before bands: {symbol: etag})",
                                "oneOf": [
                                    {
                                        "type": "array",
                                        "items": {
                                            "type": "array",
                                            "prefixItems": [
                                                _STR,
                                                {"type": "integer", "minimum": 0},
                                                {"type": ["integer", "null"], "minimum": 0},
                                                {"type": ["string", "null"]},
                                            ],
                                            "minItems": 4,
                                            "maxItems": 4,
                                        },
                                    },
                                    {"type": "object", "additionalProperties": _STR},
                                ],
                            },
                        ],
                        "minItems": 2,
                        "maxItems": 2,
                    },
                },
            },
        },
    }
