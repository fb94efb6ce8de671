"""Start and stop the local stand-ins: Azurite (blob, queue and table) and
@vercel/cosmosdb-server.

Each service runs in its own process group (``start_new_session``), logs to
``<run_dir>/<name>.log``, and records its pid in ``<run_dir>/<name>.pid`` and its ports in
``<run_dir>/ports.json`` (``azurite`` is the queue port, ``azurite-blob`` and
``azurite-table`` the other two).

Azurite is one process serving all three: the queue service for the app, the blob service
for ``func start`` (timer triggers keep their leases and schedule status in blobs), and the
table service for completeness. Its default ports are the ones ``UseDevelopmentStorage=true``
means (10000, 10001, 10002 on 127.0.0.1); with another queue port, blob and table take free
ports unless they are given. Everything is idempotent: starting a running service reuses it,
stopping a stopped one does nothing. :func:`stop_one` and :func:`start_one` kill and restart a
single service (on the port it had) for outage tests.

The Cosmos server can answer with Azure-like latency (``cosmos_latency_ms="5-10"``: every
request waits a uniformly random 5..10 ms, see ``localazure/cosmos.js``), for race tests
whose windows are that wide in Azure. The value is kept in ``<run_dir>/cosmos.latency`` and,
like the port, reused by a later start in the same run directory; ``"0"`` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_DEFAULT_PORTS",
    "DEFAULT_RUN_DIR",
    "REPO_ROOT",
    "WELL_KNOWN_COSMOS_KEY",
    "LocalServices",
    "ServiceError",
    "ServiceName",
    "local_services",
    "parse_latency_ms",
    "process_alive",
    "start",
    "start_one",
    "status",
    "stop",
    "stop_one",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = REPO_ROOT / ".run" / "services"
WELL_KNOWN_COSMOS_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
#: Azurite's well-known account key for ``devstoreaccount1``.
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
ServiceName = Literal["azurite", "cosmos"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("azurite", "cosmos")
DEFAULT_PORTS: dict[str, int] = {"azurite": 10001, "cosmos": 8081}
#: Azurite's default ports: what ``UseDevelopmentStorage=true`` means.
AZURITE_DEFAULT_PORTS: dict[str, int] = {"blob": 10000, "queue": 10001, "table": 10002}
#: ports.json keys of Azurite's blob and table ports (its queue port is under "azurite").
_AZURITE_PORT_KEYS = {"blob": "azurite-blob", "queue": "azurite", "table": "azurite-table"}
AZURITE_MAIN = REPO_ROOT / "node_modules" / "azurite" / "dist" / "src" / "azurite.js"
COSMOS_LAUNCHER = REPO_ROOT / "localazure" / "cosmos.js"
_COSMOS_PACKAGE = REPO_ROOT / "node_modules" / "@vercel" / "cosmosdb-server" / "package.json"
_PROCESS_MARKERS = {"azurite": "azurite", "cosmos": "cosmos.js"}
#: The launcher's latency variable: ``"A-B"`` or ``"A"`` whole milliseconds per request.
COSMOS_LATENCY_ENV = "TRADEGUARD_COSMOS_LATENCY_MS"
MAX_LATENCY_MS = 60000
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

#: Processes this interpreter started, so that they can be reaped (a zombie still answers
#: ``kill(pid, 0)``).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ServiceError(Exception):
    """A service could not be installed, started or stopped."""


@dataclass(frozen=True)
class LocalServices:
    """Where the running local services listen (a blob or table port of 0: unknown)."""

    queue_port: int
    cosmos_port: int
    run_dir: Path
    blob_port: int = 0
    table_port: int = 0

    @property
    def storage_connection_string(self) -> str:
        """The Azurite connection string: its blob, queue and table endpoints."""
        endpoints = "".join(
            f"{kind}Endpoint=http://127.0.0.1:{port}/devstoreaccount1;"
            for kind, port in (
                ("Blob", self.blob_port),
                ("Queue", self.queue_port),
                ("Table", self.table_port),
            )
            if port
        )
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_ACCOUNT_KEY};{endpoints}"
        )

    @property
    def cosmos_endpoint(self) -> str:
        """The Cosmos DB stand-in's endpoint (HTTPS, self-signed certificate)."""
        return f"https://127.0.0.1:{self.cosmos_port}/"

    def settings(self) -> dict[str, str]:
        """The app settings that point the app at these services."""
        return {
            "AzureWebJobsStorage": self.storage_connection_string,
            "COSMOS_ENDPOINT": self.cosmos_endpoint,
            "COSMOS_KEY": WELL_KNOWN_COSMOS_KEY,
        }


def parse_latency_ms(text: str) -> tuple[int, int]:
    """``(A, B)`` of a latency ``"A-B"`` or ``"A"`` (whole milliseconds, 0 <= A <= B <= 60000).

    Raises:
        ValueError: any other text; the message says what is expected.
    """
    low_text, dash, high_text = text.strip().partition("-")
    if not dash:
        high_text = low_text
    if not (
        low_text.isdigit() and high_text.isdigit() and low_text.isascii() and high_text.isascii()
    ):
        raise ValueError(
            f"{text!r} is not a latency: expected A-B or A, whole milliseconds (e.g. 5-10)"
        )
    low, high = int(low_text), int(high_text)
    if low > high or high > MAX_LATENCY_MS:
        raise ValueError(
            f"{text!r} is not a latency: expected 0 <= A <= B <= {MAX_LATENCY_MS} milliseconds"
        )
    return low, high


def _latency_text(value: str | None) -> str | None:
    """The canonical form of a latency (``"5-10"``), or None for none (unset or 0)."""
    if value is None:
        return None
    low, high = parse_latency_ms(value)
    if high == 0:
        return None
    return f"{low}-{high}" if low != high else str(low)


def _check_name(name: str) -> None:
    if name not in SERVICE_NAMES:
        raise ServiceError(f"unknown service {name!r} (expected one of {', '.join(SERVICE_NAMES)})")


def _pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def _log_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.log"


def _ports_file(run_dir: Path) -> Path:
    return run_dir / "ports.json"


def _latency_file(run_dir: Path) -> Path:
    return run_dir / "cosmos.latency"


def _read_latency(run_dir: Path) -> str | None:
    """The latency the Cosmos server of ``run_dir`` was last started with (None: none)."""
    try:
        return _latency_text(_latency_file(run_dir).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _read_ports(run_dir: Path) -> dict[str, int]:
    try:
        data = json.loads(_ports_file(run_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return (
        {k: int(v) for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}
    )


def _write_ports(run_dir: Path, entries: dict[str, int]) -> None:
    ports = _read_ports(run_dir)
    ports.update(entries)
    _ports_file(run_dir).write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")


def _read_pid(run_dir: Path, name: str) -> int | None:
    try:
        return int(_pid_file(run_dir, name).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, or a child this process reaped, does not)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    return True


def _is_ours(pid: int, name: str) -> bool:
    """Whether ``pid`` still runs the service (and is not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return True  # no /proc: trust the pid file
    return "node" in cmdline and _PROCESS_MARKERS[name] in cmdline


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.25):
            return True
    except OSError:
        return False


def _log_tail(run_dir: Path, name: str, lines: int = 20) -> str:
    try:
        text = _log_file(run_dir, name).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _service_ports(name: str, run_dir: Path) -> dict[str, int] | None:
    """The ports recorded for a service: Azurite's by kind (blob, queue, table), the Cosmos
    server's as ``{"cosmos": port}``; None when one is missing."""
    recorded = _read_ports(run_dir)
    keys = _AZURITE_PORT_KEYS if name == "azurite" else {"cosmos": "cosmos"}
    ports = {kind: recorded.get(key) for kind, key in keys.items()}
    if any(port is None for port in ports.values()):
        return None
    return {kind: int(port) for kind, port in ports.items() if port is not None}


def _running(name: str, run_dir: Path) -> tuple[int, int] | None:
    """``(pid, port)`` of the service when its process is alive and all its ports accept
    (Azurite's port is its queue port)."""
    pid = _read_pid(run_dir, name)
    ports = _service_ports(name, run_dir)
    if pid is None or ports is None:
        return None
    if process_alive(pid) and _is_ours(pid, name) and all(_port_open(p) for p in ports.values()):
        return pid, ports["queue" if name == "azurite" else "cosmos"]
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _azurite_ports(
    run_dir: Path, queue: int, blob: int | None, table: int | None
) -> dict[str, int]:
    """Azurite's ports: the ones given, else the recorded ones, else 10000 and 10002 next
    to queue port 10001, else free ports."""
    recorded = _read_ports(run_dir)
    chosen = {"queue": queue}
    for kind, given in (("blob", blob), ("table", table)):
        port = given or recorded.get(_AZURITE_PORT_KEYS[kind])
        if not port:
            default = AZURITE_DEFAULT_PORTS[kind]
            port = default if queue == AZURITE_DEFAULT_PORTS["queue"] else _free_port()
        chosen[kind] = port
    return chosen


def _ensure_node_modules() -> None:
    """Install the pinned npm packages when node_modules lacks them.

    Raises:
        ServiceError: node or npm is missing, or the install fails.
    """
    if shutil.which("node") is None:
        raise ServiceError("node is not installed (Node.js 20 or later is needed)")
    if AZURITE_MAIN.is_file() and _COSMOS_PACKAGE.is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ServiceError("node_modules is missing and npm is not installed")
    verb = "ci" if (REPO_ROOT / "package-lock.json").is_file() else "install"
    command = [npm, verb, "--no-audit", "--no-fund"]
    logger.info("installing the local services: %s", " ".join(command[1:]))
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0 or not AZURITE_MAIN.is_file():
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise ServiceError(f"npm {verb} failed (exit {result.returncode}):\n{tail}")


def _command(name: str, ports: dict[str, int]) -> list[str]:
    if name == "azurite":
        return [
            "node",
            str(AZURITE_MAIN),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(ports["blob"]),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(ports["queue"]),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(ports["table"]),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--silent",
            "--disableTelemetry",
        ]
    return ["node", str(COSMOS_LAUNCHER), str(ports["cosmos"])]


def _environment(latency: str | None) -> dict[str, str]:
    """This process's environment, with the launcher's latency variable set or removed."""
    env = dict(os.environ)
    env.pop(COSMOS_LATENCY_ENV, None)
    if latency is not None:
        env[COSMOS_LATENCY_ENV] = latency
    return env


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return not process_alive(pid)


def start_one(
    name: ServiceName,
    run_dir: Path = DEFAULT_RUN_DIR,
    port: int | None = None,
    timeout: float = START_TIMEOUT,
    cosmos_latency_ms: str | None = None,
    *,
    blob_port: int | None = None,
    table_port: int | None = None,
) -> int:
    """Start one service (``"azurite"`` or ``"cosmos"``) unless it already runs; return its port
    (Azurite's queue port).

    ``port`` defaults to the port the service last had in ``run_dir``, else 10001 (Azurite's
    queue service) or 8081 (Cosmos). Azurite's ``blob_port`` and ``table_port`` default to
    the ones it last had, else 10000 and 10002 when the queue port is 10001, else free
    ports. A running service on other ports than the ones given is restarted there.
    ``cosmos_latency_ms`` (``"A-B"`` or ``"A"``, Cosmos only) delays every request by a
    random A..B ms; it defaults to the latency the server last had in ``run_dir``, else none
    (``"0"``: none). A running server with another latency is restarted with it.

    Raises:
        ServiceError: unknown name, a malformed latency or one given for Azurite, blob or
            table ports given for Cosmos, node/npm missing, a port is taken by another
            process, or the service did not accept connections within ``timeout`` seconds
            (the message carries the end of its log).
    """
    _check_name(name)
    if cosmos_latency_ms is not None and name != "cosmos":
        raise ServiceError(f"cosmos_latency_ms applies to the Cosmos server only, not {name}")
    if (blob_port or table_port) and name != "azurite":
        raise ServiceError(f"blob and table ports apply to Azurite only, not {name}")
    try:
        latency = (
            _latency_text(cosmos_latency_ms)
            if cosmos_latency_ms is not None
            else _read_latency(run_dir)
            if name == "cosmos"
            else None
        )
    except ValueError as exc:
        raise ServiceError(f"cosmos_latency_ms: {exc}") from None
    running = _running(name, run_dir)
    if running is not None:
        pid, running_port = running
        same_latency = name != "cosmos" or latency == _read_latency(run_dir)
        recorded = _service_ports(name, run_dir) or {}
        same_ports = (
            (port is None or port == running_port)
            and (blob_port is None or blob_port == recorded.get("blob"))
            and (table_port is None or table_port == recorded.get("table"))
        )
        if same_ports and same_latency:
            logger.info("%s already running (pid %d, port %d)", name, pid, running_port)
            return running_port
        port = port or running_port
        stop_one(name, run_dir)
    else:
        old = _read_pid(run_dir, name)
        if old is not None and process_alive(old) and _is_ours(old, name):
            # Half up, or started by an older devhost with fewer ports: start it afresh.
            stop_one(name, run_dir)
    chosen = port or _read_ports(run_dir).get(name) or DEFAULT_PORTS[name]
    ports = (
        _azurite_ports(run_dir, chosen, blob_port, table_port)
        if name == "azurite"
        else {"cosmos": chosen}
    )
    _ensure_node_modules()
    for taken in ports.values():
        if _port_open(taken):
            raise ServiceError(f"cannot start {name}: port {taken} is already in use")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = _log_file(run_dir, name)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            _command(name, ports),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_environment(latency),
        )
    _CHILDREN[process.pid] = process
    _pid_file(run_dir, name).write_text(f"{process.pid}\n", encoding="utf-8")
    keys = _AZURITE_PORT_KEYS if name == "azurite" else {"cosmos": "cosmos"}
    _write_ports(run_dir, {keys[kind]: value for kind, value in ports.items()})
    if name == "cosmos":
        if latency is None:
            _latency_file(run_dir).unlink(missing_ok=True)
        else:
            _latency_file(run_dir).write_text(f"{latency}\n", encoding="utf-8")
    deadline = time.monotonic() + timeout
    shown = ", ".join(str(value) for value in sorted(ports.values()))
    while not all(_port_open(value) for value in ports.values()):
        if process.poll() is not None:
            _pid_file(run_dir, name).unlink(missing_ok=True)
            raise ServiceError(
                f"{name} exited with code {process.returncode} before listening on port(s) "
                f"{shown}; {log_path}:\n{_log_tail(run_dir, name)}"
            )
        if time.monotonic() > deadline:
            stop_one(name, run_dir)
            raise ServiceError(
                f"{name} did not listen on port(s) {shown} within {timeout:g} s; "
                f"{log_path}:\n{_log_tail(run_dir, name)}"
            )
        time.sleep(0.05)
    described = (
        f"blob {ports['blob']}, queue {ports['queue']}, table {ports['table']}"
        if name == "azurite"
        else f"port {chosen}"
    )
    logger.info(
        "started %s (pid %d, %s%s)",
        name,
        process.pid,
        described,
        f", latency {latency} ms" if latency is not None else "",
    )
    return chosen


def stop_one(
    name: ServiceName, run_dir: Path = DEFAULT_RUN_DIR, timeout: float = STOP_TIMEOUT
) -> None:
    """Stop one service by killing its process group (SIGTERM, then SIGKILL after
    ``timeout`` seconds) and remove its pid file. A stopped service is left alone.

    Raises:
        ServiceError: unknown name, or the process survived SIGKILL.
    """
    _check_name(name)
    pid = _read_pid(run_dir, name)
    if pid is None:
        return
    if process_alive(pid) and _is_ours(pid, name):
        _kill_group(pid, signal.SIGTERM)
        if not _wait_dead(pid, timeout):
            logger.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", name, pid)
            _kill_group(pid, signal.SIGKILL)
            if not _wait_dead(pid, timeout):
                raise ServiceError(f"{name} (pid {pid}) did not stop")
        logger.info("stopped %s (pid %d)", name, pid)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=timeout)
    _pid_file(run_dir, name).unlink(missing_ok=True)


def start(
    run_dir: Path = DEFAULT_RUN_DIR,
    queue_port: int | None = None,
    cosmos_port: int | None = None,
    cosmos_latency_ms: str | None = None,
    *,
    blob_port: int | None = None,
    table_port: int | None = None,
) -> LocalServices:
    """Start Azurite (blob, queue, table) and the Cosmos DB stand-in (reusing running ones).

    Ports default to the ones recorded in ``run_dir``, else 10000, 10001, 10002 and 8081
    (blob and table take free ports when the queue port is not 10001);
    ``cosmos_latency_ms`` (``"A-B"`` ms per Cosmos request) as in :func:`start_one`.

    Raises:
        ServiceError: a service could not be started (see :func:`start_one`).
    """
    if cosmos_latency_ms is not None:
        try:
            parse_latency_ms(cosmos_latency_ms)
        except ValueError as exc:  # before Azurite starts
            raise ServiceError(f"cosmos_latency_ms: {exc}") from None
    queue = start_one("azurite", run_dir, queue_port, blob_port=blob_port, table_port=table_port)
    cosmos = start_one("cosmos", run_dir, cosmos_port, cosmos_latency_ms=cosmos_latency_ms)
    azurite = _service_ports("azurite", run_dir) or {}
    return LocalServices(
        queue_port=queue,
        cosmos_port=cosmos,
        run_dir=run_dir,
        blob_port=azurite.get("blob", 0),
        table_port=azurite.get("table", 0),
    )


def stop(run_dir: Path = DEFAULT_RUN_DIR) -> None:
    """Stop both services; stopping stopped services is fine.

    Raises:
        ServiceError: a process survived SIGKILL.
    """
    for name in reversed(SERVICE_NAMES):
        stop_one(name, run_dir)


def status(run_dir: Path = DEFAULT_RUN_DIR) -> dict[str, dict[str, object]]:
    """Each service's state: running, pid, port and log path; Azurite's also ``ports``
    (blob, queue, table; ``port`` is the queue port), the Cosmos server's its
    ``latency_ms`` (``"A-B"``, or None without one)."""
    report: dict[str, dict[str, object]] = {}
    ports = _read_ports(run_dir)
    for name in SERVICE_NAMES:
        running = _running(name, run_dir)
        report[name] = {
            "running": running is not None,
            "pid": running[0] if running else None,
            "port": running[1] if running else ports.get(name),
            "log": str(_log_file(run_dir, name)),
        }
    report["azurite"]["ports"] = {
        kind: ports.get(key) for kind, key in sorted(_AZURITE_PORT_KEYS.items())
    }
    report["cosmos"]["latency_ms"] = _read_latency(run_dir)
    return report


def local_services(run_dir: Path = DEFAULT_RUN_DIR) -> LocalServices:
    """Where the services of ``run_dir`` listen, as recorded (0 for a port not recorded)."""
    ports = _read_ports(run_dir)
    return LocalServices(
        queue_port=ports.get("azurite", 0),
        cosmos_port=ports.get("cosmos", 0),
        run_dir=run_dir,
        blob_port=ports.get(_AZURITE_PORT_KEYS["blob"], 0),
        table_port=ports.get(_AZURITE_PORT_KEYS["table"], 0),
    )
