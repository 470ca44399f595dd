"""The ``bgws`` command line.

::

    bgws [--verbose] demo                     a live tour: drops, backoff, queueing, dead links
    bgws [--verbose] profiles [NAME ...] [--json]   the presets' option values
    bgws [--verbose] version                  the installed version

Exit codes: 0 success, 1 failure, 2 usage or configuration error, 130 interrupted.

Each command is a pair of functions: ``_add_<name>(commands)`` declares its parser and sets
``run=`` to ``_<name>(args) -> int``; :func:`build_parser` calls the ``_add_*`` functions in
order. A new command adds one such pair and one line to :data:`_COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import Any

import bgws
from bgws import profiles
from bgws.config import Config
from bgws.errors import ConfigError

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_Commands = Any  # argparse's private _SubParsersAction[ArgumentParser]

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


_COMMANDS: Sequence[Callable[[_Commands], None]] = (_add_demo, _add_profiles, _add_version)
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
    with _debug_logging(args.verbose):
        try:
            return run(args)
        except ConfigError as exc:
            _error(f"configuration error: {exc}", args.verbose)
            return EXIT_USAGE
        except KeyboardInterrupt:
            _error("interrupted", verbose=False)
            return EXIT_INTERRUPTED
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
