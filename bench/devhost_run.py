"""One ``python -m devhost run`` subprocess of the end-to-end bench: spawned, its log read
line by line (when it listens, invocations, receives, ETag conflicts), its CPU."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import REPO
from handlers.settings import APP_SETTING_PREFIXES

_RECEIVED_RE = re.compile(r"received (\d+) message\(s\)")
#: devhost's one line per message: ``on_order message=<id> dequeueCount=1 Succeeded (12 ms)``.
_INVOCATION_RE = re.compile(r"(\w+) message=\S+ dequeueCount=\d+ (\w+) \(")


@dataclass
class DevhostRun:
    """One ``python -m devhost run`` subprocess, its log read line by line."""

    settings_file: Path
    log_path: Path
    drain: bool = True
    verbose: bool = True
    spawned: float = 0.0
    listening: float | None = None
    exited: float | None = None
    returncode: int | None = None
    cpu_seconds: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    #: ``<function> <outcome>`` → messages, from devhost's one line per message.
    invocations: Counter[str] = field(default_factory=Counter)
    listening_event: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen[bytes] | None = None
    _reader: threading.Thread | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(APP_SETTING_PREFIXES)}
        env["PYTHONWARNINGS"] = "ignore"
        command = [sys.executable, "-m", "devhost"]
        command += ["--verbose"] if self.verbose else []
        command += ["run", "--settings", str(self.settings_file)]
        command += ["--drain", "--timeout", "900"] if self.drain else []
        self.spawned = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        with self.log_path.open("wb") as log:
            for raw in self.process.stdout:
                now = time.monotonic()
                log.write(raw)
                line = raw.decode("utf-8", "replace")
                if self.listening is None and "listening:" in line:
                    self.listening = now
                    self.listening_event.set()
                if "on_trade message=" in line:
                    if "Succeeded" in line and "devhost" in line:
                        self.counts["succeeded"] += 1
                    elif "Failed" in line or "Poisoned" in line:
                        self.counts["failed"] += 1
                if "Connection pool is full" in line:
                    self.counts["connections_discarded"] += 1
                if "etag conflict" in line:
                    self.counts["etag_conflicts"] += 1
                invoked = _INVOCATION_RE.search(line)
                if invoked:
                    self.invocations[f"{invoked.group(1)} {invoked.group(2)}"] += 1
                match = _RECEIVED_RE.search(line)
                if match:
                    self.counts["receives_with_messages"] += 1
                    self.counts["received"] += int(match.group(1))

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit (polling every 5 ms) and keep this process's own CPU time
        (``os.wait4``: exact even when several devhosts run at once).

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        assert self.process is not None
        if self.process.returncode is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
                if pid:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(self.process.args, timeout or 0)
                time.sleep(0.005)
            self.exited = time.monotonic()
            self.process.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
        self.returncode = self.process.returncode
        if self._reader is not None:
            self._reader.join(timeout=30)
        return self.returncode

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.wait(timeout=30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
