"""A counting HTTP/1.1 proxy in front of a local service, so that requests are counted
across processes (every devhost the bench starts) by what they are, not by who sends them.

:class:`CountingProxy` listens on a free port of 127.0.0.1 (with TLS when the service
speaks it: the Cosmos server's own self-signed certificate, which the SDK does not verify
on loopback), opens one upstream connection per client connection and relays request by
request, counting each by ``classify(method, path, headers)`` and each answer of 400 or
more by kind and status. It runs its own event loop in a daemon thread.

:func:`cosmos_kind` names a Cosmos REST request the way the SDK's calls are named
(``ledger.read``, ``marks.query``, ``ledger.batch``…); :func:`queue_kind` names an Azure
Queue Storage request (``fanout.receive``, ``alerts.send``, ``marks.properties``…).
The Cosmos server's database-account answer (``GET /``) names its own address as the
account's endpoint, which the SDK would then use directly; the proxy rewrites it to its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bench.harness import REPO, free_port

logger = logging.getLogger("bench.marks")

COSMOS_CERT_DIR = REPO / "node_modules" / "@vercel" / "cosmosdb-server"
_LIMIT = 1 << 20
#: An upstream connection idle this long is replaced before the next request: Node servers
#: (Azurite) close idle keep-alive connections after 5 s, and a request written into one
#: they are closing is lost.
UPSTREAM_IDLE_SECONDS = 2.0
_NO_BODY = {204, 304}
_DOCUMENT_OPS = {"GET": "read", "PUT": "replace", "DELETE": "delete", "PATCH": "patch"}
#: Queue Storage operations on a queue, on its messages and on one message.
_QUEUE_OPS = {"PUT": "create", "DELETE": "delete_queue"}
_MESSAGES_OPS = {"POST": "send", "DELETE": "clear"}
_MESSAGE_OPS = {"DELETE": "delete", "PUT": "update"}

Classify = Callable[[str, str, Mapping[str, str]], str]


# --------------------------------------------------------------------------- kinds


def _true(headers: Mapping[str, str], name: str) -> bool:
    return headers.get(name, "").lower() == "true"


def cosmos_kind(method: str, target: str, headers: Mapping[str, str]) -> str:
    """``<container>.<operation>`` for a document request, ``meta.<what>`` otherwise."""
    parts = [p for p in urlsplit(target).path.split("/") if p]
    if len(parts) >= 5 and parts[0] == "dbs" and parts[2] == "colls" and parts[4] == "docs":
        container = parts[3]
        if len(parts) == 6:
            return f"{container}.{_DOCUMENT_OPS.get(method, method.lower())}"
        if method == "POST":
            if _true(headers, "x-ms-documentdb-isquery") or headers.get(
                "content-type", ""
            ).startswith("application/query+json"):
                return f"{container}.query"
            if _true(headers, "x-ms-documentdb-is-upsert"):
                return f"{container}.upsert"
            if _true(headers, "x-ms-cosmos-is-batch-request"):
                return f"{container}.batch"
            return f"{container}.create"
        return f"{container}.read_feed"
    if not parts:
        return "meta.account"
    if parts[-1] == "pkranges":
        return "meta.pkranges"
    return f"meta.{method.lower()}_{'db' if len(parts) <= 2 else 'collection'}"


def queue_kind(role_of: Callable[[str], str]) -> Classify:
    """A classifier of Azure Queue Storage requests, ``<role>.<operation>``, ``role_of``
    naming what a queue is for (``fanout``, ``alerts``…) from its name."""

    def kind(method: str, target: str, headers: Mapping[str, str]) -> str:
        split = urlsplit(target)
        parts = [p for p in split.path.split("/") if p][1:]  # drop the account name
        query = parse_qs(split.query)
        if not parts:
            return "service.list_queues" if "list" in query.get("comp", []) else "service.other"
        role = role_of(parts[0])
        if len(parts) == 1:
            if "metadata" in query.get("comp", []):
                return f"{role}.{'properties' if method in ('GET', 'HEAD') else 'set_metadata'}"
            return f"{role}.{_QUEUE_OPS.get(method, method)}"
        if len(parts) == 2:  # …/messages
            if method == "GET":
                return f"{role}.peek" if query.get("peekonly") == ["true"] else f"{role}.receive"
            return f"{role}.{_MESSAGES_OPS.get(method, method)}"
        return f"{role}.{_MESSAGE_OPS.get(method, method)}"

    return kind


# --------------------------------------------------------------------------- HTTP


def _headers(head: bytes) -> tuple[str, str, dict[str, str]]:
    """First line's first two words and the headers (lower-case names) of a message head."""
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return first[0], first[1] if len(first) > 1 else "", headers


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body as it is on the wire, up to and including its last empty line."""
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        out += line
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await reader.readuntil(b"\r\n")
                out += trailer
                if trailer == b"\r\n":
                    return bytes(out)
        out += await reader.readexactly(size + 2)


async def _body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _chunked(reader)
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


class CountingProxy:
    """Relays HTTP/1.1 from 127.0.0.1:``port`` to 127.0.0.1:``upstream_port`` and counts
    every request by its kind (``calls``) and every answer ≥ 400 by kind and status
    (``errors``)."""

    def __init__(self, name: str, upstream_port: int, classify: Classify, tls: bool) -> None:
        self.name = name
        self.upstream_port = upstream_port
        self.classify = classify
        self.tls = tls
        self.port = free_port()
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._client_tls: ssl.SSLContext | None = None
        self._server_tls: ssl.SSLContext | None = None
        if tls:
            self._client_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self._client_tls.check_hostname = False
            self._client_tls.verify_mode = ssl.CERT_NONE
            self._server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._server_tls.load_cert_chain(
                Path(COSMOS_CERT_DIR / "cert.pem"), Path(COSMOS_CERT_DIR / "key.pem")
            )

    # -- life

    def start(self) -> CountingProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout=10)
        logger.info("proxy %s: 127.0.0.1:%d -> %d", self.name, self.port, self.upstream_port)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self._server_tls, limit=_LIMIT
        )

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # -- counts

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        """Copies of the request and error counts so far."""
        with self._lock:
            return Counter(self._calls), Counter(self._errors)

    def _count(self, kind: str, status: int) -> None:
        with self._lock:
            self._calls[kind] += 1
            if status >= 400:
                self._errors[f"{kind} {status}"] += 1

    # -- relay

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # asyncio keeps only a weak hold on a connection's task once the client side is
        # lost: without this one, a relay waiting on its upstream can be collected mid-way.
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_r: asyncio.StreamReader | None = None
        upstream_w: asyncio.StreamWriter | None = None
        idle_since = 0.0
        try:
            while True:
                try:
                    head = await client_r.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed its connection between requests
                method, target, headers = _headers(head)
                request = head + await _body(client_r, headers)
                now = asyncio.get_running_loop().time()
                if upstream_w is None or now - idle_since > UPSTREAM_IDLE_SECONDS:
                    if upstream_w is not None:
                        upstream_w.close()
                    upstream_r, upstream_w = await asyncio.open_connection(
                        "127.0.0.1", self.upstream_port, ssl=self._client_tls, limit=_LIMIT
                    )
                assert upstream_r is not None
                upstream_w.write(request)
                await upstream_w.drain()
                answer = await self._answer(upstream_r, method, target)
                idle_since = asyncio.get_running_loop().time()
                client_w.write(answer[0])
                await client_w.drain()
                self._count(self.classify(method, target, headers), answer[1])
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError) as exc:
            logger.debug("proxy %s: connection ended: %r", self.name, exc)
        finally:
            self._tasks.discard(task)
            for writer in (client_w, upstream_w):
                if writer is not None:
                    with contextlib.suppress(Exception):
                        writer.close()

    async def _answer(
        self, reader: asyncio.StreamReader, method: str, target: str
    ) -> tuple[bytes, int]:
        """The upstream's whole answer (1xx interim answers included) and its status."""
        out = bytearray()
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            _, status_text, headers = _headers(head)
            status = int(status_text)
            if status >= 200:
                break
            out += head
        if method == "HEAD" or status in _NO_BODY:
            body = b""
        elif "content-length" in headers or "chunked" in headers.get("transfer-encoding", ""):
            body = await _body(reader, headers)
        else:
            body = await reader.read()  # delimited by the end of the connection
        if self.tls and method == "GET" and urlsplit(target).path in ("", "/"):
            head, body = self._own_endpoint(head, body)
        return bytes(out) + head + body, status

    def _own_endpoint(self, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        """The database-account answer with this proxy as the account's endpoint."""
        new = body.replace(
            f"127.0.0.1:{self.upstream_port}".encode(), f"127.0.0.1:{self.port}".encode()
        )
        if new == body:
            return head, body
        text = head.decode("latin-1")
        lines = [
            f"Content-Length: {len(new)}" if line.lower().startswith("content-length:") else line
            for line in text.split("\r\n")
        ]
        return "\r\n".join(lines).encode("latin-1"), new
