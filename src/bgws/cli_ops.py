"""The operator's commands of ``bgws``: ``status``, ``reconnect``, ``outbox``; run's log options.

::

    bgws status [--json] [--watch [--interval S] [--count N]]
    bgws reconnect [--service NAME]
    bgws outbox list [--limit N] [--json] | show REF [--json] | export [--output FILE]
    bgws outbox purge [REF ...] [--yes]
    bgws run FILE [--log-format text|json] [--log-file PATH [--log-max-bytes N]
                  [--log-backups N]] [--metrics HOST:PORT]

Each ``add_*`` declares a command's parser (it takes the daemon options' parser from
:mod:`bgws.cli`), each command is a function ``(args) -> int``. A usage problem raises
:class:`~bgws.local.ControlError` with ``usage=True`` (exit code 2).
:func:`closed_pipe` ends a command quietly when its reader went away (``bgws status | true``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from .local import ControlError, SyncLocalClient, connect_local_sync
from .logsetup import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LogOptions
from .metrics import parse_address

__all__ = [
    "add_outbox",
    "add_reconnect",
    "add_run_options",
    "add_status",
    "closed_pipe",
    "format_health",
    "run_options",
]

_Options = Callable[[], argparse.ArgumentParser]
_CLEAR = "\x1b[H\x1b[2J"


def _connect(args: argparse.Namespace) -> SyncLocalClient:
    return connect_local_sync(args.socket)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def closed_pipe() -> None:
    """The reader of stdout went away: point stdout at /dev/null so exiting says nothing.

    Python flushes stdout at exit; into a closed pipe that prints a second ``BrokenPipeError``
    and sets the exit code 120. Only the real stdout is redirected (not a test's capture).
    """
    stdout = sys.__stdout__
    if stdout is None or sys.stdout is not stdout:
        return
    try:
        fd = stdout.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


# -- status -------------------------------------------------------------------------------------


def add_status(options: _Options, commands: Any) -> None:
    """Declare ``bgws status``."""
    parser = commands.add_parser(
        "status",
        parents=[options()],
        help="show the daemon's services",
        description=(
            "Show each service of the running daemon: its state; online or offline since when; "
            "while backing off, when the next attempt starts; failed attempts in this outage "
            "and reconnections in total; the last error and its time; the outbox depth and "
            "the age of its oldest message; messages in flight; the last message received; "
            "and what plugins (a NATS bridge: its lag) report."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the full status as JSON")
    parser.add_argument(
        "--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="--watch: seconds between draws"
    )
    parser.add_argument("--count", type=int, metavar="N", help="--watch: stop after N draws")
    parser.set_defaults(run=status)


def status(args: argparse.Namespace) -> int:
    """``bgws status``: once, or with ``--watch`` until Ctrl-C (exit 0) or ``--count``."""
    if args.interval <= 0 or (args.count is not None and args.count < 1):
        raise ControlError("--interval must be positive and --count at least 1", usage=True)
    with _connect(args) as client:
        if not args.watch:
            data = client.status(args.service)
            print(json.dumps(data, indent=2) if args.json else format_health(data))
            return 0
        clear = sys.stdout.isatty() and not args.json
        drawn = 0
        try:
            while args.count is None or drawn < args.count:
                if drawn:
                    time.sleep(args.interval)
                _show(client.status(args.service), args.json, clear=clear)
                drawn += 1
        except KeyboardInterrupt:  # Ctrl-C is how a watch ends
            print(file=sys.stdout, flush=True)
    return 0


def _show(data: dict[str, Any], as_json: bool, *, clear: bool) -> None:
    """One draw of a watch: a JSON line, or the text (the screen cleared first on a tty)."""
    if as_json:
        print(json.dumps(data), flush=True)
    else:
        print((_CLEAR if clear else "") + format_health(data) + "\n", flush=True)


def format_health(data: dict[str, Any], now: float | None = None) -> str:
    """A ``status`` result for people: one block per service that explains its state."""
    now = time.time() if now is None else now
    blocks: list[str] = []
    for name, status in data["services"].items():
        stats = status.get("stats", {})
        rows: list[tuple[str, str]] = [("state", status["state"]), ("url", status["url"])]
        if status.get("online_since") is not None:
            rows.append(("online since", _when(status["online_since"], now)))
        if status.get("offline_since") is not None:
            rows.append(("offline since", _when(status["offline_since"], now)))
        if status.get("next_retry_at") is not None:
            rows.append(
                (
                    "next retry",
                    f"{_clock(status['next_retry_at'])} (in {_ago(status['next_retry_in'])})",
                )
            )
        if status.get("attempts"):
            rows.append(("attempts", f"{status['attempts']} failed in this outage"))
        rows.append(("reconnections", str(status.get("reconnections", stats.get("reconnects")))))
        outbox = status.get("outbox") or {}
        depth = outbox.get("depth", stats.get("queued", 0))
        oldest = outbox.get("oldest_age")
        rows.append(("outbox", f"{depth}" + (f" (oldest {_ago(oldest)} old)" if oldest else "")))
        rows.append(("in flight", str(status.get("in_flight", stats.get("in_flight", 0)))))
        received = status.get("last_received_at")
        rows.append(("last received", _when(received, now) if received else "never"))
        rows.append(("sent/received", f"{stats.get('sent', 0)}/{stats.get('received', 0)}"))
        rows.append(("dropped", str(stats.get("dropped", 0) + stats.get("expired", 0))))
        rows.extend(_error_rows(status, now))
        for plugin, section in (status.get("plugins") or {}).items():
            shown = ", ".join(f"{k}={_value(v)}" for k, v in section.items())
            rows.append((f"plugin {plugin}", shown or "-"))
        width = max(len(key) for key, _ in rows)
        lines = [f"service {name}"] + [f"  {key.ljust(width)}  {value}" for key, value in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no service"


def _error_rows(status: dict[str, Any], now: float) -> list[tuple[str, str]]:
    if status.get("error"):
        return [("start error", status["error"])]
    error = status.get("last_error")
    if not error:
        return [("last error", "-")]
    at = error.get("at")
    when = f" (at {_clock(at)}, {_ago(max(now - at, 0.0))} ago)" if at else ""
    key = "last error (before recovery)" if error.get("before_recovery") else "last error"
    return [(key, f"{error['error']}{when}")]


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _clock(at: float) -> str:
    moment = datetime.fromtimestamp(at).astimezone()
    today = datetime.now().astimezone().date()
    return moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M:%S")


def _when(at: float, now: float) -> str:
    return f"{_clock(at)} ({_ago(max(now - at, 0.0))} ago)"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# -- reconnect ----------------------------------------------------------------------------------


def add_reconnect(options: _Options, commands: Any) -> None:
    """Declare ``bgws reconnect``."""
    parser = commands.add_parser(
        "reconnect",
        parents=[options()],
        help="skip the backoff wait: connect now",
        description=(
            "Ask the daemon's services (or --service NAME) that are backing off to try again "
            "now instead of waiting out the backoff delay; a failed service starts connecting "
            "again. Connected services are left as they are."
        ),
    )
    parser.set_defaults(run=reconnect)


def reconnect(args: argparse.Namespace) -> int:
    """``bgws reconnect``: one line per service on what it did."""
    with _connect(args) as client:
        result = client.call("reconnect", service=args.service)
    for name, done in result["services"].items():
        if done["reconnecting"]:
            print(f"{name}: connecting now")
        else:
            print(f"{name}: {done['state']}, no backoff wait to skip")
    return 0


# -- outbox -------------------------------------------------------------------------------------


def add_outbox(options: _Options, commands: Any) -> None:
    """Declare ``bgws outbox list|show|purge|export``."""
    parser = commands.add_parser(
        "outbox",
        help="see, export or purge the undelivered messages",
        description=(
            "The messages a service accepted and has not delivered yet (queued, or sent and "
            "waiting for their acknowledgement), oldest first; with the SQLite store, what is "
            "kept on disk. A purge deletes them for good and asks first (or --yes)."
        ),
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[options()], help="list them (no payloads)")
    listing.add_argument("--limit", type=int, metavar="N", help="only the N oldest")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=outbox_list)
    show = actions.add_parser("show", parents=[options()], help="one message, with its payload")
    show.add_argument("ref", metavar="REF", help="its seq (see list) or its message id")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.set_defaults(run=outbox_show)
    export = actions.add_parser(
        "export", parents=[options()], help="every message with its payload, as JSON lines"
    )
    export.add_argument("--output", "-o", metavar="FILE", help="write there (default: stdout)")
    export.set_defaults(run=outbox_export)
    purge = actions.add_parser("purge", parents=[options()], help="delete them for good")
    purge.add_argument("refs", nargs="*", metavar="REF", help="only these (seq or id)")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask")
    purge.set_defaults(run=outbox_purge)


def outbox_list(args: argparse.Namespace) -> int:
    """``bgws outbox list``."""
    if args.limit is not None and args.limit < 0:
        raise ControlError("--limit must not be negative", usage=True)
    with _connect(args) as client:
        result = client.call("outbox", service=args.service, action="list", limit=args.limit)
    items = result["messages"]
    if args.json:
        for item in items:
            print(json.dumps(item), flush=False)
        return 0
    print(f"{result['service']}: {result['depth']} undelivered message(s)")
    if items:
        rows = [["seq", "id", "prio", "bytes", "format", "state", "tries", "age"]]
        for item in items:
            state = "in flight" if item["in_flight"] else "queued"
            rows.append(
                [str(item["seq"]), "-" if item["id"] is None else str(item["id"]),
                 str(item["priority"]), str(item["size"]), item["format"], state,
                 str(item["attempts"]), _ago(item["age"])]
            )  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def outbox_show(args: argparse.Namespace) -> int:
    """``bgws outbox show REF``."""
    ref: int | str = int(args.ref) if args.ref.isdigit() else args.ref
    with _connect(args) as client:
        result = client.call("outbox", service=args.service, action="show", ref=ref)
    item = result["message"]
    if args.json:
        print(json.dumps(item, indent=2))
        return 0
    for key in ("seq", "id", "priority", "size", "format", "in_flight", "attempts", "durable"):
        print(f"{key}: {item[key]}")
    print(f"accepted: {_clock(item['accepted_at'])} ({_ago(item['age'])} ago)")
    if item["expires_at"] is not None:
        print(f"expires: {_clock(item['expires_at'])}")
    print(("data (base64): " if item["format"] == "binary" else "data: ") + str(item["data"]))
    return 0


def outbox_export(args: argparse.Namespace) -> int:
    """``bgws outbox export``: JSON lines to stdout or ``--output``."""
    with _connect(args) as client:
        result = client.call("outbox", service=args.service, action="export")
    lines = [json.dumps(item, ensure_ascii=False) + "\n" for item in result["messages"]]
    if args.output is None:
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    else:
        Path(args.output).write_text("".join(lines), encoding="utf-8")
        _progress(f"{len(lines)} message(s) of {result['service']} written to {args.output}")
    return 0


def outbox_purge(args: argparse.Namespace) -> int:
    """``bgws outbox purge``: asks first unless ``--yes``."""
    refs = [int(r) if r.isdigit() else r for r in args.refs] or None
    with _connect(args) as client:
        if not args.yes:
            listing = client.call("outbox", service=args.service, action="list", limit=0)
            what = f"{len(refs)} message(s)" if refs else f"all {listing['depth']} message(s)"
            if not sys.stdin.isatty():
                raise ControlError(
                    f"not purging {what} of {listing['service']} without confirmation: pass --yes",
                    usage=True,
                )
            answer = input(f"purge {what} of {listing['service']} for good? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                _progress("nothing purged")
                return 1
        result = client.call(
            "outbox", service=args.service, action="purge", refs=refs, confirm=True
        )
    print(f"{result['service']}: {result['purged']} message(s) purged, {result['depth']} left")
    return 0


# -- run's options ------------------------------------------------------------------------------


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``bgws run``'s logging and metrics options."""
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="text or JSON lines"
    )
    parser.add_argument("--log-file", metavar="PATH", help="log to this file (rotated by size)")
    parser.add_argument(
        "--log-max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"rotate the log file at this size (default {DEFAULT_MAX_BYTES})",
    )
    parser.add_argument(
        "--log-backups",
        type=int,
        default=DEFAULT_BACKUPS,
        metavar="N",
        help=f"rotated log files kept (default {DEFAULT_BACKUPS})",
    )
    parser.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve Prometheus metrics at /metrics there"
    )


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`bgws.daemon.run_service_file` from run's options.

    Raises:
        ConfigError: a wrong log option or metrics address.
    """
    log = LogOptions(
        format=args.log_format,
        file=None if args.log_file is None else Path(args.log_file),
        max_bytes=args.log_max_bytes,
        backups=args.log_backups,
    )
    metrics = None if args.metrics is None else parse_address(args.metrics)
    return {"log": log, "metrics": metrics}
