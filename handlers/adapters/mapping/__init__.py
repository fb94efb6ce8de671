"""Typed documents (:mod:`handlers.core.documents`) ↔ the JSON documents Cosmos stores.

Pure (no SDK): the Cosmos adapter and the test fakes map through these, so both store the
same shapes. Every document carries ``type`` and ``schemaVersion``; decimals are strings.
Reading raises :class:`UnreadableDocument` for another version or a wrong shape, and such
a document is never overwritten.
"""

from handlers.adapters.mapping.account import account_from_document, account_to_document
from handlers.adapters.mapping.deadletters import (
    deadletter_from_document,
    deadletter_to_document,
    failure_to_document,
)
from handlers.adapters.mapping.marks import (
    PASS_TTL_SECONDS,
    PASSES_PARTITION,
    holder_from_document,
    holder_partition,
    holder_to_document,
    mark_from_document,
    mark_to_document,
    pass_from_document,
    pass_to_document,
    watch_from_document,
    watch_to_document,
)
from handlers.adapters.mapping.records import (
    pass_sent_from_document,
    record_from_document,
    record_to_document,
)
from handlers.adapters.mapping.values import SCHEMA_VERSION, alerts_json

__all__ = [
    "PASSES_PARTITION",
    "PASS_TTL_SECONDS",
    "SCHEMA_VERSION",
    "account_from_document",
    "account_to_document",
    "alerts_json",
    "deadletter_from_document",
    "deadletter_to_document",
    "failure_to_document",
    "holder_from_document",
    "holder_partition",
    "holder_to_document",
    "mark_from_document",
    "mark_to_document",
    "pass_from_document",
    "pass_sent_from_document",
    "pass_to_document",
    "record_from_document",
    "record_to_document",
    "watch_from_document",
    "watch_to_document",
]
