"""The ``bgws`` command line.

::

    bgws [--verbose] run FILE [--check]       run the services of a service file as a daemon
    bgws [--verbose] status [--json] [--watch]   the daemon's services: why, since when, next
    bgws [--verbose] reconnect                skip the backoff wait (bgws.cli_ops)
    bgws [--verbose] outbox list|show|purge|export   the undelivered messages
    bgws [--verbose] send [MESSAGE] [--text]  send through the daemon (MESSAGE or stdin)
    bgws [--verbose] tail [--type T] [--json] [--count N]   follow incoming messages
    bgws [--verbose] stop [--timeout S]       stop the daemon gracefully
    bgws [--verbose] install FILE | uninstall start the daemon at login or boot (bgws.install)
    bgws [--verbose] demo                     a live tour: drops, backoff, queueing, dead links
    bgws [--verbose] profiles [NAME ...] [--json]   the presets' option values
    bgws [--verbose] version                  the installed version

The daemon commands take ``--socket PATH`` (default ``$BGWS_SOCKET``, else ``bgws.sock`` in
the user's runtime directory) and ``--service NAME``. ``docs/daemon.md`` describes them.

Exit codes: 0 success, 1 failure, 2 usage or configuration error, 130 interrupted.

Each command is a pair of functions: ``_add_<name>(commands)`` declares its parser and sets
``run=`` to ``_<name>(args) -> int``; :func:`build_parser` calls the ``_add_*`` functions in
order. A new command adds one such pair and one line to :data:`_COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import Any

import bgws
from bgws import cli_ops, profiles
from bgws.config import Config
from bgws.daemon import format_event
from bgws.errors import ConfigError
from bgws.local import ControlError, SyncLocalClient, connect_local_sync

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_Commands = Any  # argparse's private _SubParsersAction[ArgumentParser]


class UsageError(Exception):
    """A wrong argument that argparse cannot see (bad JSON, say): exit code 2."""


# -- the daemon's commands ----------------------------------------------------------------------


def _daemon_options(*, several: bool = False) -> argparse.ArgumentParser:
    """``--socket`` and ``--service``, shared by the daemon's commands."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--socket",
        metavar="PATH",
        help="the control socket (default: $BGWS_SOCKET, else bgws.sock in the user's runtime "
        "directory)",
    )
    if several:
        options.add_argument(
            "--service",
            metavar="NAME",
            action="append",
            help="run only this service of the file (repeatable)",
        )
    else:
        options.add_argument(
            "--service", metavar="NAME", help="the service, when the daemon runs several"
        )
    return options


def _add_run(commands: _Commands) -> None:
    parser = commands.add_parser(
        "run",
        parents=[_daemon_options(several=True)],
        help="run the services of a service file as a daemon",
        description=(
            "Run every [services.<name>] of a TOML service file, with a control socket for "
            "status, send, tail and stop, until SIGTERM, SIGINT or `bgws stop`. Logs go to "
            "stderr. Exits 0 after a graceful stop, 1 when every service failed, 2 when the "
            "file is wrong."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the service file (TOML)")
    parser.add_argument(
        "--check", action="store_true", help="check the file (and import its handlers), then exit"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a stop may drain the outboxes (default: each service's close_timeout)",
    )
    cli_ops.add_run_options(parser)
    parser.set_defaults(run=_run, own_logging=True)


def _run(args: argparse.Namespace) -> int:
    from bgws import daemon, servicefile

    loaded = servicefile.load(args.file)
    if args.service:
        loaded = loaded.only(args.service)
    if args.check:
        print(f"{args.file}: OK ({', '.join(loaded.services)})")
        return EXIT_OK
    return daemon.run_service_file(
        loaded,
        socket=args.socket or os.environ.get("BGWS_SOCKET") or None,
        stop_timeout=args.stop_timeout,
        verbose=args.verbose,
        **cli_ops.run_options(args),
    )


def _add_send(commands: _Commands) -> None:
    parser = commands.add_parser(
        "send",
        parents=[_daemon_options()],
        help="send a message through the daemon",
        description=(
            "Send one message through the daemon's connection: a JSON object, or with --text "
            "a text frame. It is queued there if the service is offline. Prints the message id."
        ),
    )
    parser.add_argument("message", nargs="?", help="the message (default or '-': stdin)")
    parser.add_argument("--text", action="store_true", help="send MESSAGE as a text frame")
    parser.add_argument("--priority", type=int, help="its lane (higher goes first)")
    parser.add_argument("--ttl", type=float, metavar="SECONDS", help="drop it unsent after this")
    parser.add_argument(
        "--ack", action="store_true", help="wait for the server's acknowledgement (needs ack)"
    )
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="how long --ack waits")
    parser.set_defaults(run=_send)


def _send(args: argparse.Namespace) -> int:
    from_stdin = args.message in (None, "-")
    if from_stdin and sys.stdin.isatty():
        _progress("reading the message from stdin (end it with Ctrl-D)…")
    raw = sys.stdin.read() if from_stdin else args.message
    if not raw.strip() and not args.text:
        raise UsageError("the message is empty")
    message: dict[str, Any] | str
    if args.text:
        message = raw.removesuffix("\n") if from_stdin else raw
    else:
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise UsageError(
                f"the message is not valid JSON ({exc}); use --text for text"
            ) from None
        if not isinstance(message, dict):
            raise UsageError("the message must be a JSON object; use --text for a text frame")
    with _connect(args) as client:
        if args.ack:
            _progress("waiting for the server's acknowledgement…")
        result = client.send(
            message,
            service=args.service,
            priority=args.priority,
            ttl=args.ttl,
            wait_for_ack=bool(args.ack),
            timeout=args.timeout,
        )
    if result["state"] != "CONNECTED":
        _progress(
            f"queued: {result['service']} is {result['state']}; it goes out once connected "
            f"({result['queued']} in the outbox)"
        )
    # Always one line on stdout: the id, or why there is none (a script can tell it went).
    print(result["id"] if result["id"] is not None else _NO_ID[bool(args.text)])
    return EXIT_OK


_NO_ID = {
    True: "accepted (no id: a text frame carries none)",
    False: "accepted (no id: the service's id_field is unset)",
}


def _add_tail(commands: _Commands) -> None:
    parser = commands.add_parser(
        "tail",
        parents=[_daemon_options()],
        help="follow incoming messages",
        description=(
            "Print the messages the daemon's services receive, until interrupted or --count "
            "messages. A reader that falls too far behind loses messages, and is told how many."
        ),
    )
    parser.add_argument(
        "--type", action="append", metavar="TYPE", help="only messages of this type (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print each event as a JSON line")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument(
        "--buffer", type=int, metavar="N", help="messages the daemon keeps for this reader"
    )
    parser.set_defaults(run=_tail)


def _tail(args: argparse.Namespace) -> int:
    try:
        return _follow(args)
    except KeyboardInterrupt:  # Ctrl-C is how a tail ends
        return EXIT_OK


def _follow(args: argparse.Namespace) -> int:
    seen = 0
    with _connect(args) as client:
        stream = client.tail(service=args.service, types=args.type, buffer=args.buffer)
        types = f" (types: {', '.join(stream.types)})" if stream.types else ""
        _progress(f"tailing {', '.join(stream.services)}{types}…")
        for event in stream:
            if args.json:
                print(json.dumps(event), flush=True)
            elif event["event"] == "dropped":
                _progress(f"{event['count']} message(s) dropped: this reader was too slow")
            else:
                print(format_event(event), flush=True)
            if event["event"] == "message":
                seen += 1
                if args.count is not None and seen >= args.count:
                    return EXIT_OK
    _progress(f"the stream ended: {stream.end_reason}")
    return EXIT_FAILURE if args.count is not None else EXIT_OK


def _add_stop(commands: _Commands) -> None:
    parser = commands.add_parser(
        "stop",
        parents=[_daemon_options()],
        help="stop the daemon gracefully",
        description=(
            "Stop the daemon (or, with --service, one of its services): the outboxes drain "
            "within the deadline, and what is left stays in the store for the next start."
        ),
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="the drain deadline (default: the daemon's)",
    )
    parser.set_defaults(run=_stop)


def _stop(args: argparse.Namespace) -> int:
    shown: dict[str, Any] = {}

    def progress(services: dict[str, Any]) -> None:
        for name, now in services.items():
            if shown.get(name) != now:
                shown[name] = now
                _progress(f"draining {name}: {now['queued']} queued, {now['in_flight']} in flight")

    with _connect(args) as client:
        _progress(f"stopping {args.service or ', '.join(client.services)}…")
        result = client.stop(service=args.service, timeout=args.timeout, progress=progress)
    for name, final in result.items():
        kept = final["queued"] + final["in_flight"]
        extra = f", {kept} message(s) kept in the store" if kept else ""
        _progress(f"{name}: {final['state']}{extra}")
    return EXIT_OK


# -- commands -----------------------------------------------------------------------------------


def _add_demo(commands: _Commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="a live tour: drops, backoff, offline queue, dead links",
        description=(
            "Start a local fault-injecting test server and a chat-profile service, and print a "
            "live timeline: connect, chat, the server drops and stays down, backoff, messages "
            "queued offline, reconnect and flush, a half-open link detected by the keepalive, "
            "and a summary. Exits 0 when every step behaved as expected, 1 otherwise. "
            "Colours are used on a terminal unless NO_COLOR is set."
        ),
    )
    parser.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from bgws import demo  # imports the testing server: only when asked for

    return demo.run(sys.stdout, engine_logs=args.verbose)


def _add_profiles(commands: _Commands) -> None:
    parser = commands.add_parser(
        "profiles",
        help="show the presets' option values",
        description=(
            "Show the option values of the presets (chat, gaming, iot, trading) next to the "
            "defaults. A preset's other options keep their defaults."
        ),
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="the presets to show (default: all)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the presets' own values as JSON (seconds)"
    )
    parser.set_defaults(run=_profiles)


def _profiles(args: argparse.Namespace) -> int:
    names: list[str] = args.names or list(profiles.PROFILES)
    values = {name: profiles.profile_values(name) for name in names}  # ConfigError: unknown
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        print(_profiles_table(values))
    return EXIT_OK


def _add_version(commands: _Commands) -> None:
    parser = commands.add_parser("version", help="show the installed version")
    parser.set_defaults(run=_version)


def _version(args: argparse.Namespace) -> int:
    print(_version_line())
    return EXIT_OK


def _add_install(commands: _Commands) -> None:
    from bgws import install

    install.register(commands)  # adds `install` and `uninstall`


_COMMANDS: Sequence[Callable[[_Commands], None]] = (
    _add_run,
    functools.partial(cli_ops.add_status, _daemon_options),
    _add_send,
    _add_tail,
    _add_stop,
    functools.partial(cli_ops.add_reconnect, _daemon_options),
    functools.partial(cli_ops.add_outbox, _daemon_options),
    _add_install,
    _add_demo,
    _add_profiles,
    _add_version,
)
"""The commands, in the order ``--help`` lists them."""

# -- the entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="bgws",
        description="Keep WebSocket connections alive in the background.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log debug details to stderr, and show tracebacks on errors",
    )
    parser.add_argument("--version", action="version", version=_version_line())
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in _COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``bgws`` command line.

    Args:
        argv: the arguments, without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 failure, 2 usage or configuration error, 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with _debug_logging(args.verbose and not getattr(args, "own_logging", False)):
        try:
            return run(args)
        except ConfigError as exc:
            _error(f"configuration error: {exc}", args.verbose)
            return EXIT_USAGE
        except UsageError as exc:
            _error(str(exc), args.verbose)
            return EXIT_USAGE
        except ControlError as exc:
            _error(str(exc), args.verbose)
            return EXIT_USAGE if exc.usage else EXIT_FAILURE
        except KeyboardInterrupt:
            _error("interrupted", verbose=False)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # the reader went away (`bgws status | true`): quietly
            cli_ops.closed_pipe()
            return EXIT_OK
        except Exception as exc:
            _error(f"error: {type(exc).__name__}: {exc}", args.verbose)
            return EXIT_FAILURE


def _error(text: str, verbose: bool) -> None:
    """One line on stderr; with ``--verbose``, the traceback first."""
    if verbose:
        logging.getLogger("bgws.cli").exception("%s", text)
    print(f"bgws: {text}", file=sys.stderr)


@contextlib.contextmanager
def _debug_logging(verbose: bool) -> Iterator[None]:
    """With ``--verbose``, send bgws's DEBUG records to stderr for the command's duration."""
    if not verbose:
        yield
        return
    logger = logging.getLogger("bgws")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _connect(args: argparse.Namespace) -> SyncLocalClient:
    return connect_local_sync(args.socket)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- formatting ---------------------------------------------------------------------------------


def _version_line() -> str:
    try:
        picows = metadata.version("picows")
    except metadata.PackageNotFoundError:
        picows = "not installed"
    return f"bgws {bgws.__version__} (Python {platform.python_version()}, picows {picows})"


def _profiles_table(values: dict[str, dict[str, Any]]) -> str:
    """Options as rows (in :class:`Config` order), the default and each preset as columns."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    chosen = {option for preset in values.values() for option in preset}
    options = [name for name in fields if name in chosen]
    header = ["option", "default", *values]
    rows = [header]
    for option in options:
        field = fields[option]
        factory = field.default_factory
        default = factory() if factory is not dataclasses.MISSING else field.default
        row = [option, _show(default)]
        row += [_show(preset[option]) if option in preset else "-" for preset in values.values()]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append("")
    lines.append("-: the preset keeps the default. Durations in seconds (s) or minutes (m).")
    return "\n".join(lines)


def _show(value: object) -> str:
    """A cell: durations (every float option is one) with a unit, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value > 60 and value % 60 == 0:
            return f"{value / 60:g}m"
        return f"{value:g}s"
    if value is None:
        return "none"
    return str(value)
