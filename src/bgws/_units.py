"""The files that register the bgws daemon with each platform's service manager.

:mod:`bgws.install` plans and carries out ``bgws install``; this module only renders the file
each platform reads: a systemd user unit (Linux), a launchd agent (macOS), a Task Scheduler
task (Windows). Each is a pure function of the service's name, the Python interpreter and the
service file, so the files can be checked without installing anything. Users reach these
functions as ``bgws.install.systemd_unit`` and so on.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["RESTART_DELAY", "launchd_plist", "systemd_unit", "task_xml"]

RESTART_DELAY: Final = 5
"""Seconds before a failed daemon is started again (Windows: one minute, its shortest)."""

_TASK_NS: Final = "http://schemas.microsoft.com/windows/2004/02/mit/task"


def _systemd_word(word: str) -> str:
    """One word of an ``ExecStart=`` line, quoted and escaped for systemd."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"' if any(c in word for c in " \t\"'\\") or not word else escaped


def systemd_unit(name: str, python: str, config_path: str, extra: Sequence[str] = ()) -> str:
    """A systemd user unit that runs the daemon, restarts it on failure and logs to the journal.

    Args:
        name: the service's name (the unit is ``bgws-<name>.service``).
        python: the absolute path of the Python interpreter.
        config_path: the absolute path of the service file.
        extra: more arguments for ``bgws run`` (such as ``--socket PATH``).

    Returns:
        The unit file's text.
    """
    argv = (python, "-m", "bgws", "run", config_path, *extra)
    command = " ".join(_systemd_word(w) for w in argv)
    directory = (os.path.dirname(config_path) or "/").replace("%", "%%")  # a path, not words
    description = f"bgws service {name} ({config_path})".replace("%", "%%")
    return f"""\
# Written by `bgws install`; remove with `bgws uninstall --name {name}`.
[Unit]
Description={description}
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
# The daemon tells systemd when its control socket listens and its services have started.
Type=notify
ExecStart={command}
WorkingDirectory={directory}
Restart=on-failure
RestartSec={RESTART_DELAY}
# Exit code 2 is a configuration error: restarting would not fix it.
RestartPreventExitStatus=2
Environment=PYTHONUNBUFFERED=1
StandardOutput=journal
StandardError=journal
SyslogIdentifier=bgws-{name}

[Install]
WantedBy=default.target
"""


def launchd_plist(
    label: str, python: str, config_path: str, log_path: str, extra: Sequence[str] = ()
) -> str:
    """A launchd agent that runs the daemon at load and again after a failure.

    Args:
        label: the agent's label (``bgws.<name>``).
        python: the absolute path of the Python interpreter.
        config_path: the absolute path of the service file.
        log_path: the file that receives the daemon's stdout and stderr.
        extra: more arguments for ``bgws run``.

    Returns:
        The property list, as XML text.
    """
    agent: dict[str, Any] = {
        "Label": label,
        "ProgramArguments": [python, "-m", "bgws", "run", config_path, *extra],
        "WorkingDirectory": os.path.dirname(config_path) or "/",
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_DELAY,
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
    }
    return plistlib.dumps(agent, sort_keys=False).decode("utf-8")


def task_xml(name: str, python: str, config_path: str, user: str, extra: Sequence[str] = ()) -> str:
    """A Task Scheduler task that runs the daemon at the user's logon and restarts it on failure.

    Args:
        name: the service's name.
        python: the path of the Python interpreter (``pythonw.exe`` opens no console window).
        config_path: the absolute path of the service file.
        user: the account (``DOMAIN\\user``) whose logon starts the task.
        extra: more arguments for ``bgws run``.

    Returns:
        The task XML (version 1.2), declared as UTF-16, the encoding ``schtasks`` reads.
    """
    ET.register_namespace("", _TASK_NS)

    def add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        element = ET.SubElement(parent, f"{{{_TASK_NS}}}{tag}")
        element.text = text
        return element

    task = ET.Element(f"{{{_TASK_NS}}}Task", {"version": "1.2"})
    info = add(task, "RegistrationInfo")
    add(info, "Description", f"bgws service {name} ({config_path})")
    add(info, "URI", f"\\bgws\\{name}")
    logon = add(add(task, "Triggers"), "LogonTrigger")
    add(logon, "Enabled", "true")
    add(logon, "UserId", user)
    principal = add(add(task, "Principals"), "Principal")
    principal.set("id", "Author")
    add(principal, "UserId", user)
    add(principal, "LogonType", "InteractiveToken")
    add(principal, "RunLevel", "LeastPrivilege")
    settings = add(task, "Settings")
    for tag, text in (
        ("MultipleInstancesPolicy", "IgnoreNew"),
        ("DisallowStartIfOnBatteries", "false"),
        ("StopIfGoingOnBatteries", "false"),
        ("ExecutionTimeLimit", "PT0S"),  # no limit: the daemon runs until logoff
        ("StartWhenAvailable", "true"),
        ("Enabled", "true"),
        ("AllowStartOnDemand", "true"),
    ):
        add(settings, tag, text)
    restart = add(settings, "RestartOnFailure")
    add(restart, "Interval", "PT1M")
    add(restart, "Count", "999")
    actions = add(task, "Actions")
    actions.set("Context", "Author")
    run = add(actions, "Exec")
    add(run, "Command", python)
    add(run, "Arguments", subprocess.list2cmdline(["-m", "bgws", "run", config_path, *extra]))
    add(run, "WorkingDirectory", os.path.dirname(config_path))
    ET.indent(task)
    body = ET.tostring(task, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-16"?>\n{body}\n'
