"""Security checks: no secrets in the repository, none in the logs, parameterized Cosmos
queries only, and bounded echoes of hostile bodies in records, alerts and deadletters.

(a) every git-tracked file (plus the files of this change not yet tracked) is scanned for
    key-like strings; only the two public well-known local keys (Azurite's devstoreaccount1
    key and the Cosmos DB emulator key) are allowed;
(b) the logs of FILLs, a rejection, a failure and a poison (loggers ``tradeguard`` and
    ``handlers`` at DEBUG, through :mod:`handlers.entrypoints` over fakes) carry ids and
    outcomes only: no key, no connection string, no message body;
(c) every Cosmos query in ``handlers/`` is a constant string whose ``@names`` are all passed
    in ``parameters=``;
(d) a 60 KiB bad body leaves a rejection record with an excerpt of at most 512 chars, an
    alert below 8 KiB, and (poisoned) a deadletter whose ``rawBody`` is at most 8 KiB.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from handlers import bootstrap
from handlers.core.catalog import load_catalog
from handlers.core.documents import UNATTRIBUTED
from handlers.flows import Deps
from handlers.settings import load_settings
from tests import aio
from tests.aio import process_mark_message, process_poison, process_trade_message
from tests.events import as_body, load_event

from .fakes import FakeClock, FakeMessage, FakeSink, FakeStore

ROOT = Path(__file__).resolve().parents[2]

#: The only keys allowed in the repository: public, documented, local-only.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
ALLOWED_KEYS = frozenset({AZURITE_KEY, COSMOS_EMULATOR_KEY})

#: Files of this change that may not be tracked yet; scanned too.
OWN_FILES = (
    "tests/unit/test_hostile_input.py",
    "tests/unit/test_security.py",
    "tests/corpus/hostile.jsonl",
    "docs/input-limits.md",
)

MAX_EXCERPT = 512
MAX_ALERT_JSON = 8 * 1024
MAX_RAW_BODY = 8 * 1024


# --- (a) secrets in the repository ----------------------------------------------------

# The patterns and samples are assembled so that this file never matches itself.
KEY_EQ = "Account" + "Key="
_B64 = "A-Za-z0-9+/"
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "storage/cosmos AccountKey": re.compile(r"AccountKey\s*=\s*([^;\"'\s]*)"),
    "private key block": re.compile("-----BEGIN" + r" [A-Z0-9 ]*PRIVATE KEY" + "-----"),
    "SAS signature": re.compile(r"(?i)[?&;]sig=([A-Za-z0-9%+/=]{16,})"),
    "SharedAccessSignature": re.compile(r"(?i)SharedAccessSignature\s*=\s*([^;\"'\s]+)"),
    "SharedAccessKey": re.compile(r"(?i)SharedAccessKey\s*=\s*([^;\"'\s]+)"),
    "bearer token": re.compile(r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{20,}=*)"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key": re.compile(
        r"(?i)aws_?secret_?access_?key\s*[=:]\s*[\"']?([A-Za-z0-9/+=]{40})"
    ),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    # Azure storage and Cosmos DB account keys: 64 bytes, 88 chars of base64.
    "64-byte base64 key": re.compile(rf"(?<![{_B64}-])[{_B64}]{{86}}==(?![{_B64}=])"),
}
#: Account-key values that are not keys: an f-string placeholder naming a constant.
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_.]*\}")
#: Where an 88-char base64 token is a hash, not a key (npm's integrity field).
_HASH_PREFIX = re.compile(r"sha(?:256|384|512)-$")


def find_secrets(text: str) -> list[tuple[str, str]]:
    """(kind, value) of each key-like string in ``text`` that is not allowed."""
    found: list[tuple[str, str]] = []
    for kind, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.group(match.lastindex or 0)
            if value in ALLOWED_KEYS:
                continue
            if kind == "storage/cosmos AccountKey" and _PLACEHOLDER.fullmatch(value):
                continue
            if kind == "64-byte base64 key" and _HASH_PREFIX.search(text[: match.start()][-8:]):
                continue
            found.append((kind, value[:24] + ("…" if len(value) > 24 else "")))
    return found


def scanned_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode("utf-8")
    files = {name for name in listed.split("\0") if name}
    files.update(name for name in OWN_FILES if (ROOT / name).is_file())
    return sorted(files)


def test_the_repository_holds_no_key_but_the_two_public_local_ones() -> None:
    files = scanned_files()
    findings: list[str] = []
    allowed_seen: set[str] = set()
    scanned = 0
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 5 * 1024 * 1024:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        text = data.decode("utf-8", errors="replace")
        scanned += 1
        allowed_seen.update(key for key in ALLOWED_KEYS if key in text)
        for line_no, line in enumerate(text.splitlines(), 1):
            findings += [f"{name}:{line_no}: {kind}: {value}" for kind, value in find_secrets(line)]
    print(f"\nsecret scan: {scanned} files (git ls-files + this change), {len(findings)} findings")
    assert scanned > 50
    assert not findings, "\n".join(findings)
    assert allowed_seen <= ALLOWED_KEYS


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (
            "DefaultEndpointsProtocol=https;AccountName=prod;" + KEY_EQ + "Q" * 86 + "==;",
            "storage",
        ),
        ("AccountEndpoint=https://x.documents.azure.com:443/;" + KEY_EQ + "abc123;", "storage"),
        ("-----BEGIN" + " RSA PRIVATE KEY" + "-----", "private"),
        ("-----BEGIN" + " PRIVATE KEY" + "-----", "private"),
        ("https://a.blob.core.windows.net/c?sv=2022-11-02&s" + "ig=" + "a" * 30 + "%3D", "SAS"),
        ("Authorization: Bea" + "rer " + "abcdefghijklmnopqrstuvwxyz0123", "bearer"),
        ("AKIA" + "ABCDEFGHIJKLMNOP", "AWS"),
        ("aws_secret_access_key = " + "a" * 40, "AWS"),
        ("COSMOS_KEY=" + "Zm9v" * 21 + "ab==", "64-byte"),
    ],
)
def test_the_scanner_finds_key_like_strings(text: str, kind: str) -> None:
    assert any(k.startswith(kind) for k, _ in find_secrets(text)), find_secrets(text)


@pytest.mark.parametrize(
    "text",
    [
        f'AZURITE = "{AZURITE_KEY}"',
        f"AccountKey={AZURITE_KEY};QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;",
        f'"COSMOS_KEY": "{COSMOS_EMULATOR_KEY}"',
        'f"AccountKey={AZURITE_ACCOUNT_KEY};"',
        '"integrity": "sha512-' + "q" * 86 + '=="',
    ],
)
def test_the_scanner_allows_the_public_local_keys(text: str) -> None:
    assert find_secrets(text) == []


# --- shared: deps over fakes ------------------------------------------------------------

SECRET_ENV = {
    "COSMOS_ENDPOINT": "https://localhost:8081/",
    "COSMOS_KEY": COSMOS_EMULATOR_KEY,
    "AzureWebJobsStorage": (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    ),
}


def make_deps(env: dict[str, str] | None = None) -> Deps:
    settings = load_settings(env or {})
    clock = FakeClock()
    return Deps(
        settings=settings,
        catalog=load_catalog(settings.instruments_file),
        store=FakeStore(),
        sink=FakeSink(),
        clock=clock,
        sleep=clock.sleep,
    )


# --- (b) logs: ids and outcomes only ------------------------------------------------------

CANARY = "BODY-CANARY-7f3a9c"


def test_logs_carry_ids_and_outcomes_but_no_key_connection_string_or_body(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    deps = make_deps(SECRET_ENV)
    monkeypatch.setattr(bootstrap, "deps", lambda: deps)
    caplog.set_level(logging.DEBUG, logger="tradeguard")
    caplog.set_level(logging.DEBUG, logger="handlers")

    deposit = load_event("transfer_deposit_usdt")
    fill = {**load_event("fill_btcusdt_long"), "$canary": CANARY}
    fill2 = {**fill, "tradeId": "T-BTC-0002", "quantity": "0.2"}
    short = {**load_event("fill_ethusdt_short"), "$canary": CANARY}
    rejected = {**fill, "tradeId": "T-BAD-0001", "side": "SIDEWAYS"}
    malformed = b'{"canary":"' + CANARY.encode() + b'", not json'
    mark = {**load_event("mark_btcusdt"), "$canary": CANARY}
    poisoned = {**fill, "tradeId": "T-POISON-0001"}
    bodies: list[bytes] = []

    def send(kind: str, body: dict[str, Any] | bytes, dequeue: int = 1) -> None:
        raw = body if isinstance(body, bytes) else as_body(body)
        bodies.append(raw)
        message = FakeMessage(f"msg-{len(bodies)}", dequeue, raw)
        if kind == "trade":
            aio.trade(message)
        elif kind == "mark":
            aio.mark(message)
        else:
            aio.poison(message, "trades")

    send("trade", deposit)
    send("trade", fill)
    send("trade", fill2)
    send("trade", short)
    send("trade", as_body(fill, base64=False))  # a duplicate, raw JSON
    send("trade", rejected)
    send("trade", malformed)
    send("mark", mark)
    send("poison", poisoned)
    # A failure: an account document the app cannot read (its error is logged).
    assert isinstance(deps.store, FakeStore)
    deps.store.accounts["acct-broken"] = {
        "id": "@account",
        "accountId": "acct-broken",
        "schemaVersion": 99,
        "_etag": '"e"',
    }
    broken = {**fill, "accountId": "acct-broken", "tradeId": "T-BROKEN-0001"}
    with pytest.raises(Exception):  # whatever the store raises is retried
        send("trade", broken, dequeue=2)
    send("poison", broken)

    texts = []
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        texts.append(text)
    joined = "\n".join(texts)
    print(f"\nlog check: {len(caplog.records)} records, {len(joined)} chars")
    assert len(caplog.records) >= 10
    for needle in (
        "outcome=APPLIED",
        "outcome=REJECTED",
        "outcome=DUPLICATE",
        "outcome=DEADLETTERED",
        "T-BTC-0001",
        "failed",
    ):
        assert needle in joined, f"{needle!r} missing from the logs"
    forbidden = {
        "the Cosmos key": COSMOS_EMULATOR_KEY,
        "the storage key": AZURITE_KEY,
        "an account key setting": KEY_EQ,
        "the storage connection string": SECRET_ENV["AzureWebJobsStorage"],
        "DefaultEndpointsProtocol": "DefaultEndpointsProtocol",
        "a body's canary": CANARY,
    }
    for what, needle in forbidden.items():
        assert needle not in joined, f"{what} appears in the logs"
    for raw in bodies:
        for form in {raw.decode("utf-8", "replace"), _decoded(raw)}:
            assert form not in joined, f"a whole body appears in the logs: {form[:60]}"


def _decoded(raw: bytes) -> str:
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except ValueError:
        return raw.decode("utf-8", "replace")


def test_settings_and_deps_repr_hide_the_cosmos_key() -> None:
    deps = make_deps(SECRET_ENV)
    assert COSMOS_EMULATOR_KEY not in repr(deps.settings)
    assert COSMOS_EMULATOR_KEY not in repr(deps)


# --- (c) Cosmos queries are parameterized ---------------------------------------------------

_PARAM = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*")


def _module_constants(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in tree.body:
        target = value = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if (
            isinstance(target, ast.Name)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            out[target.id] = value.value
    return out


def query_problems(source: str, filename: str) -> tuple[int, list[str]]:
    """How many Cosmos queries ``source`` runs, and what is wrong with them."""
    tree = ast.parse(source, filename=filename)
    constants = _module_constants(tree)
    count = 0
    problems: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in (
            "query_items",
            "query_items_change_feed",
            "query_containers",
            "query_databases",
            "query_conflicts",
        ):
            continue
        count += 1
        where = f"{filename}:{node.lineno}"
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        query_node = node.args[0] if node.args else keywords.get("query")
        if query_node is None:
            continue  # e.g. the change feed: no SQL
        if isinstance(query_node, ast.Name) and query_node.id in constants:
            query = constants[query_node.id]
        elif isinstance(query_node, ast.Constant) and isinstance(query_node.value, str):
            query = query_node.value
        else:
            problems.append(
                f"{where}: the query is a {type(query_node).__name__}, not a constant string "
                "(f-string, concatenation, % or .format build SQL from data)"
            )
            continue
        used = set(_PARAM.findall(query))
        passed: set[str] = set()
        params = keywords.get("parameters")
        if params is not None:
            if not isinstance(params, ast.List | ast.Tuple):
                problems.append(f"{where}: parameters= is not a literal list")
                continue
            for item in params.elts:
                entry = dict(
                    zip(getattr(item, "keys", []), getattr(item, "values", []), strict=False)
                )
                names = [
                    v.value
                    for k, v in entry.items()
                    if isinstance(k, ast.Constant)
                    and k.value == "name"
                    and isinstance(v, ast.Constant)
                ]
                if not names:
                    problems.append(f"{where}: a parameter without a constant name")
                passed.update(names)
        if used - passed:
            problems.append(f"{where}: {sorted(used - passed)} used but not passed in parameters=")
    return count, problems


def test_every_cosmos_query_in_handlers_is_parameterized() -> None:
    total = 0
    problems: list[str] = []
    files = sorted((ROOT / "handlers").rglob("*.py"))
    for path in files:
        count, found = query_problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        total += count
        problems += found
    print(f"\ncosmos queries: {total} query call(s) in {len(files)} files under handlers/")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        (
            'c.query_items("SELECT * FROM c WHERE c.a = @a", parameters=[{"name": "@a", "value": x}])',
            True,
        ),
        (
            'Q = "SELECT * FROM c WHERE c.a = @a"\nc.query_items(Q, parameters=[{"name": "@a", "value": x}])',
            True,
        ),
        ('c.query_items(query="SELECT * FROM c")', True),
        ("c.query_items(f\"SELECT * FROM c WHERE c.a = '{x}'\")", False),
        ('c.query_items("SELECT * FROM c WHERE c.a = " + x)', False),
        ('c.query_items("SELECT * FROM c WHERE c.a = %s" % x)', False),
        ('c.query_items("SELECT * FROM c WHERE c.a = {}".format(x))', False),
        ('c.query_items("SELECT * FROM c WHERE c.a = @a")', False),
        ('c.query_items("SELECT * FROM c WHERE c.a = @a", parameters=p)', False),
        (
            'c.query_items("SELECT * FROM c WHERE c.a = @a AND c.b = @b", parameters=[{"name": "@a", "value": 1}])',
            False,
        ),
    ],
)
def test_the_query_check_tells_parameterized_from_built_sql(source: str, ok: bool) -> None:
    count, problems = query_problems(source, "<case>")
    assert count == 1
    assert (not problems) == ok, problems


# --- (d) bounded echoes of a 60 KiB bad body ---------------------------------------------

_DEADLETTER_SCHEMA = Draft202012Validator(
    json.loads((ROOT / "schemas" / "deadletter.schema.json").read_text(encoding="utf-8"))
)
SIZE = 60 * 1024


def _bad_bodies() -> list[tuple[str, str, bytes]]:
    fill = load_event("fill_btcusdt_long")
    mark = load_event("mark_btcusdt")

    def padded(event: dict[str, Any], key: str, char: str = "x") -> bytes:
        base = len(json.dumps(event)) + len(key) + 8
        return json.dumps({**event, key: char * (SIZE - base)}).encode("utf-8")

    rng = random.Random(60)
    return [
        ("trades", "random-bytes", rng.randbytes(SIZE)),
        ("trades", "invalid-utf8", b"{" + b"\xff" * (SIZE - 1)),
        ("trades", "not-json", b"{" + b"x" * (SIZE - 1)),
        ("trades", "unknown-field", padded(fill, "pad")),
        ("trades", "huge-tradeId", padded(fill, "tradeId", "T")),
        ("trades", "huge-side", padded(fill, "side", "B")),
        ("trades", "base64-not-json", base64.b64encode(b"{" + b"y" * (SIZE * 3 // 4 - 2))),
        ("marks", "unknown-field", padded(mark, "pad")),
        ("marks", "huge-type", padded(mark, "type", "M")),
        ("marks", "random-bytes", rng.randbytes(SIZE)),
        (
            "marks",
            "marks-many-bad-entries",
            json.dumps(
                {
                    "type": "MARKS",
                    "schemaVersion": 1,
                    "marks": [{"symbol": "BTCUSDT", "markPrice": "x" * 100, "timestamp": "t"}]
                    * 400,
                }
            ).encode(),
        ),
    ]


@pytest.mark.parametrize(
    ("queue", "name", "raw"), _bad_bodies(), ids=[f"{q}-{n}" for q, n, _ in _bad_bodies()]
)
def test_a_60_kib_bad_body_leaves_bounded_records_alerts_and_deadletters(
    queue: str, name: str, raw: bytes
) -> None:
    assert len(raw) <= 64 * 1024
    deps = make_deps()
    assert isinstance(deps.store, FakeStore)
    assert isinstance(deps.sink, FakeSink)
    outcomes = (
        [process_trade_message(raw, deps)] if queue == "trades" else process_mark_message(raw, deps)
    )
    assert outcomes and all(o.kind in ("REJECTED", "DUPLICATE") for o in outcomes), outcomes
    for o in outcomes:
        if o.kind != "REJECTED":
            continue
        record = deps.store.records[(o.account_id or UNATTRIBUTED, f"rejection:{o.source_id}")]
        assert len(record["bodyExcerpt"]) <= MAX_EXCERPT
        assert len(json.dumps(record)) < MAX_ALERT_JSON + 2 * MAX_EXCERPT * 6
    sizes = [len(a.model_dump_json()) for a in deps.sink.sent]
    assert sizes and max(sizes) < MAX_ALERT_JSON, sizes

    poison_deps = make_deps()
    assert isinstance(poison_deps.store, FakeStore)
    assert isinstance(poison_deps.sink, FakeSink)
    outcome = process_poison(raw, poison_deps, queue)
    assert outcome.kind == "DEADLETTERED"
    (deadletter,) = poison_deps.store.deadletters.values()
    assert not list(_DEADLETTER_SCHEMA.iter_errors(deadletter))
    assert len(deadletter["rawBody"]) <= MAX_RAW_BODY
    assert deadletter["rawBody"] == raw[:MAX_RAW_BODY].decode("utf-8", "replace")
    (alert,) = poison_deps.sink.sent
    assert alert.type == "POISON_MESSAGE"
    assert len(alert.model_dump_json()) < MAX_ALERT_JSON
    print(
        f"\n60 KiB {queue}/{name}: {len(outcomes)} outcome(s), largest alert {max(sizes)} B, "
        f"deadletter rawBody {len(deadletter['rawBody'])} chars / "
        f"{len(deadletter['rawBody'].encode('utf-8'))} B UTF-8, poison alert "
        f"{len(alert.model_dump_json())} B"
    )


def test_bug_poison_alert_echoes_a_huge_symbol() -> None:
    fill = load_event("fill_btcusdt_long")
    raw = json.dumps({**fill, "symbol": "S" * (SIZE - 400)}).encode()
    deps = make_deps()
    assert process_poison(raw, deps, "trades").kind == "DEADLETTERED"
    assert isinstance(deps.sink, FakeSink)
    (alert,) = deps.sink.sent
    assert len(alert.model_dump_json()) < MAX_ALERT_JSON
