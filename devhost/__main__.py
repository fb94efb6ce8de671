"""The ``python -m devhost`` command line: run, services, send, alerts, decisions,
accounts, replay-poison."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The Azure SDKs log every HTTP request at INFO; keep them quiet unless something fails.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        type=Path,
        metavar="FILE",
        help="a local.settings.json-shaped file (default: <app dir>/local.settings.json); "
        "environment variables win over it",
    )
    parser.add_argument(
        "--app-dir",
        type=Path,
        metavar="DIR",
        help="the function app's directory (default: the current directory)",
    )


def _latency_ms(text: str) -> str:
    """argparse type of --cosmos-latency-ms: the text, once it parses as A-B or A."""
    from devhost.services import parse_latency_ms

    try:
        parse_latency_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description="Local queue- and timer-trigger host and helpers for tradeguard.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve the app's queue- and timer-triggered functions")
    _settings_arguments(run)
    run.add_argument(
        "--drain",
        action="store_true",
        help="exit 0 once every trigger queue is empty and nothing is in flight (timers do "
        "not run)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="with --drain: exit 1 if not drained within this time",
    )
    run.add_argument(
        "--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )

    services = commands.add_parser(
        "services", help="local Azurite (blob, queue, table) and Cosmos DB stand-ins"
    )
    actions = services.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start both services (reuses running ones)")
    start.add_argument("--queue-port", type=int, help="Azurite queue port (default 10001)")
    start.add_argument(
        "--blob-port",
        type=int,
        help="Azurite blob port (default 10000 next to queue port 10001, else a free port)",
    )
    start.add_argument(
        "--table-port",
        type=int,
        help="Azurite table port (default 10002 next to queue port 10001, else a free port)",
    )
    start.add_argument("--cosmos-port", type=int, help="Cosmos DB port (default 8081)")
    start.add_argument(
        "--cosmos-latency-ms",
        type=_latency_ms,
        metavar="A-B",
        help="delay every Cosmos request by a random A..B ms (or A), like Azure's 5-10, for "
        "race tests (default: the run dir's last value, else none; 0: none)",
    )
    start.add_argument("--format", choices=("json", "env"), default="json")
    for action in (start, actions.add_parser("stop"), actions.add_parser("status")):
        action.add_argument("--run-dir", type=Path, metavar="DIR", help="default: .run/services")

    send = commands.add_parser("send", help="send each line of a JSONL file as a message")
    send.add_argument("file", type=Path, metavar="FILE.jsonl")
    send.add_argument(
        "--queue",
        metavar="trades|marks|orders|NAME",
        help="default: by the line's type (MARK/MARKS -> MARKS_QUEUE, ORDER/ORDER_DONE/"
        "ACCOUNT_CONTROL -> ORDERS_QUEUE, else TRADES_QUEUE)",
    )
    send.add_argument("--encoding", choices=("base64", "none"), default="base64")
    send.add_argument(
        "--raw",
        action="store_true",
        help="send every line's bytes as they are (blank lines too), JSON or not: for "
        "hostile input (default: each non-blank line must be a JSON object)",
    )
    send.add_argument("--concurrency", type=int, default=8, help="parallel sends (default 8)")
    _settings_arguments(send)

    accounts = commands.add_parser("accounts", help="print the account documents kept in Cosmos DB")
    _settings_arguments(accounts)
    accounts.add_argument("--account", help="only this accountId")
    accounts.add_argument("--json", action="store_true", help="whole documents as JSON")

    replay = commands.add_parser(
        "replay-poison",
        help="send poisoned (<queue>-poison) and dead-lettered bodies back to their queue",
    )
    _settings_arguments(replay)
    replay.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="trades|marks|marks-fanout|orders|NAME",
        help="which source queue (repeatable; default: trades, marks, the marks fan-out and "
        "orders)",
    )

    alerts = commands.add_parser("alerts", help="print (and delete) the messages on ALERTS_QUEUE")
    alerts.add_argument("--peek", action="store_true", help="do not delete (first 32 only)")
    alerts.add_argument("--json", action="store_true", help="each message as one line of JSON")
    _settings_arguments(alerts)

    decisions = commands.add_parser(
        "decisions", help="print (and delete) the messages on ORDER_DECISIONS_QUEUE"
    )
    decisions.add_argument("--peek", action="store_true", help="do not delete (first 32 only)")
    decisions.add_argument("--json", action="store_true", help="each message as one line of JSON")
    _settings_arguments(decisions)
    return parser


def _services(args: argparse.Namespace) -> int:
    from devhost import services

    run_dir = args.run_dir or services.DEFAULT_RUN_DIR
    try:
        if args.action == "start":
            started = services.start(
                run_dir,
                args.queue_port,
                args.cosmos_port,
                args.cosmos_latency_ms,
                blob_port=args.blob_port,
                table_port=args.table_port,
            )
            values = started.settings()
            if args.format == "json":
                print(json.dumps(values, indent=2))
            else:
                for name, value in values.items():
                    print(f"{name}={shlex.quote(value)}")
        elif args.action == "stop":
            services.stop(run_dir)
        else:
            report = services.status(run_dir)
            print(json.dumps(report, indent=2))
            return 0 if all(entry["running"] for entry in report.values()) else 3
    except services.ServiceError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    args = _parser().parse_args(argv)
    _configure_logging(bool(args.verbose))
    if args.command == "run":
        from devhost import host

        return host.run(args.app_dir, args.settings, drain=args.drain, timeout=args.timeout)
    if args.command == "services":
        return _services(args)
    if args.command == "replay-poison":
        from devhost import replay

        return replay.replay_command(
            queues=args.queues, app_dir=args.app_dir, settings_file=args.settings
        )
    if args.command == "accounts":
        from devhost import inspect_state

        return inspect_state.accounts_command(
            account=args.account,
            as_json=args.json,
            app_dir=args.app_dir,
            settings_file=args.settings,
        )
    from devhost import producer

    if args.command == "send":
        return producer.send_command(
            args.file,
            queue=args.queue,
            encoding=args.encoding,
            concurrency=args.concurrency,
            raw=args.raw,
            app_dir=args.app_dir,
            settings_file=args.settings,
        )
    if args.command == "decisions":
        return producer.decisions_command(
            peek=args.peek, as_json=args.json, app_dir=args.app_dir, settings_file=args.settings
        )
    return producer.alerts_command(
        peek=args.peek, as_json=args.json, app_dir=args.app_dir, settings_file=args.settings
    )


if __name__ == "__main__":
    sys.exit(main())
