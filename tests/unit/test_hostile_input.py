"""Hostile queue bodies: more than 10,000 generated bodies through both queue handlers.

Every body goes through :func:`process_trade_message` AND :func:`process_mark_message`
over in-memory fakes (a fresh FakeStore/FakeSink per message, so each stands alone), and
for each one:

- nothing raises;
- every outcome is REJECTED, APPLIED, IGNORED, STORED or DUPLICATE, and where the body's
  category decides the answer (invalid UTF-8 → MALFORMED, a wrong JSON type →
  SCHEMA_INVALID, …) it is that answer;
- every rejection has its reason codes in the contract's set (1–10 reasons, messages of at
  most 300 chars), a ``rejection:<sourceId>`` record that validates against
  ``schemas/rejection-record.schema.json`` with a ``bodyExcerpt`` of at most 512 chars, and
  exactly one TRADE_REJECTED alert;
- every alert validates against ``schemas/alert.schema.json`` and can be encoded for the
  queue; a TRADE_REJECTED alert's JSON is at most 8 KiB, whatever the body;
- a stateless rejection changes no account and no mark.

Bodies come from a seeded generator (a plain loop: every category of the issue, raw and
base64), a small curated corpus (``tests/corpus/hostile.jsonl``) and hypothesis. Time and
memory per message are printed as figures (run with ``-s``), never asserted; the only
structural bound asserted is a tracemalloc peak below 50 MB for 64 KiB bodies. The limits
themselves are documented in ``docs/input-limits.md``.

Three bugs these tests found are fixed and pinned by the tests at the end of this file
(``test_bug_*``, once strict xfails): a body's ``symbol`` echoed whole into alerts; a lone
surrogate in ``symbol`` breaking the alert JSON; huge accepted decimals written whole into
reason messages. Any problem fails the loop.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import re
import statistics
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from handlers.adapters.queues import encode_alert
from handlers.core.catalog import load_catalog
from handlers.core.documents import UNATTRIBUTED
from handlers.flows import Deps, Outcome
from handlers.settings import load_settings
from tests.aio import process_mark_message, process_poison, process_trade_message
from tests.events import load_event

from .fakes import FakeClock, FakeSink, FakeStore

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
CORPUS = ROOT / "tests" / "corpus" / "hostile.jsonl"

#: The contract's reason codes of a rejection ("What happens to each message", 1.).
REASON_CODES = frozenset(
    {
        "MALFORMED",
        "SCHEMA_INVALID",
        "UNKNOWN_SYMBOL",
        "PRICE_TICK",
        "QTY_STEP",
        "QTY_BOUNDS",
        "MIN_NOTIONAL",
        "LEVERAGE_ABOVE_MAX",
        "REDUCE_ONLY_VIOLATION",
        "POSITION_SIDE_MISMATCH",
        "INSUFFICIENT_AVAILABLE_BALANCE",
    }
)
STATEFUL_CODES = frozenset(
    {"REDUCE_ONLY_VIOLATION", "POSITION_SIDE_MISMATCH", "INSUFFICIENT_AVAILABLE_BALANCE"}
)
OUTCOME_KINDS = frozenset({"REJECTED", "APPLIED", "IGNORED", "STORED", "DUPLICATE"})

MAX_QUEUE_BODY = 64 * 1024  # Azure Queue Storage's message size limit
MAX_EXCERPT = 512
MAX_REASONS = 10
MAX_REASON_MESSAGE = 300
MAX_ALERT_JSON = 8 * 1024
MAX_PEAK_BYTES = 50 * 1024 * 1024
SEED = 20241001
QUEUES = ("trades", "marks")

MAL = frozenset({"MALFORMED"})
INV = frozenset({"SCHEMA_INVALID"})
BAD = MAL | INV
UNK = frozenset({"UNKNOWN_SYMBOL"})
APPLIED = frozenset({"APPLIED"})
Expect = frozenset[str] | None

_SETTINGS = load_settings({})
_CATALOG = load_catalog(_SETTINGS.instruments_file)


def fresh_deps() -> Deps:
    clock = FakeClock()
    return Deps(
        settings=_SETTINGS,
        catalog=_CATALOG,
        store=FakeStore(),
        sink=FakeSink(),
        clock=clock,
        sleep=clock.sleep,
    )


def _load_schema(name: str) -> dict[str, Any]:
    data = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


_ALERT_SCHEMA = _load_schema("alert.schema.json")
_REJECTION_SCHEMA = _load_schema("rejection-record.schema.json")
_REGISTRY: Registry[Any] = Registry().with_resources(
    [(s["$id"], Resource.from_contents(s)) for s in (_ALERT_SCHEMA, _REJECTION_SCHEMA)]
)


class SchemaCheck:
    """jsonschema validation, memoized on an abstraction of the document that keeps all the
    schema can see: keys, JSON types, which of the schema's patterns each string matches,
    strings equal to an enum/const value, string lengths against maxLength, list lengths,
    integers. Exact for the keywords these schemas use (checked), and fast enough to
    validate every alert and record of the loop."""

    KEYWORDS = frozenset(
        {
            "$defs",
            "$id",
            "$schema",
            "$ref",
            "additionalProperties",
            "anyOf",
            "const",
            "default",
            "description",
            "enum",
            "format",
            "items",
            "maxLength",
            "minItems",
            "minimum",
            "not",
            "pattern",
            "properties",
            "required",
            "title",
            "type",
        }
    )

    def __init__(self, schema: dict[str, Any], *others: dict[str, Any]) -> None:
        self.validator = Draft202012Validator(schema, registry=_REGISTRY)
        patterns: set[str] = set()
        literals: set[str] = set()
        lengths: set[int] = set()
        unknown: set[str] = set()

        def walk(node: Any, in_properties: bool = False) -> None:
            if isinstance(node, list):
                for item in node:
                    walk(item)
            if not isinstance(node, dict):
                return
            for key, value in node.items():
                if in_properties:  # property names, not keywords
                    walk(value)
                    continue
                if key not in self.KEYWORDS:
                    unknown.add(key)
                if key == "pattern":
                    patterns.add(value)
                elif key in ("enum", "const"):
                    literals.update(
                        v for v in (value if key == "enum" else [value]) if isinstance(v, str)
                    )
                elif key == "maxLength":
                    lengths.add(value)
                elif key in ("properties", "$defs"):
                    walk(value, in_properties=True)
                elif key not in ("description", "title", "default"):
                    walk(value)

        for s in (schema, *others):
            walk(s)
        assert not unknown, f"SchemaCheck does not abstract {unknown}"
        self.patterns = [re.compile(p) for p in sorted(patterns)]
        self.literals = literals
        self.lengths = sorted(lengths)
        self.cache: dict[Any, str | None] = {}
        self.strings: dict[str, tuple[Any, ...]] = {}

    def _shape(self, value: Any) -> Any:
        if isinstance(value, str):
            shape = self.strings.get(value)
            if shape is None:
                if len(self.strings) > 100_000:
                    self.strings.clear()
                shape = self.strings[value] = (
                    "s",
                    tuple(p.search(value) is not None for p in self.patterns),
                    value if value in self.literals else None,
                    tuple(len(value) > n for n in self.lengths),
                )
            return shape
        if isinstance(value, dict):
            return ("o", tuple(sorted((k, self._shape(v)) for k, v in value.items())))
        if isinstance(value, list):
            return ("a", tuple(self._shape(v) for v in value))
        return (type(value).__name__, value)

    def error(self, document: Any) -> str | None:
        """The first schema error of ``document`` (None when it validates)."""
        key = self._shape(document)
        if key not in self.cache:
            first = next(iter(self.validator.iter_errors(document)), None)
            self.cache[key] = None if first is None else first.message[:160]
        return self.cache[key]


ALERT_SCHEMA = SchemaCheck(_ALERT_SCHEMA)
REJECTION_SCHEMA = SchemaCheck(_REJECTION_SCHEMA, _ALERT_SCHEMA)


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# --- running one message and checking what it left --------------------------------------


def process(raw: bytes, queue: str, deps: Deps) -> list[Outcome]:
    if queue == "trades":
        return [process_trade_message(raw, deps)]
    return process_mark_message(raw, deps)


def label(outcome: Outcome) -> str:
    """A rejection's first reason code, else the outcome kind."""
    return outcome.detail if outcome.kind == "REJECTED" else outcome.kind


def other_queue_expect(expect: Expect) -> Expect:
    """What a body expected on its home queue gets on the other one: MALFORMED stays,
    anything that decodes is SCHEMA_INVALID (a FILL is no MARK, and so on)."""
    if expect is None:
        return None
    return frozenset("MALFORMED" if e == "MALFORMED" else "SCHEMA_INVALID" for e in expect)


def alert_size(alert: Any) -> int:
    return len(alert.model_dump_json().encode("utf-8"))


#: Known bugs (pinned by the strict xfail tests at the end): a problem so tagged is counted
#: and printed by the loop instead of failing it; any other problem fails it.
KNOWN_SYMBOL_ECHO = "KNOWN symbol-echoed-into-alert: "
KNOWN_SURROGATE = "KNOWN lone-surrogate-breaks-alert-json: "
KNOWN_DECIMAL_ECHO = "KNOWN decimal-echoed-into-reason: "
_ECHOED_DIGITS = re.compile(r"[0-9]{100}")


def unknown_problems(problems: Sequence[str]) -> list[str]:
    """Every problem (the KNOWN tags were for bugs that are fixed now)."""
    return list(problems)


def verify(raw: bytes, deps: Deps, outcomes: Sequence[Outcome], expect: Expect) -> list[str]:
    """Every rule of the module docstring for one processed message; the problems found."""
    problems: list[str] = []
    store = deps.store
    sink = deps.sink
    assert isinstance(store, FakeStore)
    assert isinstance(sink, FakeSink)
    if not outcomes:
        problems.append("no outcome at all")
    rejected = [o for o in outcomes if o.kind == "REJECTED"]
    for o in outcomes:
        if o.kind not in OUTCOME_KINDS:
            problems.append(f"outcome kind {o.kind}")
        if expect is not None and label(o) not in expect:
            problems.append(f"got {label(o)} ({o.source_id[:40]}), expected {sorted(expect)}")
    for o in rejected:
        if o.detail not in REASON_CODES:
            problems.append(f"rejection code {o.detail!r} is not a contract code")
        partition = o.account_id or UNATTRIBUTED
        record = store.records.get((partition, f"rejection:{o.source_id}"))
        if record is None:
            problems.append(f"no record rejection:{o.source_id[:60]} in {partition}")
            continue
        error = REJECTION_SCHEMA.error(record)
        if error is not None:
            problems.append(f"rejection record: {error}")
        reasons = record["reasons"]
        if not 1 <= len(reasons) <= MAX_REASONS:
            problems.append(f"{len(reasons)} reasons")
        for reason in reasons:
            if reason["code"] not in REASON_CODES:
                problems.append(f"reason code {reason['code']!r}")
            if len(reason["message"]) > MAX_REASON_MESSAGE:
                known = KNOWN_DECIMAL_ECHO if _ECHOED_DIGITS.search(reason["message"]) else ""
                problems.append(f"{known}reason message of {len(reason['message'])} chars")
        if reasons and reasons[0]["code"] != o.detail:
            problems.append("record's first reason differs from the outcome")
        if len(record.get("bodyExcerpt", "")) > MAX_EXCERPT:
            problems.append(f"bodyExcerpt of {len(record['bodyExcerpt'])} chars")
        if record["bodyDigest"] != digest(raw):
            problems.append("bodyDigest is not the digest of the queue text")
        mine = [a for a in o.alerts if a.type == "TRADE_REJECTED"]
        if len(mine) != 1 or mine[0].sourceId != o.source_id:
            problems.append("not exactly one TRADE_REJECTED alert of the rejection")
    records = [key for key in store.records if key[1].startswith("rejection:")]
    if len(records) != len(rejected):
        problems.append(f"{len(records)} rejection records for {len(rejected)} rejections")
    if len(sink.of_type("TRADE_REJECTED")) != len(rejected):
        problems.append("TRADE_REJECTED alerts sent differ from the rejections")
    for alert in sink.sent:
        error = ALERT_SCHEMA.error(alert.model_dump(mode="json"))
        if error is not None:
            problems.append(f"alert {alert.type}: {error}")
        encode_alert(alert)  # the queue text the real sink writes
        if (
            alert.type in ("TRADE_REJECTED", "POISON_MESSAGE")
            and alert_size(alert) > MAX_ALERT_JSON
        ):
            known = KNOWN_SYMBOL_ECHO if len(alert.symbol or "") > MAX_ALERT_JSON // 2 else ""
            problems.append(f"{known}{alert.type} alert of {alert_size(alert)} bytes")
    stateless = all(o.kind == "REJECTED" and o.detail not in STATEFUL_CODES for o in outcomes)
    if stateless and (store.accounts or store.marks or store.account_writes):
        problems.append("a stateless rejection changed an account or a mark")
    return problems


@dataclass
class Tally:
    """Figures of a run: bodies, outcomes, codes, time per message, problems."""

    bodies: int = 0
    messages: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    micros: list[float] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    largest_alert: tuple[int, str] = (0, "")
    largest_rejection_alert: int = 0
    problems: list[str] = field(default_factory=list)
    known: Counter[str] = field(default_factory=Counter)

    def run(self, raw: bytes, queue: str, expect: Expect, category: str) -> list[Outcome]:
        deps = fresh_deps()
        started = time.perf_counter_ns()
        try:
            outcomes = process(raw, queue, deps)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {str(exc)[:120]}"
            if "surrogates not allowed" in str(exc):
                problem = KNOWN_SURROGATE + problem
            self.record_problem(category, queue, problem, raw)
            return []
        micros = (time.perf_counter_ns() - started) / 1000
        self.messages += 1
        self.micros.append(micros)
        if micros > self.slowest[0]:
            self.slowest = (micros, f"{category}/{queue} ({len(raw)} bytes)")
        for o in outcomes:
            self.kinds[o.kind] += 1
            if o.kind == "REJECTED":
                self.codes[o.detail] += 1
        assert isinstance(deps.sink, FakeSink)
        for alert in deps.sink.sent:
            size = alert_size(alert)
            if size > self.largest_alert[0]:
                self.largest_alert = (size, f"{alert.type} from {category}")
            if alert.type == "TRADE_REJECTED":
                self.largest_rejection_alert = max(self.largest_rejection_alert, size)
        for problem in verify(raw, deps, outcomes, expect):
            self.record_problem(category, queue, problem, raw)
        return outcomes

    def record_problem(self, category: str, queue: str, problem: str, raw: bytes) -> None:
        if problem.startswith("KNOWN "):
            self.known[problem.split(":")[0].removeprefix("KNOWN ")] += 1
        else:
            self.problems.append(f"{category}/{queue}: {problem} body={raw[:60]!r}")

    def body(self, raw: bytes, home: str, expect: Expect, category: str, both: bool = True) -> None:
        """One body through its home queue (with ``expect``) and the other queue (unless
        ``both`` is false: random bytes alternate queues already)."""
        assert len(raw) <= MAX_QUEUE_BODY, f"{category}: a {len(raw)}-byte body cannot be queued"
        self.bodies += 1
        self.categories[category] += 1
        for queue in QUEUES if both else (home,):
            self.run(raw, queue, expect if queue == home else other_queue_expect(expect), category)

    def figures(self, title: str) -> str:
        ordered = sorted(self.micros) or [0.0]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        rejected = self.kinds["REJECTED"]
        return (
            f"\n{title}: bodies={self.bodies} messages={self.messages} "
            f"rejected={rejected} applied={self.kinds['APPLIED']} "
            f"other={dict((k, v) for k, v in self.kinds.items() if k not in ('REJECTED', 'APPLIED'))} "
            f"by code={dict(sorted(self.codes.items()))}\n"
            f"  per message µs: median={statistics.median(ordered):.0f} p99={p99:.0f} "
            f"max={self.slowest[0]:.0f} [{self.slowest[1]}]; largest alert "
            f"{self.largest_alert[0]} B [{self.largest_alert[1]}], largest TRADE_REJECTED "
            f"{self.largest_rejection_alert} B; problems={len(self.problems)}; "
            f"messages hitting known bugs={dict(self.known)}"
        )

    def assert_clean(self) -> None:
        shown = "\n".join(self.problems[:15])
        assert not self.problems, f"{len(self.problems)} problems, first ones:\n{shown}"


# --- building bodies -------------------------------------------------------------------

FILL = load_event("fill_btcusdt_long")
TRANSFER = load_event("transfer_deposit_usdt")
MARK = load_event("mark_btcusdt")
MARKS = load_event("marks_batch")
TEMPLATES: dict[str, tuple[dict[str, Any], str]] = {
    "FILL": (FILL, "trades"),
    "TRANSFER": (TRANSFER, "trades"),
    "MARK": (MARK, "marks"),
    "MARKS": (MARKS, "marks"),
}

DECIMAL = frozenset({"string", "number", "integer"})
STRING = frozenset({"string"})
INTEGER = frozenset({"integer"})
BOOL = frozenset({"bool"})
ARRAY = frozenset({"array"})
OPTIONAL_ID = frozenset({"string", "null"})
ALL_KINDS = ("null", "bool", "integer", "number", "string", "array", "object")

#: The JSON kinds each field accepts (every other kind is SCHEMA_INVALID).
FIELDS: dict[str, dict[str, frozenset[str]]] = {
    "FILL": {
        "type": STRING,
        "schemaVersion": INTEGER,
        "tradeId": STRING,
        "accountId": STRING,
        "symbol": STRING,
        "side": STRING,
        "quantity": DECIMAL,
        "price": DECIMAL,
        "leverage": INTEGER,
        "marginMode": STRING,
        "positionSide": STRING,
        "reduceOnly": BOOL,
        "fee": DECIMAL,
        "executedAt": STRING,
        "correlationId": OPTIONAL_ID,
    },
    "TRANSFER": {
        "type": STRING,
        "schemaVersion": INTEGER,
        "transferId": STRING,
        "accountId": STRING,
        "asset": STRING,
        "amount": DECIMAL,
        "reason": STRING,
        "occurredAt": STRING,
        "correlationId": OPTIONAL_ID,
    },
    "MARK": {
        "type": STRING,
        "schemaVersion": INTEGER,
        "symbol": STRING,
        "markPrice": DECIMAL,
        "timestamp": STRING,
    },
    "MARKS": {"type": STRING, "schemaVersion": INTEGER, "marks": ARRAY},
}
ENTRY_FIELDS: dict[str, frozenset[str]] = {
    "symbol": STRING,
    "markPrice": DECIMAL,
    "timestamp": STRING,
}
OPTIONAL_FIELDS = frozenset({"marginMode", "positionSide", "reduceOnly", "fee", "correlationId"})
DECIMAL_FIELDS = {
    "FILL": ("quantity", "price", "fee"),
    "TRANSFER": ("amount",),
    "MARK": ("markPrice",),
}
INTEGER_FIELDS = ("schemaVersion", "leverage")
ID_FIELDS = {
    "FILL": ("tradeId", "accountId", "correlationId"),
    "TRANSFER": ("transferId", "accountId", "correlationId"),
}
TIMESTAMP_FIELDS = {"FILL": "executedAt", "TRANSFER": "occurredAt", "MARK": "timestamp"}

#: Raw JSON texts of each kind (for integer fields, "number" means a non-integer number).
KIND_VALUES: dict[str, tuple[str, ...]] = {
    "null": ("null",),
    "bool": ("true", "false"),
    "integer": ("0", "1", "-1", "7", "1000000000000", "-1000000000000000000000000000000"),
    "number": ("1.5", "10.0", "1e1", "-0.5", "1E+2", "0.0", "3.14159"),
    "string": ('""', '"x"', '"10"', '"null"', '"true"', '"[]"', '"{}"'),
    "array": ("[]", "[null]", '["FILL"]', "[1,2]", "[[]]", "[{}]"),
    "object": ("{}", '{"a":1}', '{"type":"FILL"}', '{"$x":null}'),
}


def field_paths(name: str) -> list[tuple[tuple[Any, ...], frozenset[str]]]:
    """Every field of a template, MARKS entries included (path, accepted kinds)."""
    out: list[tuple[tuple[Any, ...], frozenset[str]]] = [
        ((k,), kinds) for k, kinds in FIELDS[name].items()
    ]
    if name == "MARKS":
        out += [(("marks", 0, k), kinds) for k, kinds in ENTRY_FIELDS.items()]
    return out


def wrong_kinds(accepted: frozenset[str]) -> list[str]:
    return [k for k in ALL_KINDS if k not in accepted]


def jtext(value: Any) -> str:
    """Compact JSON text of ``value`` (non-ASCII kept; lone surrogates escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"))
    return text


_HOLE = "\ue000hole\ue000"


def splice(template: dict[str, Any], path: Sequence[Any], raw: str | None) -> str:
    """JSON text of ``template`` with the value at ``path`` replaced by the raw JSON text
    ``raw`` (or deleted when ``raw`` is None)."""
    obj = copy.deepcopy(template)
    parent: Any = obj
    for key in path[:-1]:
        parent = parent[key]
    if raw is None:
        del parent[path[-1]]
        return jtext(obj)
    parent[path[-1]] = _HOLE
    return jtext(obj).replace(jtext(_HOLE), raw, 1)


def with_value(template: dict[str, Any], path: Sequence[Any], value: Any) -> str:
    return splice(template, path, jtext(value))


def add_members(text: str, members: str) -> str:
    """An object's JSON text with raw members (``"k":v,...``) added at its end."""
    assert text.endswith("}")
    return text[:-1] + ("," if len(text) > 2 else "") + members + "}"


def utf8(text: str) -> bytes:
    return text.encode("utf-8")


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def entry_expect(path: Sequence[Any], expect: frozenset[str]) -> frozenset[str]:
    """A MARKS entry stands alone: the other entries of the batch still apply."""
    return expect | APPLIED if len(path) == 3 else expect


@dataclass(frozen=True)
class Case:
    """A generated body (the text inside any base64) and what its home queue must say."""

    category: str
    body: bytes
    home: str
    expect: Expect
    encodings: tuple[str, ...] = ("raw", "base64")
    expect_b64: Expect | str = "same"

    def variants(self) -> Iterator[tuple[bytes, Expect]]:
        for encoding in self.encodings:
            if encoding == "raw":
                yield self.body, self.expect
            else:
                other = self.expect if self.expect_b64 == "same" else self.expect_b64
                assert not isinstance(other, str)
                yield b64(self.body), other


# --- the categories of the issue -----------------------------------------------------

BOM = b"\xef\xbb\xbf"


def gen_random_bytes(rng: random.Random, n: int) -> Iterator[Case]:
    prefixes = (b"", b"", b"{", BOM, b" \t", b'{"type":"FILL",', b'{"type":"MARK",')
    for i in range(n):
        size = rng.choice((0, 1, 2, 3, 4, 7, 16, 64, 255, 1024, 4096))
        body = rng.choice(prefixes) + rng.randbytes(size)
        yield Case("random-bytes", body, QUEUES[i % 2], BAD)


_TEXT_ALPHABETS = (
    "".join(chr(c) for c in range(32, 127)),
    '{}[]":,0123456789eE.-+ \\tnrufalse',
    "\u00e9\u00df\u4e2d\u6587\u0410\u0411\U0001f600\u200b\ufeff\u2028\u0000\u001f\u007f",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
)


def gen_random_text(rng: random.Random, n: int) -> Iterator[Case]:
    for i in range(n):
        alphabet = rng.choice(_TEXT_ALPHABETS)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
        if rng.random() < 0.4:
            text = "{" + text
        yield Case("random-text", utf8(text), QUEUES[i % 2], BAD)


_BAD_UTF8 = (
    b"\xff",
    b"\xfe",
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",  # overlong, 3 bytes
    b"\xed\xa0\x80",  # a UTF-16 surrogate encoded in UTF-8 (CESU-8)
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\x80",  # lone continuation byte
    b"\xbf",
    b"\xe2\x82",  # truncated sequence
    b"\xf0\x9f\x98",
    b"\xc3",
    b"caf\xe9",  # latin-1
)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def gen_invalid_utf8(rng: random.Random, n: int) -> Iterator[Case]:
    names = list(TEMPLATES)
    hole = utf8(jtext(_HOLE))
    for i in range(n):
        name = names[i % len(names)]
        template, home = TEMPLATES[name]
        path, _kinds = rng.choice(field_paths(name))
        bad = rng.choice(_BAD_UTF8)
        while rng.random() < 0.3 or _is_utf8(bad):  # random high bytes, never valid UTF-8
            bad = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 6)))
        where = rng.randrange(3)
        if where == 0:  # inside a string value
            body = utf8(splice(template, path, jtext(_HOLE))).replace(hole, b'"x' + bad + b'"')
        elif where == 1:  # inside a key
            body = utf8(add_members(jtext(template), jtext(_HOLE) + ":1")).replace(
                hole, b'"$k' + bad + b'"'
            )
        else:  # between tokens, or after a BOM
            text = utf8(jtext(template))
            cut = rng.randrange(1, len(text))
            body = text[:cut] + bad + text[cut:] if rng.random() < 0.5 else BOM + bad + text
        yield Case("invalid-utf8", body, home, MAL)
    for codec in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252"):
        body = jtext(dict(FILL, tradeId="T-\u00e9")).encode(codec)
        yield Case("invalid-utf8", body, "trades", MAL)


_HANDWRITTEN_NON_JSON = (
    "{",
    "}",
    "{}}",
    "{]",
    "{'type':'FILL'}",
    '{type:"FILL"}',
    '{"type":"FILL",}',
    '{"a":1,,"b":2}',
    '{"a" 1}',
    '{"a":}',
    '{"a":01}',
    '{"a":+1}',
    '{"a":.5}',
    '{"a":1.}',
    '{"a":0x10}',
    '{"a":1e}',
    '{"a":-}',
    '{"a":--1}',
    '{"a":True}',
    '{"a":None}',
    '{"a":undefined}',
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":-Infinity}',
    '{"a":-NaN}',
    '{"a":"\x00"}',
    '{"a":"tab\there"}',
    '{"a":"new\nline"}',
    '{"a":"\\x41"}',
    '{"a":"\\u12"}',
    '{"a":"\\uZZZZ"}',
    '{"a":1}x',
    '{"a":1}{"b":2}',
    '{"a":1} // comment',
    '{/*c*/"a":1}',
    '{"a":[1,2}',
    '{"a":"unterminated}',
    '{"a":1}\x00',
    '{"a":1}\u00a0',
    '{"a":1}\u2028',
    '{"a":1,"a":2,',
    '{"a" : 1 , }',
    "{\"a\":'1'}",
    '{"a":`1`}',
    '{"a":1}\x0b',
    '{"\\ud800":1',
)


def _corrupt(rng: random.Random, text: str) -> str:
    """A template's JSON text made certainly invalid."""
    op = rng.randrange(7)
    if op == 0:
        return text[: rng.randrange(1, len(text))]
    if op == 1:
        return text[:-1] + ",}"
    if op == 2:
        return text.replace('"', "'")
    if op == 3:
        return text + rng.choice(("x", "}", "]", ",", '"', "{}", "null"))
    if op == 4:
        return "{//c\n" + text[1:]
    colons = [m.start() + 1 for m in re.finditer('":', text)]  # key/value separators
    if op == 5:
        at = rng.choice(colons)
        return text[:at] + rng.choice(("", "=", "::", " ")) + text[at + 1 :]
    commas = [m.start() for m in re.finditer(",", text)]
    at = rng.choice(commas)
    return text[:at] + rng.choice(("", ";", ",,")) + text[at + 1 :]


def _bad_base64(rng: random.Random, text: str) -> bytes | None:
    """The base64 of a valid body, made invalid as base64 (None when it cannot be)."""
    encoded = b64(utf8(text))
    op = rng.randrange(6)
    if op == 0:  # whitespace inside
        at = rng.randrange(1, len(encoded) - 1)
        return encoded[:at] + rng.choice((b"\n", b" ", b"\r\n", b"\t")) + encoded[at:]
    if op == 1:  # MIME line breaks every 76 chars
        return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    if op == 2:  # padding dropped
        return encoded.rstrip(b"=") if encoded.endswith(b"=") else None
    if op == 3:  # URL-safe alphabet
        if b"+" not in encoded and b"/" not in encoded:
            return None
        return base64.urlsafe_b64encode(utf8(text))
    if op == 4:  # base64 of base64
        return b64(encoded)
    return encoded[:-1] + b"!" + encoded[-1:]


def gen_non_json(rng: random.Random, n: int) -> Iterator[Case]:
    for text in _HANDWRITTEN_NON_JSON:
        yield Case("non-json", utf8(text), "trades", MAL)
    names = list(TEMPLATES)
    produced = 0
    while produced < n:
        name = rng.choice(names)
        template, home = TEMPLATES[name]
        if rng.random() < 0.75:
            yield Case("non-json", utf8(_corrupt(rng, jtext(template))), home, MAL)
            produced += 1
            continue
        body = _bad_base64(rng, jtext(template))
        if body is not None:
            yield Case("non-json", body, home, MAL, encodings=("raw",))
            produced += 1
    for text in ("[1]", "1", "null", "true", '"FILL"', "[]", '[{"type":"FILL"}]', "-0", "1e999"):
        # JSON that is no object: SCHEMA_INVALID once decoded; raw it is no base64 either.
        yield Case("non-json", utf8(text), "trades", BAD, expect_b64=INV)


def gen_wrong_types(rng: random.Random, n: int) -> Iterator[Case]:
    names = list(TEMPLATES)
    for i in range(n):
        name = names[i % len(names)]
        template, home = TEMPLATES[name]
        op = rng.random()
        if op < 0.8:
            path, accepted = rng.choice(field_paths(name))
            raw = rng.choice(KIND_VALUES[rng.choice(wrong_kinds(accepted))])
            yield Case(
                "wrong-type", utf8(splice(template, path, raw)), home, entry_expect(path, INV)
            )
        elif op < 0.9:
            required = [(p, k) for p, k in field_paths(name) if p[-1] not in OPTIONAL_FIELDS]
            path, _kinds = rng.choice(required)
            text = splice(template, path, None)
            yield Case("wrong-type", utf8(text), home, entry_expect(path, INV))
        else:
            key = rng.choice(
                (
                    "Type",
                    "TYPE",
                    "tradeid",
                    "trade_id",
                    " type",
                    "type ",
                    "type\u0000",
                    "__proto__",
                    "constructor",
                    "",
                    "\uff54ype",
                    "extra",
                    "schema_version",
                )
            )
            text = add_members(
                jtext(template), jtext(key) + ":" + rng.choice(KIND_VALUES[rng.choice(ALL_KINDS)])
            )
            yield Case("wrong-type", utf8(text), home, INV)


def _numeric_paths(name: str) -> list[tuple[tuple[Any, ...], str]]:
    """(path, rule) of every number-valued field: rule decimal-positive/-nonneg/-nonzero or
    integer."""
    rules = {
        "quantity": "positive",
        "price": "positive",
        "markPrice": "positive",
        "fee": "nonneg",
        "amount": "nonzero",
    }
    out: list[tuple[tuple[Any, ...], str]] = [
        ((f,), rules[f]) for f in DECIMAL_FIELDS.get(name, ())
    ]
    out += [((f,), "integer") for f in INTEGER_FIELDS if f in FIELDS[name]]
    if name == "MARKS":
        out.append((("marks", 1, "markPrice"), "positive"))
    return out


def _number_cases(category: str, values: Sequence[tuple[str, Expect, Expect]]) -> Iterator[Case]:
    """Each raw value (text, expect in a decimal field, expect in an integer field) in
    every numeric field of every template, and in an ignored ``$x`` field of a FILL."""
    for name, (template, home) in TEMPLATES.items():
        for path, rule in _numeric_paths(name):
            for text, as_decimal, as_integer in values:
                expect = as_integer if rule == "integer" else as_decimal
                if rule == "nonneg" and expect == INV:
                    expect = None  # a fee may be zero (or -0), which the other fields refuse
                if expect is not None:
                    expect = entry_expect(path, expect)
                yield Case(category, utf8(splice(template, path, text)), home, expect)
    for text, as_decimal, _as_integer in values:
        ignored = MAL if as_decimal == MAL else APPLIED
        yield Case(category, utf8(add_members(jtext(FILL), '"$x":' + text)), "trades", ignored)


_NAN_INF = [
    ("NaN", MAL, MAL),
    ("-NaN", MAL, MAL),
    ("Infinity", MAL, MAL),
    ("-Infinity", MAL, MAL),
    ("+Infinity", MAL, MAL),
    ("inf", MAL, MAL),
    *[
        (jtext(s), INV, INV)
        for s in (
            "NaN",
            "nan",
            "-NaN",
            "sNaN",
            "Infinity",
            "-Infinity",
            "inf",
            "-inf",
            "+Infinity",
            "Inf",
            "\u221e",
            "1e999999",
        )
    ],
]

_TEN_K = "1" * 10_000
_BIG_NUMBERS = [
    ("1e999", None, INV),
    (jtext("1e999"), None, INV),
    (jtext("1E999"), None, INV),
    (jtext("-1e999"), INV, INV),
    (jtext("1e-999"), None, INV),
    ("1e-999", None, INV),
    (jtext("9.999999999999999999999999999999999999999e999"), None, INV),
    (_TEN_K, INV, INV),
    (jtext(_TEN_K), INV, INV),
    ("-" + _TEN_K, INV, INV),
    (jtext("0" * 10_000 + "1"), None, INV),
    ("0" * 10_000 + "1", MAL, MAL),
    (jtext("0." + "0" * 10_000 + "1"), None, INV),
    ("0." + "0" * 10_000 + "1", None, INV),
    (jtext("1." + "0" * 10_000), INV, INV),
    ("1." + "0" * 10_000, INV, INV),
    (jtext("1234567890" * 4), None, INV),
    (jtext("12345678901" * 4), INV, INV),
    ("1234567890" * 4, None, INV),
    ("12345678901" * 4, INV, INV),
    (jtext("0.000" + "1234567890" * 4), None, INV),
    (jtext("0.000" + "12345678901" * 4), INV, INV),
    ("1" + "0" * 50, INV, INV),
]

_NEGATIVE_ZERO = [
    ("-0", INV, INV),
    ("-0.0", INV, INV),
    ("-0e0", INV, INV),
    ("-0E-5", INV, INV),
    ("-0.000000", INV, INV),
    (jtext("-0"), INV, INV),
    (jtext("-0.0"), INV, INV),
    (jtext("-00"), INV, INV),
    (jtext("-0e999"), INV, INV),
    (jtext("-0.000e-999"), INV, INV),
]

_HUGE_EXPONENTS = [
    ("1e1000", INV, INV),
    ("1E+1000", INV, INV),
    ("1e-1000", INV, INV),
    ("1e99999", INV, INV),
    ("1e999999999999", INV, INV),
    ("1e" + "9" * 10_000, INV, INV),
    ("1e-" + "9" * 10_000, INV, INV),
    (jtext("1e1000"), INV, INV),
    (jtext("1e-1000"), INV, INV),
    (jtext("1e0999"), INV, INV),
    (jtext("1e+0999"), INV, INV),
    (jtext("1e" + "9" * 10_000), INV, INV),
    (jtext("1e+"), INV, INV),
    (jtext("1e"), INV, INV),
    (jtext("1_000"), INV, INV),
    (jtext("+1"), INV, INV),
    (jtext("1."), INV, INV),
    (jtext(".5"), INV, INV),
    (jtext(" 1"), INV, INV),
    (jtext("1 "), INV, INV),
    (jtext("0x10"), INV, INV),
    (jtext("1,5"), INV, INV),
]


def gen_numbers(rng: random.Random) -> Iterator[Case]:
    del rng
    yield from _number_cases("nan-infinity", _NAN_INF)
    yield from _number_cases("big-numbers", _BIG_NUMBERS)
    yield from _number_cases("negative-zero", _NEGATIVE_ZERO)
    yield from _number_cases("huge-exponent", _HUGE_EXPONENTS)


def _nest(depth: int, kind: str = "array") -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def gen_deep_nesting(rng: random.Random) -> Iterator[Case]:
    del rng
    fill = jtext(FILL)
    mark = jtext(MARK)
    for depth in (1, 30, 31, 32, 33, 34, 64, 100, 999, 1000, 1001, 5000, 16_000, 24_000):
        for kind in ("array", "object"):
            inner = _nest(depth, kind)
            if len(inner) > 48_000:
                continue
            # The outer object + depth levels: deeper than 32 in all is SCHEMA_INVALID; an
            # ignored "$x" member within the limit leaves a valid FILL.
            ok = depth + 1 <= 32
            yield Case("deep-nesting", utf8('{"x":' + inner + "}"), "trades", INV)
            yield Case(
                "deep-nesting",
                utf8(add_members(fill, '"$x":' + inner)),
                "trades",
                APPLIED if ok else INV,
            )
            yield Case(
                "deep-nesting",
                utf8(add_members(mark, '"$x":' + inner)),
                "marks",
                APPLIED if ok else INV,
            )
            marks = splice(MARKS, ("marks",), "[" + inner + "]")
            yield Case("deep-nesting", utf8(marks), "marks", INV)
            yield Case("deep-nesting", utf8(inner), "trades", BAD, expect_b64=INV)
        # unbalanced: never JSON
        yield Case("deep-nesting", utf8('{"x":' + "[" * depth), "trades", MAL)
        yield Case("deep-nesting", utf8("{" + '"x":{' * min(depth, 9000)), "trades", MAL)
        yield Case("deep-nesting", utf8("{" + "[" * depth + "}" * depth), "trades", MAL)
    yield Case("deep-nesting", b"[" * MAX_QUEUE_BODY, "trades", MAL, encodings=("raw",))
    yield Case("deep-nesting", b"{" * MAX_QUEUE_BODY, "trades", MAL, encodings=("raw",))
    yield Case("deep-nesting", b"[" * 48_000, "trades", MAL, encodings=("base64",))
    yield Case("deep-nesting", b"[" * 24_000 + b"]" * 24_000, "trades", MAL, encodings=("raw",))
    yield Case("deep-nesting", b"[" * 24_000 + b"]" * 24_000, "trades", INV, encodings=("base64",))


def _pad_to(text: str, size: int, make: Callable[[int], str]) -> bytes:
    """``make(n)`` grown until its UTF-8 is exactly ``size`` bytes (or just below)."""
    low, high = 0, size
    while low < high:
        mid = (low + high + 1) // 2
        if len(utf8(make(mid))) <= size:
            low = mid
        else:
            high = mid - 1
    body = utf8(make(low))
    assert len(body) <= size, text
    return body


def big_bodies(size: int) -> list[tuple[str, bytes, str, Expect]]:
    """Bodies of (at most) ``size`` bytes: name, body, home queue, expectation."""
    fill = jtext(FILL)
    out: list[tuple[str, bytes, str, Expect]] = []

    def add(name: str, home: str, expect: Expect, make: Callable[[int], str]) -> None:
        out.append((name, _pad_to(name, size, make), home, expect))

    add(
        "pad-ignored-field",
        "trades",
        APPLIED,
        lambda n: add_members(fill, jtext("$pad") + ":" + jtext("x" * n)),
    )
    add("huge-tradeId", "trades", INV, lambda n: with_value(FILL, ("tradeId",), "T" * n))
    add("huge-accountId", "trades", INV, lambda n: with_value(FILL, ("accountId",), "A" * n))
    add("huge-unknown-field", "trades", INV, lambda n: add_members(fill, '"pad":' + jtext("x" * n)))
    add("huge-side", "trades", INV, lambda n: with_value(FILL, ("side",), "B" * n))
    add("huge-type", "trades", INV, lambda n: with_value(FILL, ("type",), "F" * n))
    add("huge-decimal-string", "trades", INV, lambda n: with_value(FILL, ("quantity",), "1" * n))
    add("huge-decimal-literal", "trades", INV, lambda n: splice(FILL, ("price",), "1" * max(n, 1)))
    add(
        "huge-leverage-literal",
        "trades",
        INV,
        lambda n: splice(FILL, ("leverage",), "1" * max(n, 1)),
    )
    add(
        "huge-timestamp-fraction",
        "trades",
        None,
        lambda n: with_value(FILL, ("executedAt",), "2024-10-01T12:00:00." + "1" * n + "Z"),
    )
    add("huge-key", "trades", INV, lambda n: add_members(fill, jtext("k" * n) + ":1"))
    add(
        "nul-escapes-ignored",
        "trades",
        APPLIED,
        lambda n: add_members(fill, '"$pad":"' + "\\u0000" * n + '"'),
    )
    add(
        "many-unknown-keys",
        "trades",
        INV,
        lambda n: add_members(fill, ",".join(f'"k{i}":{i}' for i in range(n // 8))),
    )
    add(
        "many-ignored-keys",
        "trades",
        APPLIED,
        lambda n: add_members(fill, ",".join(f'"$k{i}":{i}' for i in range(n // 9))),
    )
    add(
        "many-ignored-keys-one-duplicate",
        "trades",
        INV,
        lambda n: add_members(fill, ",".join(f'"$k{i}":{i}' for i in range(n // 9)) + ',"$k0":0'),
    )
    add(
        "long-array-ignored",
        "trades",
        APPLIED,
        lambda n: add_members(fill, '"$pad":[' + ",".join(["1"] * max(n // 2, 1)) + "]"),
    )
    add("leading-whitespace", "trades", APPLIED, lambda n: " " * n + fill)
    add("trailing-whitespace", "trades", APPLIED, lambda n: fill + "\n" * n)
    add(
        "mark-huge-symbol-number",
        "marks",
        INV,
        lambda n: splice(MARK, ("symbol",), "1" * max(n, 1)),
    )
    add(
        "mark-ignored-pad",
        "marks",
        APPLIED,
        lambda n: add_members(jtext(MARK), '"$p":' + jtext("p" * n)),
    )
    add("braces", "trades", MAL, lambda n: "{" * max(n, 1))
    add("unbalanced-members", "trades", MAL, lambda n: "{" + '"a":{' * (n // 5))
    add("base64-alphabet", "trades", MAL, lambda n: "A" * (n // 4 * 4))
    add("digits", "trades", MAL, lambda n: "0" * (n // 4 * 4))
    out.append(("random-bytes", random.Random(size).randbytes(size), "trades", BAD))
    out.append(("invalid-utf8", b"{" + b"\xff" * (size - 1), "trades", MAL))
    out.append(("nul-bytes", b"{" + b"\x00" * (size - 1), "trades", MAL))
    return out


def marks_batches() -> list[tuple[str, bytes, Expect]]:
    """MARKS at the 500-entry limit (valid, each invalid, each unknown) and above it."""

    def entry(i: int, **changes: Any) -> dict[str, Any]:
        base = {
            "symbol": "BTCUSDT",
            "markPrice": "60000.5",
            "timestamp": f"2024-10-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i // 3600:03d}Z",
        }
        base.update(changes)
        return base

    def batch(entries: list[Any]) -> bytes:
        return utf8(jtext({"type": "MARKS", "schemaVersion": 1, "marks": entries}))

    return [
        ("marks-500-valid", batch([entry(i) for i in range(500)]), APPLIED),
        ("marks-500-invalid", batch([entry(i, markPrice="-1") for i in range(500)]), INV),
        ("marks-500-wrong-type", batch([entry(i, markPrice=[i]) for i in range(500)]), INV),
        ("marks-500-unknown", batch([entry(i, symbol=f"S{i}") for i in range(500)]), UNK),
        ("marks-500-not-objects", batch(list(range(500))), INV),
        ("marks-501", batch([entry(i) for i in range(501)]), INV),
        ("marks-0", batch([]), INV),
        ("marks-500-same-mark", batch([entry(0)] * 500), APPLIED | frozenset({"IGNORED"})),
    ]


def gen_64k(rng: random.Random) -> Iterator[Case]:
    del rng
    for name, body, home, expect in big_bodies(MAX_QUEUE_BODY):
        yield Case(f"64KiB:{name}", body, home, expect, encodings=("raw",))
    for name, body, home, expect in big_bodies(MAX_QUEUE_BODY // 4 * 3):
        b64_expect = BAD if name in ("base64-alphabet", "digits", "random-bytes") else expect
        yield Case(
            f"64KiB:{name}", body, home, expect, encodings=("base64",), expect_b64=b64_expect
        )
    for name, body, expect in marks_batches():
        yield Case(f"64KiB:{name}", body, "marks", expect, encodings=("raw",))


_CONTROL = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\x9f"]
_INVISIBLE = [
    "\u00a0",
    "\u00ad",
    "\u061c",
    "\u180e",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u2028",
    "\u2029",
    "\u202a",
    "\u202e",
    "\u2060",
    "\u2066",
    "\u2069",
    "\ufeff",
    "\ufff9",
    "\U000e0001",
    "\U000e0041",
    " ",
    "\ud800",
    "\udfff",
    "\ud83d",
]


def gen_control_ids(rng: random.Random) -> Iterator[Case]:
    for name in ("FILL", "TRANSFER"):
        template, home = TEMPLATES[name]
        for fld in ID_FIELDS[name]:
            base = str(template.get(fld) or "corr-0001")
            for ch in _CONTROL + _INVISIBLE:
                at = rng.choice((0, len(base) // 2, len(base)))
                value = base[:at] + ch + base[at:]
                yield Case("control-in-id", utf8(with_value(template, (fld,), value)), home, INV)
            for value in (
                "",
                "\x00" * 3,
                "x" * 65,
                "rejection:x",
                "sha256:" + "0" * 64,
                "a b",
                "a/b",
                "a\\b",
                "a@b",
                "\u00e9",
                "\uff21",
                "a\u0301",
            ):
                yield Case("control-in-id", utf8(with_value(template, (fld,), value)), home, INV)
    for ch in _CONTROL + _INVISIBLE:  # lone surrogates in symbols hit a known bug
        value = "BTC" + ch + "USDT"
        yield Case("control-in-id", utf8(with_value(FILL, ("symbol",), value)), "trades", UNK)
        yield Case("control-in-id", utf8(with_value(MARK, ("symbol",), value)), "marks", UNK)


_HOMOGLYPHS = {
    "A": "\u0410\u0391\uff21",
    "B": "\u0412\u0392",
    "C": "\u0421\u03f9",
    "D": "\u13a0",
    "E": "\u0415\u0395",
    "F": "\u03dc",
    "G": "\u050c",
    "H": "\u041d\u0397",
    "I": "\u0406\u0399\u04c0\u0130\u2160",
    "K": "\u041a\u039a",
    "L": "\u13de",
    "M": "\u041c\u039c",
    "N": "\u039d",
    "O": "\u041e\u039f0",
    "P": "\u0420\u03a1",
    "R": "\u13a1",
    "S": "\u0405",
    "T": "\u0422\u03a4",
    "U": "\u054d",
    "W": "\u051c",
    "X": "\u0425\u03a7",
    "Y": "\u03a5",
    "Z": "\u0396",
}


def lookalikes(rng: random.Random, word: str) -> list[str]:
    """Strings that look like (or normalize to) ``word`` but are not it."""
    out = [
        word.lower(),
        word.title(),
        word.swapcase(),
        " " + word,
        word + " ",
        word + "\u00a0",
        word + "\t",
        word + "\n",
        word + "\u0000",
        word + "\u0301",
        "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in word),
        "".join(chr(0x1D400 + ord(c) - 65) if "A" <= c <= "Z" else c for c in word),
    ]
    for zw in ("\u200b", "\u200d", "\ufeff", "\u2060", "\u00ad"):
        at = rng.randrange(1, len(word))
        out.append(word[:at] + zw + word[at:])
    for i, c in enumerate(word):
        for glyph in _HOMOGLYPHS.get(c, ""):
            out.append(word[:i] + glyph + word[i + 1 :])
    out.append("".join(rng.choice(_HOMOGLYPHS.get(c, c)) for c in word))
    return [s for s in dict.fromkeys(out) if s != word]


def gen_lookalikes(rng: random.Random) -> Iterator[Case]:
    enum_fields = {
        "FILL": ("type", "side", "marginMode", "positionSide"),
        "TRANSFER": ("type", "reason", "asset"),
        "MARK": ("type",),
        "MARKS": ("type",),
    }
    for name, fields in enum_fields.items():
        template, home = TEMPLATES[name]
        for fld in fields:
            for value in lookalikes(rng, str(template[fld])):
                yield Case(
                    "unicode-lookalike", utf8(with_value(template, (fld,), value)), home, INV
                )
    for name, path in (
        ("FILL", ("symbol",)),
        ("MARK", ("symbol",)),
        ("MARKS", ("marks", 0, "symbol")),
    ):
        template, home = TEMPLATES[name]
        for value in lookalikes(rng, "BTCUSDT"):
            yield Case(
                "unicode-lookalike",
                utf8(with_value(template, path, value)),
                home,
                entry_expect(path, UNK),
            )
    digits = (
        "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
        "\u0966\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e\u096f",
        "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
        "\U0001d7ce\U0001d7cf\U0001d7d0\U0001d7d1\U0001d7d2\U0001d7d3\U0001d7d4\U0001d7d5\U0001d7d6\U0001d7d7",
        "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079",
    )
    for name in ("FILL", "TRANSFER", "MARK"):
        template, home = TEMPLATES[name]
        for fld in DECIMAL_FIELDS[name] + ("schemaVersion", TIMESTAMP_FIELDS[name]):
            original = str(template[fld])
            for table in digits:
                value = "".join(table[int(c)] if c.isdigit() else c for c in original)
                yield Case(
                    "unicode-lookalike", utf8(with_value(template, (fld,), value)), home, INV
                )
    for value in ("\uff11\uff10", "\u0661\u0660", "1\u0660"):
        yield Case("unicode-lookalike", utf8(with_value(FILL, ("leverage",), value)), "trades", INV)


def gen_duplicates(rng: random.Random) -> Iterator[Case]:
    del rng
    for template, home in TEMPLATES.values():
        members = [(jtext(k), jtext(v)) for k, v in template.items()]
        for i, (key, value) in enumerate(members):
            escaped = f'"\\u{ord(json.loads(key)[0]):04x}' + key[2:]
            for dup_key, dup_value in (
                (key, value),
                (key, '"other"'),
                (escaped, value),
                (key, "null"),
            ):
                for where in (i + 1, len(members)):
                    pairs = [*members[:where], (dup_key, dup_value), *members[where:]]
                    text = "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
                    yield Case("duplicate-keys", utf8(text), home, INV)
            # duplicate + syntax error: MALFORMED wins
            pairs = [*members, (key, value)]
            text = "{" + ",".join(f"{k}:{v}" for k, v in pairs) + ","
            yield Case("duplicate-keys", utf8(text), home, MAL)
        text = jtext(template)
        for members_text in (
            '"$a":1,"$a":1',
            '"$x":{"a":1,"a":1}',
            '"$x":[{"a":1},{"b":1,"b":2}]',
            '"$x":[[[{"k":{"k":1,"k":1}}]]]',
            '"$\\u0061":1,"$a":2',
            '"$x":{"":1,"":1}',
        ):
            yield Case("duplicate-keys", utf8(add_members(text, members_text)), home, INV)
    entry = (
        '{"symbol":"BTCUSDT","symbol":"ETHUSDT","markPrice":"1","timestamp":"2024-10-01T12:30:00Z"}'
    )
    yield Case("duplicate-keys", utf8(splice(MARKS, ("marks", 0), entry)), "marks", INV)


_TIMESTAMPS: list[tuple[Any, Expect]] = [
    ("2024-02-30T00:00:00Z", INV),
    ("2024-13-01T00:00:00Z", INV),
    ("2024-10-01T24:00:00Z", INV),
    ("2024-10-01T23:59:60Z", INV),
    ("2024-10-01T12:60:00Z", INV),
    ("0000-01-01T00:00:00Z", INV),
    ("0001-01-01T00:00:00+23:59", INV),
    ("9999-12-31T23:59:59-23:59", INV),
    ("9999-12-31T23:59:59.999Z", None),
    ("0001-01-01T00:00:00.000Z", None),
    ("2024-10-01T12:00:00", INV),
    ("2024-10-01T12:00:00z", INV),
    ("2024-10-01t12:00:00Z", INV),
    ("2024-10-01 12:00:00Z", INV),
    ("2024-10-01T12:00:00+0000", INV),
    ("2024-10-01T12:00:00+24:00", INV),
    ("2024-10-01T12:00:00+99:99", INV),
    ("2024-10-01T12:00:00.Z", INV),
    ("2024-10-01T12:00Z", INV),
    ("2024-10-01", INV),
    ("+2024-10-01T12:00:00Z", INV),
    ("2024-10-01T12:00:00.000Z\n", INV),
    ("2024-10-01T12:00:00." + "9" * 10_000 + "Z", None),
    ("2024-10-01T12:00:00.000+00:00", None),
    ("2024-10-01T12:00:00.000-00:00", None),
    ("1727784000", INV),
    (1727784000, INV),
    ("", INV),
]


def gen_timestamps(rng: random.Random) -> Iterator[Case]:
    del rng
    for name, (template, home) in TEMPLATES.items():
        path = ("marks", 0, "timestamp") if name == "MARKS" else (TIMESTAMP_FIELDS[name],)
        for value, expect in _TIMESTAMPS:
            yield Case(
                "timestamps",
                utf8(with_value(template, path, value)),
                home,
                None if expect is None else entry_expect(path, expect),
            )


def gen_framing(rng: random.Random) -> Iterator[Case]:
    del rng
    for name, (template, home) in TEMPLATES.items():
        text = utf8(jtext(template))
        encoded = b64(text)
        ok = None if name == "MARKS" else APPLIED
        for prefix in (b" ", b"\t\r\n", BOM, b" \n" + BOM + b"\t ", b"\r\n" * 100):
            yield Case("framing", prefix + text, home, ok, encodings=("raw",))
            yield Case("framing", prefix + encoded, home, ok, encodings=("raw",))
            yield Case("framing", encoded + prefix.replace(BOM, b""), home, ok, encodings=("raw",))
        for prefix in (
            BOM + BOM,
            b"\x0b",
            b"\x0c",
            b"\xc2\xa0",
            b"\xfe\xff",
            b"\xff\xfe",
            b"\x00",
            b"\xe2\x80\x8b",
        ):
            yield Case("framing", prefix + text, home, MAL, encodings=("raw",))
            yield Case("framing", prefix + encoded, home, MAL, encodings=("raw",))
        yield Case("framing", b64(BOM + text), home, ok, encodings=("raw",))
        yield Case("framing", b64(BOM + BOM + text), home, MAL, encodings=("raw",))
        yield Case("framing", b64(b"\x0b" + text), home, MAL, encodings=("raw",))


def _random_fill(rng: random.Random) -> dict[str, Any]:
    symbol = rng.choice(sorted(_CATALOG.instruments))
    inst = _CATALOG.instruments[symbol]
    qty = inst.step_size * rng.randrange(1, 2000) if rng.random() < 0.9 else Decimal(rng.random())
    price = inst.tick_size * rng.randrange(1, 10**6) if rng.random() < 0.9 else Decimal("0.0001")
    out: dict[str, Any] = {
        "type": "FILL",
        "schemaVersion": 1,
        "tradeId": f"T-{rng.randrange(10**9)}",
        "accountId": f"acct-{rng.randrange(100)}",
        "symbol": symbol,
        "side": rng.choice(("BUY", "SELL")),
        "quantity": str(qty) if rng.random() < 0.5 else float(qty),
        "price": str(price),
        "leverage": rng.randrange(1, 130),
        "executedAt": f"2024-10-01T12:{rng.randrange(60):02d}:00Z",
    }
    if rng.random() < 0.5:
        out["marginMode"] = rng.choice(("ISOLATED", "CROSS"))
    if rng.random() < 0.5:
        out["positionSide"] = rng.choice(("BOTH", "LONG", "SHORT"))
    if rng.random() < 0.3:
        out["reduceOnly"] = rng.random() < 0.5
    if rng.random() < 0.5:
        out["fee"] = str(Decimal(rng.randrange(0, 1000)) / 100)
    if rng.random() < 0.3:
        out["$AzureWebJobsParentId"] = "0b5e6a4c-0000-0000-0000-000000000000"
    return out


def _random_transfer(rng: random.Random) -> dict[str, Any]:
    reason = rng.choice(("DEPOSIT", "WITHDRAWAL", "FUNDING", "ADJUSTMENT"))
    amount = Decimal(rng.randrange(1, 10**6)) / 100
    if reason == "WITHDRAWAL" or (reason in ("FUNDING", "ADJUSTMENT") and rng.random() < 0.5):
        amount = -amount
    return {
        "type": "TRANSFER",
        "schemaVersion": 1,
        "transferId": f"X-{rng.randrange(10**9)}",
        "accountId": f"acct-{rng.randrange(100)}",
        "asset": rng.choice(("USDT", "BTC", "ETH")),
        "amount": str(amount),
        "reason": reason,
        "occurredAt": "2024-10-01T11:00:00.000Z",
    }


def _random_mark(rng: random.Random) -> dict[str, Any]:
    return {
        "symbol": rng.choice((*sorted(_CATALOG.instruments), "DOGEUSDT")),
        "markPrice": str(Decimal(rng.randrange(1, 10**7)) / 10),
        "timestamp": f"2024-10-01T12:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
    }


def gen_valid(rng: random.Random, n: int) -> Iterator[Case]:
    for i in range(n):
        kind = i % 4
        if kind == 0:
            yield Case("valid-ish", utf8(jtext(_random_fill(rng))), "trades", None)
        elif kind == 1:
            yield Case("valid-ish", utf8(jtext(_random_transfer(rng))), "trades", None)
        elif kind == 2:
            mark = {"type": "MARK", "schemaVersion": 1, **_random_mark(rng)}
            yield Case("valid-ish", utf8(jtext(mark)), "marks", None)
        else:
            batch = {
                "type": "MARKS",
                "schemaVersion": 1,
                "marks": [_random_mark(rng) for _ in range(rng.randrange(1, 8))],
            }
            yield Case("valid-ish", utf8(jtext(batch)), "marks", None)


def all_cases(seed: int = SEED) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    cases += gen_random_bytes(rng, 1000)
    cases += gen_random_text(rng, 400)
    cases += gen_invalid_utf8(rng, 400)
    cases += gen_non_json(rng, 500)
    cases += gen_wrong_types(rng, 800)
    cases += gen_numbers(rng)
    cases += gen_deep_nesting(rng)
    cases += gen_64k(rng)
    cases += gen_control_ids(rng)
    cases += gen_lookalikes(rng)
    cases += gen_duplicates(rng)
    cases += gen_timestamps(rng)
    cases += gen_framing(rng)
    cases += gen_valid(rng, 300)
    return cases


CATEGORIES = (
    "random-bytes",
    "random-text",
    "invalid-utf8",
    "non-json",
    "wrong-type",
    "nan-infinity",
    "big-numbers",
    "negative-zero",
    "huge-exponent",
    "deep-nesting",
    "64KiB",
    "control-in-id",
    "unicode-lookalike",
    "duplicate-keys",
    "timestamps",
    "framing",
    "valid-ish",
)


# --- the seeded loop -------------------------------------------------------------------


def test_ten_thousand_generated_bodies_are_each_handled_and_recorded() -> None:
    tally = Tally()
    started = time.perf_counter()
    cpu = time.process_time()
    for case in all_cases():
        for raw, expect in case.variants():
            both = not case.category.startswith("random-")
            tally.body(raw, case.home, expect, case.category, both)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    print(tally.figures(f"hostile-input loop (seed {SEED}, {elapsed:.1f} s wall, {cpu:.1f} s CPU)"))
    families = Counter(c.split(":")[0] for c in tally.categories.elements())
    print(f"  bodies by category: {dict(sorted(families.items()))}")
    assert tally.bodies >= 10_000
    assert set(CATEGORIES) <= set(families), set(CATEGORIES) - set(families)
    assert tally.kinds["APPLIED"] > 0 and tally.kinds["REJECTED"] > 0
    tally.assert_clean()


def test_curated_corpus_bodies() -> None:
    tally = Tally()
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    for line in lines:
        item = json.loads(line)
        raw = base64.b64decode(item["bytes_b64"], validate=True)
        expect = frozenset(item["expect"]) if item["expect"] is not None else None
        tally.body(raw, item["queue"], expect, f"corpus:{item['name']}")
    print(tally.figures(f"hostile-input corpus ({CORPUS.name})"))
    assert len(lines) >= 40
    tally.assert_clean()


# --- every field of every message, with every wrong JSON type --------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [(name, path) for name in TEMPLATES for path, _kinds in field_paths(name)],
    ids=lambda v: v if isinstance(v, str) else ".".join(map(str, v)),
)
def test_every_field_with_every_wrong_json_type_is_schema_invalid(
    name: str, path: tuple[Any, ...]
) -> None:
    template, home = TEMPLATES[name]
    accepted = dict(field_paths(name))[path]
    tried = 0
    raws: list[str] = [v for kind in wrong_kinds(accepted) for v in KIND_VALUES[kind]]
    if path[-1] not in OPTIONAL_FIELDS:
        raws.append("")  # "" stands for: the field is missing
    for value in raws:
        text = splice(template, path, value if value else None)
        for raw in (utf8(text), b64(utf8(text))):
            deps = fresh_deps()
            outcomes = process(raw, home, deps)
            rejected = [o for o in outcomes if o.kind == "REJECTED"]
            assert len(rejected) == 1, (value, outcomes)
            assert rejected[0].detail == "SCHEMA_INVALID", (value, rejected[0])
            others = [o for o in outcomes if o.kind != "REJECTED"]
            assert all(o.kind == "APPLIED" for o in others)
            assert len(others) == (len(MARKS["marks"]) - 1 if len(path) == 3 else 0)
            assert not unknown_problems(verify(raw, deps, outcomes, None))
            record = deps.store.records[
                (rejected[0].account_id or UNATTRIBUTED, f"rejection:{rejected[0].source_id}")
            ]
            messages = " ".join(r["message"] for r in record["reasons"])
            assert str(path[-1]) in messages, messages
            tried += 1
    assert tried >= 2 * len(wrong_kinds(accepted))


def test_a_negative_zero_fee_is_read_as_zero() -> None:
    deps = fresh_deps()
    raw = utf8(splice(FILL, ("fee",), "-0.0"))
    (outcome,) = process(raw, "trades", deps)
    assert outcome.kind == "APPLIED"
    record = deps.store.records[(FILL["accountId"], FILL["tradeId"])]
    assert record["fee"] == "0"


@pytest.mark.parametrize("depth", [31, 32])
def test_nesting_limit_is_32_levels_in_all(depth: int) -> None:
    """The outer object counts: an ignored member nested ``depth`` levels deep."""
    raw = utf8(add_members(jtext(FILL), '"$x":' + _nest(depth)))
    (outcome,) = process(raw, "trades", fresh_deps())
    assert (outcome.kind, outcome.detail) == (
        ("APPLIED", "") if depth + 1 <= 32 else ("REJECTED", "SCHEMA_INVALID")
    )


# --- time and memory of 64 KiB bodies ----------------------------------------------------


def test_64_kib_bodies_have_bounded_memory() -> None:
    """Each 64 KiB body (a few of them 48 KiB inside base64, and the heaviest MARKS
    batches) through both queues under tracemalloc: the peak is printed, and asserted below
    50 MB as a structural bound only."""
    bodies: list[tuple[str, bytes, str, Expect]] = list(big_bodies(MAX_QUEUE_BODY))
    for name, body, home, _expect in big_bodies(MAX_QUEUE_BODY // 4 * 3):
        if name in ("pad-ignored-field", "huge-tradeId", "many-unknown-keys", "random-bytes"):
            bodies.append((f"base64:{name}", b64(body), home, None))
    for name, body, expect in marks_batches():
        if name in ("marks-500-valid", "marks-500-invalid", "marks-501"):
            bodies.append((name, body, "marks", expect))
    bodies.append(("64KiB-of-[", b"[" * MAX_QUEUE_BODY, "trades", MAL))
    peaks: list[tuple[int, str]] = []
    micros: list[tuple[float, str]] = []
    problems: list[str] = []
    tracemalloc.start()
    try:
        for name, raw, home, expect in bodies:
            assert len(raw) <= MAX_QUEUE_BODY
            for queue in QUEUES:
                deps = fresh_deps()
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter_ns()
                outcomes = process(raw, queue, deps)
                micros.append(((time.perf_counter_ns() - started) / 1000, f"{name}/{queue}"))
                peaks.append((tracemalloc.get_traced_memory()[1] - base, f"{name}/{queue}"))
                want = expect if queue == home else other_queue_expect(expect)
                found = unknown_problems(verify(raw, deps, outcomes, want))
                problems += [f"{name}/{queue}: {p}" for p in found]
    finally:
        tracemalloc.stop()
    top = max(peaks)
    slow = max(micros)
    print(
        f"\n64 KiB bodies: {len(bodies)} bodies x 2 queues; tracemalloc peak per message "
        f"max={top[0] / 2**20:.1f} MiB [{top[1]}] median={statistics.median(p for p, _ in peaks) / 2**20:.2f} MiB; "
        f"µs (under tracemalloc) median={statistics.median(m for m, _ in micros):.0f} "
        f"max={slow[0]:.0f} [{slow[1]}]"
    )
    assert not problems, problems[:10]
    assert top[0] < MAX_PEAK_BYTES, top


# --- hypothesis ------------------------------------------------------------------------

HYPOTHESIS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _hypo_check(raw: bytes, home: str, expect: Expect, category: str) -> None:
    tally = Tally()
    tally.body(raw, home, expect, category)
    tally.assert_clean()


@settings(HYPOTHESIS, max_examples=600)
@given(body=st.binary(max_size=4096), home=st.sampled_from(QUEUES))
def test_hypothesis_random_bytes(body: bytes, home: str) -> None:
    _hypo_check(body, home, BAD, "hypothesis-bytes")


@settings(HYPOTHESIS, max_examples=300)
@given(
    name=st.sampled_from(sorted(TEMPLATES)),
    changes=st.dictionaries(
        st.sampled_from(sorted({k for f in FIELDS.values() for k in f})) | st.text(max_size=8),
        _json,
        max_size=4,
    ),
    encode=st.booleans(),
)
def test_hypothesis_json_objects(name: str, changes: dict[str, Any], encode: bool) -> None:
    template, home = TEMPLATES[name]
    changes = {
        k: v
        for k, v in changes.items()
        if not (k == "symbol" and isinstance(v, str) and len(v) > 200)
    }
    raw = utf8(jtext({**template, **changes}))
    _hypo_check(b64(raw) if encode else raw, home, None, "hypothesis-json")


def _wrong_value(kind: str) -> st.SearchStrategy[Any]:
    return {
        "null": st.none(),
        "bool": st.booleans(),
        "integer": st.integers(),
        "number": st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda f: not f.is_integer()
        ),
        "string": st.text(max_size=30),
        "array": st.lists(_json, max_size=3),
        "object": st.dictionaries(st.text(max_size=5), _json, max_size=3),
    }[kind]


@st.composite
def _mutations(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], Any]:
    name = draw(st.sampled_from(sorted(TEMPLATES)))
    path, accepted = draw(st.sampled_from(field_paths(name)))
    kind = draw(st.sampled_from(wrong_kinds(accepted)))
    return name, path, draw(_wrong_value(kind))


@settings(HYPOTHESIS, max_examples=500)
@given(mutation=_mutations(), encode=st.booleans())
def test_hypothesis_wrong_type_in_any_field(
    mutation: tuple[str, tuple[Any, ...], Any], encode: bool
) -> None:
    name, path, value = mutation
    template, home = TEMPLATES[name]
    raw = utf8(with_value(template, path, value))
    _hypo_check(b64(raw) if encode else raw, home, entry_expect(path, INV), "hypothesis-wrong-type")


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_DECIMAL_RE = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?(?:[eE][-+]?[0-9]{1,3})?")


def contract_decimal(text: str) -> Decimal | None:
    """The contract's decimal reading of ``text`` (an oracle independent of the app)."""
    match = _DECIMAL_RE.fullmatch(text)
    if match is None or not text.isascii():
        return None
    if len((match.group(1) + (match.group(2) or "")).lstrip("0")) > 40:
        return None
    return Decimal(text)


@settings(HYPOTHESIS, max_examples=300)
@given(
    text=st.from_regex(r"\A-?[0-9]{1,45}(\.[0-9]{1,45})?([eE][-+]?[0-9]{1,4})?\Z")
    | st.text(alphabet="0123456789.eE+-_ ", max_size=50)
    | st.text(max_size=20),
    name=st.sampled_from(("FILL", "MARK", "TRANSFER")),
    literal=st.booleans(),
)
def test_hypothesis_decimal_text(text: str, name: str, literal: bool) -> None:
    template, home = TEMPLATES[name]
    fld = {"FILL": "price", "MARK": "markPrice", "TRANSFER": "amount"}[name]
    value = contract_decimal(text)
    if literal:
        if _JSON_NUMBER.fullmatch(text) is None:
            return
        body = splice(template, (fld,), text)
    else:
        body = with_value(template, (fld,), text)
    if value is None:
        expect: Expect = INV
    elif fld == "amount":
        expect = None if value != 0 else INV
    else:
        expect = None if value > 0 else INV
    _hypo_check(utf8(body), home, expect, "hypothesis-decimal")


_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@settings(HYPOTHESIS, max_examples=300)
@given(
    value=st.text(max_size=80) | st.from_regex(r"\A[A-Za-z0-9._:-]{1,70}\Z"),
    fld=st.sampled_from(("tradeId", "accountId", "correlationId")),
)
def test_hypothesis_ids(value: str, fld: str) -> None:
    raw = utf8(with_value(FILL, (fld,), value))
    well_formed = _ID_RE.fullmatch(value) is not None and not value.startswith(
        ("rejection:", "sha256:")
    )
    deps = fresh_deps()
    (outcome,) = process(raw, "trades", deps)
    assert not unknown_problems(verify(raw, deps, [outcome], None if well_formed else INV))
    if not well_formed and fld in ("tradeId", "accountId"):
        assert outcome.source_id == digest(raw)
    if well_formed:
        assert outcome.kind == "APPLIED"
        expected_id = value if fld == "tradeId" else FILL["tradeId"]
        assert outcome.source_id == expected_id


# --- known bugs (strict: they pass once fixed, and then must be un-marked) --------------


def _symbol_bodies(symbol: str) -> list[tuple[str, bytes]]:
    return [
        ("trades", utf8(with_value(FILL, ("symbol",), symbol))),
        ("marks", utf8(with_value(MARK, ("symbol",), symbol))),
        ("marks", utf8(with_value(MARKS, ("marks", 0, "symbol"), symbol))),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["FILL", "MARK", "MARKS-entry"])
def test_bug_huge_symbol_is_echoed_into_the_rejection_alert(index: int) -> None:
    queue, raw = _symbol_bodies("S" * 60_000)[index]
    deps = fresh_deps()
    outcomes = process(raw, queue, deps)
    assert any(o.kind == "REJECTED" and o.detail == "UNKNOWN_SYMBOL" for o in outcomes)
    assert isinstance(deps.sink, FakeSink)
    sizes = [alert_size(a) for a in deps.sink.of_type("TRADE_REJECTED")]
    assert sizes and max(sizes) <= MAX_ALERT_JSON, sizes


@pytest.mark.parametrize("index", [0, 1, 2], ids=["FILL", "MARK", "MARKS-entry"])
def test_bug_lone_surrogate_symbol_raises(index: int) -> None:
    queue, raw = _symbol_bodies("\ud800")[index]
    deps = fresh_deps()
    outcomes = process(raw, queue, deps)
    assert not verify(raw, deps, outcomes, None)


def test_bug_poison_of_lone_surrogate_symbol_raises() -> None:
    raw = utf8(with_value(FILL, ("symbol",), "\ud800"))
    deps = fresh_deps()
    outcome = process_poison(raw, deps, "trades")
    assert outcome.kind == "DEADLETTERED"


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [("FILL", ("quantity",), "1e999"), ("TRANSFER", ("amount",), "-1e999")],
    ids=["FILL-quantity-QTY_BOUNDS", "DEPOSIT-amount-wrong-sign"],
)
def test_bug_huge_decimal_is_echoed_into_the_reason_message(
    name: str, path: tuple[str, ...], value: str
) -> None:
    template, home = TEMPLATES[name]
    raw = utf8(with_value(template, path, value))
    deps = fresh_deps()
    (outcome,) = process(raw, home, deps)
    assert outcome.kind == "REJECTED"
    record = deps.store.records[(str(template["accountId"]), f"rejection:{outcome.source_id}")]
    assert max(len(r["message"]) for r in record["reasons"]) <= MAX_REASON_MESSAGE
