"""``bgws install`` and ``bgws uninstall``: start a daemon when the user's session starts.

The daemon is ``<python> -m bgws run <service file>``, with the Python that runs this command
(so a virtual environment is kept). ``bgws install FILE.toml`` checks the service file as
``bgws run --check`` does, then registers the daemon with the platform's own service manager,
in the user's scope, without administrator rights:

- **Linux**: a systemd user unit ``~/.config/systemd/user/bgws-<name>.service`` (``Type=notify``),
  restarted on failure, logging to the journal; then ``systemctl --user daemon-reload`` and
  ``systemctl --user enable --now``. It starts at login, or at boot with ``loginctl
  enable-linger``.
- **macOS**: a launchd agent ``~/Library/LaunchAgents/bgws.<name>.plist``, started at load and
  kept alive after a failure, logging to ``~/Library/Logs/bgws/<name>.log``; then
  ``launchctl bootstrap gui/<uid>``.
- **Windows**: a Task Scheduler task ``\\bgws\\<name>`` started at logon and restarted on
  failure, from the task XML kept in ``%LOCALAPPDATA%\\bgws\\tasks``, logging to
  ``%LOCALAPPDATA%\\bgws\\logs\\<name>.log`` (``bgws run --log-file``); then
  ``schtasks /Create /XML`` and ``schtasks /Run``.

Each command is first built as a :class:`Plan`, a list of steps (make a folder, write a file,
remove a file, run a command). ``--dry-run`` prints the plan, files in full, and does nothing;
otherwise the plan is carried out in order. ``<name>`` is ``--name``, else
:func:`default_name`.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from bgws import servicefile
from bgws._config_checks import slug
from bgws._units import RESTART_DELAY, launchd_plist, systemd_unit, task_xml
from bgws.errors import ConfigError
from bgws.servicefile import ServiceFile

__all__ = [
    "INSTALL_DIR_ENV",
    "PLATFORMS",
    "RESTART_DELAY",
    "Plan",
    "Step",
    "current_platform",
    "default_name",
    "install_plan",
    "launchd_plist",
    "register",
    "run_install",
    "run_uninstall",
    "systemd_unit",
    "task_xml",
    "uninstall_plan",
]

Platform = Literal["linux", "macos", "windows"]
PLATFORMS: Final[tuple[Platform, ...]] = ("linux", "macos", "windows")
"""The platforms ``--platform`` accepts."""
INSTALL_DIR_ENV: Final = "BGWS_INSTALL_DIR"
"""An environment variable naming the folder to write the unit, agent or task file in."""

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One thing a plan does.

    Attributes:
        kind: ``"mkdir"`` (make a folder and its parents), ``"write"`` (write ``content`` to
            ``path``), ``"remove"`` (remove ``path`` if it exists) or ``"run"`` (run ``argv``).
        path: the folder or file.
        content: the file's text.
        argv: the command.
        check: for ``"run"``: whether a failure stops the plan (``False``: it is reported).
        encoding: the file's encoding.
    """

    kind: Literal["mkdir", "write", "remove", "run"]
    path: Path | None = None
    content: str = ""
    argv: tuple[str, ...] = ()
    check: bool = True
    encoding: str = "utf-8"


@dataclasses.dataclass(slots=True)
class Plan:
    """What an install or uninstall does, in order, and the notes to print with it.

    Attributes:
        platform: the target platform.
        name: the service's name.
        file: the unit, agent or task file.
        steps: the steps, in order.
        notes: lines for the user (not errors).
    """

    platform: Platform
    name: str
    file: Path
    steps: list[Step] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def commands(self) -> list[tuple[str, ...]]:
        """The commands the plan runs."""
        return [step.argv for step in self.steps if step.kind == "run"]

    def describe(self) -> str:
        """The plan as text, files in full: what ``--dry-run`` prints."""
        lines: list[str] = []
        for step in self.steps:
            if step.kind == "mkdir":
                lines.append(f"# mkdir: {step.path}")
            elif step.kind == "write":
                lines.append(f"# file: {step.path}")
                lines.append(step.content.rstrip("\n"))
                lines.append("# end of file")
            elif step.kind == "remove":
                lines.append(f"# remove: {step.path}")
            else:
                lines.append(f"$ {_show_command(self.platform, step.argv)}")
        lines.extend(f"# note: {note}" for note in self.notes)
        return "\n".join(lines) + "\n"


# -- plans ----------------------------------------------------------------------------------------


def current_platform() -> Platform:
    """This machine's platform: ``"macos"``, ``"windows"``, or ``"linux"`` for the rest."""
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith(("win", "cygwin")):
        return "windows"
    return "linux"


def _default_dir(platform: Platform) -> Path:
    home = Path.home()
    if platform == "linux":
        config_home = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
        return Path(config_home) / "systemd" / "user"
    if platform == "macos":
        return home / "Library" / "LaunchAgents"
    return _windows_local() / "bgws" / "tasks"


def _windows_local() -> Path:
    """``%LOCALAPPDATA%`` (or its usual place under the home folder)."""
    return Path(os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local"))


def _target_dir(platform: Platform, target_dir: str | os.PathLike[str] | None) -> Path:
    chosen = target_dir if target_dir is not None else os.environ.get(INSTALL_DIR_ENV)
    return Path(chosen) if chosen else _default_dir(platform)


def _uid() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else "<uid>"


def _windows_python(python: str) -> str:
    """``pythonw.exe`` beside ``python.exe`` when there is one: it opens no console window."""
    path = Path(python)
    if path.name.lower() == "python.exe" and path.with_name("pythonw.exe").exists():
        return str(path.with_name("pythonw.exe"))
    return python


def _windows_user() -> str:
    user = os.environ.get("USERNAME") or getpass.getuser()
    domain = os.environ.get("USERDOMAIN")
    return f"{domain}\\{user}" if domain else user


def install_plan(
    config_path: str | os.PathLike[str],
    name: str,
    platform: Platform,
    *,
    enable: bool = True,
    target_dir: str | os.PathLike[str] | None = None,
    python: str | None = None,
    socket: str | None = None,
) -> Plan:
    """The steps that install the daemon for ``config_path`` on ``platform``.

    Args:
        config_path: the TOML file (made absolute).
        name: the service's name.
        platform: the target platform.
        enable: also register and start it (else only write the file).
        target_dir: the folder for the unit, agent or task file (default: the platform's, or
            :data:`INSTALL_DIR_ENV`).
        python: the interpreter (default: :data:`sys.executable`).
        socket: the daemon's control socket (``bgws run --socket``); ``None``: its default.

    Returns:
        The plan.
    """
    toml = os.path.abspath(config_path)
    python = python or sys.executable
    extra = ("--socket", os.path.abspath(socket)) if socket else ()
    folder = _target_dir(platform, target_dir)
    if platform == "linux":
        unit = f"bgws-{name}.service"
        plan = Plan(platform, name, folder / unit)
        plan.steps += [
            Step("mkdir", folder),
            Step("write", plan.file, systemd_unit(name, python, toml, extra)),
        ]
        if enable:
            plan.steps += [
                Step("run", argv=("systemctl", "--user", "daemon-reload")),
                Step("run", argv=("systemctl", "--user", "enable", "--now", unit)),
            ]
    elif platform == "macos":
        label = f"bgws.{name}"
        logs = Path.home() / "Library" / "Logs" / "bgws"
        plan = Plan(platform, name, folder / f"{label}.plist")
        content = launchd_plist(label, python, toml, str(logs / f"{name}.log"), extra)
        plan.steps += [
            Step("mkdir", folder),
            Step("mkdir", logs),
            Step("write", plan.file, content),
        ]
        if enable:
            domain = f"gui/{_uid()}"
            plan.steps += [
                Step("run", argv=("launchctl", "bootout", f"{domain}/{label}"), check=False),
                Step("run", argv=("launchctl", "bootstrap", domain, str(plan.file))),
            ]
    else:
        task = f"\\bgws\\{name}"
        plan = Plan(platform, name, folder / f"bgws-{name}.xml")
        # pythonw.exe has no stdout or stderr and Task Scheduler keeps no output: the daemon
        # writes its log to a file of its own.
        logs = _windows_local() / "bgws" / "logs"
        extra = (*extra, "--log-file", str(logs / f"{name}.log"))
        content = task_xml(name, _windows_python(python), toml, _windows_user(), extra)
        plan.steps += [
            Step("mkdir", folder),
            Step("mkdir", logs),
            Step("write", plan.file, content, encoding="utf-16"),
        ]
        if enable:
            plan.steps += [
                Step(
                    "run", argv=("schtasks", "/Create", "/XML", str(plan.file), "/TN", task, "/F")
                ),
                Step("run", argv=("schtasks", "/Run", "/TN", task)),
            ]
    return plan


def uninstall_plan(
    name: str, platform: Platform, *, target_dir: str | os.PathLike[str] | None = None
) -> Plan:
    """The steps that stop the daemon, unregister it and remove its file.

    A stop or unregister command that fails (the service was not loaded) does not stop the
    plan: the file is removed all the same.

    Args:
        name: the service's name.
        platform: the target platform.
        target_dir: as for :func:`install_plan`.

    Returns:
        The plan.
    """
    folder = _target_dir(platform, target_dir)
    if platform == "linux":
        unit = f"bgws-{name}.service"
        plan = Plan(platform, name, folder / unit)
        plan.steps += [
            Step("run", argv=("systemctl", "--user", "disable", "--now", unit), check=False),
            Step("remove", plan.file),
            Step("run", argv=("systemctl", "--user", "daemon-reload"), check=False),
        ]
    elif platform == "macos":
        label = f"bgws.{name}"
        plan = Plan(platform, name, folder / f"{label}.plist")
        plan.steps += [
            Step("run", argv=("launchctl", "bootout", f"gui/{_uid()}/{label}"), check=False),
            Step("remove", plan.file),
        ]
    else:
        task = f"\\bgws\\{name}"
        plan = Plan(platform, name, folder / f"bgws-{name}.xml")
        plan.steps += [
            Step("run", argv=("schtasks", "/End", "/TN", task), check=False),
            Step("run", argv=("schtasks", "/Delete", "/TN", task, "/F"), check=False),
            Step("remove", plan.file),
        ]
    return plan


# -- carrying a plan out --------------------------------------------------------------------------


def _show_command(platform: Platform, argv: Sequence[str]) -> str:
    if platform == "windows":
        return subprocess.list2cmdline(list(argv))
    return shlex.join(argv)


def _run(argv: Sequence[str]) -> tuple[int, str]:
    """Run a command; return its exit code and its last line of output (127: not found)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found"
    except OSError as exc:
        return 126, f"{argv[0]}: {exc.strerror or exc}"
    output = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode, output[-1] if output else ""


def _apply(plan: Plan, out: TextIO, err: TextIO) -> int:
    """Carry out the plan's steps in order; report each; stop at the first failure."""
    for step in plan.steps:
        try:
            if step.kind == "mkdir" and step.path is not None:
                step.path.mkdir(parents=True, exist_ok=True)
            elif step.kind == "write" and step.path is not None:
                step.path.write_text(step.content, encoding=step.encoding, newline="\n")
                print(f"wrote {step.path}", file=out)
            elif step.kind == "remove" and step.path is not None:
                if step.path.exists():
                    step.path.unlink()
                    print(f"removed {step.path}", file=out)
                else:
                    print(f"no {step.path} to remove", file=out)
            elif step.kind == "run":
                code, detail = _run(step.argv)
                shown = _show_command(plan.platform, step.argv)
                if code == 0:
                    print(f"ran {shown}", file=out)
                elif step.check:
                    print(f"bgws: {shown} failed (exit {code}): {detail}", file=err)
                    return EXIT_FAILURE
                else:
                    print(f"ran {shown} (exit {code}, ignored: {detail})", file=out)
        except OSError as exc:
            print(f"bgws: {step.kind} {step.path}: {exc.strerror or exc}", file=err)
            return EXIT_FAILURE
    for note in plan.notes:
        print(f"note: {note}", file=out)
    return EXIT_OK


# -- the commands ---------------------------------------------------------------------------------


def register(commands: Any) -> None:
    """Add the ``install`` and ``uninstall`` commands to the ``bgws`` parser's subparsers.

    Each sets ``run=`` to :func:`run_install` or :func:`run_uninstall`, as the other commands of
    :mod:`bgws.cli` do.

    Args:
        commands: what ``ArgumentParser.add_subparsers()`` returned.
    """
    install = commands.add_parser(
        "install",
        help="start a bgws daemon at login or boot (systemd, launchd, Task Scheduler)",
        description=(
            "Check the service file, then register `python -m bgws run FILE.toml` with this "
            "platform's service manager, for "
            "the current user: a systemd user unit (Linux), a launchd agent (macOS) or a Task "
            "Scheduler task (Windows), restarted on failure, then enable and start it. "
            "Exit codes: 0 done, 1 a step failed, 2 a wrong file, name or option."
        ),
    )
    install.add_argument("config", metavar="FILE.toml", help="the daemon's service file")
    _common_options(install)
    install.add_argument(
        "--no-enable", action="store_true", help="only write the file; register and start nothing"
    )
    install.add_argument(
        "--socket",
        metavar="PATH",
        help="the daemon's control socket (bgws run --socket); give each installed daemon its own",
    )
    install.set_defaults(run=run_install)

    uninstall = commands.add_parser(
        "uninstall",
        help="stop a daemon that `bgws install` set up, and remove it",
        description=(
            "Stop and unregister the daemon installed for FILE.toml (or --name), and remove its "
            "unit, agent or task file. Exit codes: 0 done, 1 a step failed, 2 a wrong option."
        ),
    )
    uninstall.add_argument(
        "config", metavar="FILE.toml", nargs="?", help="the service file it was installed for"
    )
    _common_options(uninstall)
    uninstall.set_defaults(run=run_uninstall)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        help="the daemon's name in unit, agent and task names (default: the file's only "
        "service, else the file's name)",
    )
    parser.add_argument(
        "--platform",
        choices=PLATFORMS,
        default=current_platform(),
        help="the platform to write for (default: this one, %(default)s)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the files and commands; change nothing"
    )
    parser.add_argument("--target-dir", help=argparse.SUPPRESS)


def _fail(text: str) -> int:
    print(f"bgws: {text}", file=sys.stderr)
    return EXIT_USAGE


def default_name(config_path: str | os.PathLike[str]) -> str:
    """The name a service file is installed under when ``--name`` is not given.

    The name of its only ``[services.<name>]`` table, or else the file's name without its
    extension (lower case, other characters as ``_``): ``gateway.toml`` installs as
    ``gateway``.

    Args:
        config_path: the service file.
    """
    try:
        with open(config_path, "rb") as file:
            services = tomllib.load(file).get("services")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        services = None
    if isinstance(services, dict) and len(services) == 1:
        return str(next(iter(services)))
    return slug(Path(config_path).stem)


def _resolve(args: argparse.Namespace, *, load: bool) -> tuple[str, ServiceFile | None] | int:
    """The service's name (and, with ``load``, its checked service file) from the arguments,
    or the exit code after one line on stderr."""
    loaded: ServiceFile | None = None
    if args.config is not None:
        if any(c in args.config for c in "\n\r\0"):
            return _fail("the service file's path must not contain line breaks")
        if not os.path.isfile(args.config):
            return _fail(f"{args.config}: no such file")
        if load:
            try:
                loaded = servicefile.load(args.config, env={})
            except ConfigError as exc:
                return _fail(f"configuration error: {exc}")
    elif args.name is None:
        return _fail("give the service file (FILE.toml) or --name")
    name = args.name if args.name is not None else default_name(args.config)
    if not _NAME.fullmatch(name):
        return _fail(f"name {name!r}: use letters, digits, '_', '.' and '-' only (see --name)")
    return name, loaded


def _check_runnable(plan: Plan, dry_run: bool, enable_flag: str) -> int | None:
    if dry_run or not plan.commands or plan.platform == current_platform():
        return None
    return _fail(
        f"cannot register a {plan.platform} service on {current_platform()}; "
        f"use --dry-run, or {enable_flag} to write the file only"
    )


def run_install(args: argparse.Namespace) -> int:
    """``bgws install``: write the unit, agent or task, then register and start it.

    Returns:
        0 done, 1 a step failed, 2 a missing or invalid service file, a bad name or option.
    """
    resolved = _resolve(args, load=True)
    if isinstance(resolved, int):
        return resolved
    name, loaded = resolved
    plan = install_plan(
        args.config,
        name,
        args.platform,
        enable=not args.no_enable,
        target_dir=args.target_dir,
        socket=args.socket,
    )
    if loaded is not None and not args.no_enable:
        off = [n for n, spec in loaded.services.items() if not spec.config.autostart_on_boot]
        if off:
            plan.notes.append(
                f"autostart_on_boot is false for {', '.join(off)}; installed anyway, as asked "
                "(--no-enable writes the file only)"
            )
    if plan.platform == "linux" and plan.commands and not _lingering():
        plan.notes.append(
            "it starts when you log in; to start it at boot without a login, run: "
            f"loginctl enable-linger {getpass.getuser()}"
        )
    refused = _check_runnable(plan, args.dry_run, "--no-enable")
    if refused is not None:
        return refused
    if args.dry_run:
        sys.stdout.write(plan.describe())
        return EXIT_OK
    return _apply(plan, sys.stdout, sys.stderr)


def run_uninstall(args: argparse.Namespace) -> int:
    """``bgws uninstall``: stop and unregister the daemon, and remove its file.

    Returns:
        0 done, 1 a step failed, 2 a missing service file, a bad name or option.
    """
    resolved = _resolve(args, load=False)
    if isinstance(resolved, int):
        return resolved
    name, _ = resolved
    plan = uninstall_plan(name, args.platform, target_dir=args.target_dir)
    if not args.dry_run and plan.platform != current_platform():
        return _fail(f"cannot unregister a {plan.platform} service on {current_platform()}")
    if args.dry_run:
        sys.stdout.write(plan.describe())
        return EXIT_OK
    return _apply(plan, sys.stdout, sys.stderr)


def _lingering() -> bool:
    """Whether systemd starts this user's units at boot (``loginctl enable-linger``)."""
    try:
        return Path("/var/lib/systemd/linger", getpass.getuser()).exists()
    except (OSError, KeyError):
        return False
