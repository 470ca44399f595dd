"""`bgws install` / `bgws uninstall`: systemd units, launchd agents, Task Scheduler tasks."""

from __future__ import annotations

import argparse
import os
import plistlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from bgws import install

TASK = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"


def bgws(*argv: str) -> int:
    """Run `bgws install|uninstall ...` through a parser that `register` built."""
    parser = argparse.ArgumentParser(prog="bgws")
    install.register(parser.add_subparsers())
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    code: int = args.run(args)
    return code


@pytest.fixture
def toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A service file in a folder whose name has a space; HOME points into tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv(install.INSTALL_DIR_ENV, raising=False)
    folder = tmp_path / "my configs"
    folder.mkdir()
    path = folder / "desk.toml"
    path.write_text('[services.my_chat]\nprofile = "chat"\nurl = "wss://chat.example/ws"\n')
    return path


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The commands install would run, recorded instead of run (each succeeds)."""
    ran: list[tuple[str, ...]] = []

    def record(argv: Sequence[str]) -> tuple[int, str]:
        ran.append(tuple(argv))
        return 0, ""

    monkeypatch.setattr(install, "_run", record)
    return ran


def dry_run_files(output: str) -> dict[str, str]:
    """The files a dry run prints, by path."""
    found = re.findall(
        r"^# file: ([^\n]+)\n(.*?)\n# end of file$", output, re.MULTILINE | re.DOTALL
    )
    return {path: body + "\n" for path, body in found}


def dry_run_commands(output: str) -> list[str]:
    """The commands a dry run prints."""
    return [line[2:] for line in output.splitlines() if line.startswith("$ ")]


# -- dry runs -------------------------------------------------------------------------------------


def test_dry_run_linux_unit_passes_systemd_verify(
    toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], commands: list[tuple[str, ...]]
) -> None:
    """The dry run prints a unit that systemd-analyze verifies, and the commands; runs none."""
    assert bgws("install", str(toml), "--platform", "linux", "--dry-run") == 0
    out = capsys.readouterr().out
    ((path, unit),) = dry_run_files(out).items()
    assert path == str(tmp_path / "home/.config/systemd/user/bgws-my_chat.service")
    assert f'ExecStart={sys.executable} -m bgws run "{toml}"' in unit.splitlines()
    for line in ("Restart=on-failure", "After=network-online.target", "WantedBy=default.target"):
        assert line in unit.splitlines()
    assert "StandardError=journal" in unit
    assert dry_run_commands(out) == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now bgws-my_chat.service",
    ]
    assert commands == []
    assert not Path(path).exists()
    verifier = shutil.which("systemd-analyze")
    if verifier is None:
        pytest.skip("systemd-analyze is not installed")
    unit_file = tmp_path / "bgws-x.service"
    unit_file.write_text(unit)
    done = subprocess.run(
        [verifier, "verify", str(unit_file)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_dry_run_macos_plist(
    toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The launchd agent parses with plistlib: run at load, kept alive on failure, logged."""
    assert bgws("install", str(toml), "--platform", "macos", "--dry-run") == 0
    out = capsys.readouterr().out
    ((path, text),) = dry_run_files(out).items()
    assert path == str(tmp_path / "home/Library/LaunchAgents/bgws.my_chat.plist")
    agent = plistlib.loads(text.encode())
    assert agent["Label"] == "bgws.my_chat"
    assert agent["ProgramArguments"] == [sys.executable, "-m", "bgws", "run", str(toml)]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    log = str(tmp_path / "home/Library/Logs/bgws/my_chat.log")
    assert (agent["StandardOutPath"], agent["StandardErrorPath"]) == (log, log)
    assert dry_run_commands(out)[-1] == f"launchctl bootstrap gui/{os.getuid()} {path}"


def test_dry_run_windows_task_xml(
    toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The task XML parses: a logon trigger, restart on failure, the daemon as its action, and
    its log in %LOCALAPPDATA%\\bgws\\logs (pythonw.exe has no output of its own)."""
    local = tmp_path / "Local"
    monkeypatch.setenv("LOCALAPPDATA", str(local))
    assert bgws("install", str(toml), "--platform", "windows", "--dry-run") == 0
    out = capsys.readouterr().out
    ((path, text),) = dry_run_files(out).items()
    assert path.endswith("bgws-my_chat.xml")
    task = ET.fromstring(text)
    assert task.tag == f"{TASK}Task"
    assert task.find(f"{TASK}Triggers/{TASK}LogonTrigger/{TASK}Enabled").text == "true"  # type: ignore[union-attr]
    restart = task.find(f"{TASK}Settings/{TASK}RestartOnFailure")
    assert restart is not None
    assert restart.findtext(f"{TASK}Interval") == "PT1M"
    action = task.find(f"{TASK}Actions/{TASK}Exec")
    assert action is not None
    assert action.findtext(f"{TASK}Command") == sys.executable
    log = local / "bgws" / "logs" / "my_chat.log"
    assert action.findtext(f"{TASK}Arguments") == f'-m bgws run "{toml}" --log-file {log}'
    assert f"# mkdir: {local / 'bgws' / 'logs'}\n" in out
    assert dry_run_commands(out) == [
        f"schtasks /Create /XML {path} /TN \\bgws\\my_chat /F",
        "schtasks /Run /TN \\bgws\\my_chat",
    ]


def test_unit_quotes_odd_paths() -> None:
    """Quotes, backslashes, % and $ in paths are escaped for systemd."""
    unit = install.systemd_unit("x", "/usr/bin/python3", '/srv/a "b"/100%/$HOME\\c.toml')
    assert 'ExecStart=/usr/bin/python3 -m bgws run "/srv/a \\"b\\"/100%%/$$HOME\\\\c.toml"' in unit


# -- installing into a redirected folder ----------------------------------------------------------


def test_install_no_enable_writes_only_the_unit(
    toml: Path, tmp_path: Path, commands: list[tuple[str, ...]]
) -> None:
    """With --no-enable the unit is written to the target folder and no command runs."""
    target = tmp_path / "units"
    code = bgws(
        "install", str(toml), "--platform", "linux", "--no-enable", "--target-dir", str(target)
    )
    assert code == 0
    unit = target / "bgws-my_chat.service"
    assert unit.read_text() == install.systemd_unit("my_chat", sys.executable, str(toml))
    assert commands == []


def test_install_then_uninstall_with_systemctl(
    toml: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    commands: list[tuple[str, ...]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Install writes and enables; uninstall disables and removes (folder from the env)."""
    if install.current_platform() != "linux":
        pytest.skip("registers a service for this platform")
    target = tmp_path / "units"
    monkeypatch.setenv(install.INSTALL_DIR_ENV, str(target))
    assert bgws("install", str(toml), "--name", "chat") == 0
    assert (target / "bgws-chat.service").is_file()
    assert commands == [
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "--now", "bgws-chat.service"),
    ]
    commands.clear()
    assert bgws("uninstall", "--name", "chat") == 0
    assert not (target / "bgws-chat.service").exists()
    assert commands == [
        ("systemctl", "--user", "disable", "--now", "bgws-chat.service"),
        ("systemctl", "--user", "daemon-reload"),
    ]
    assert f"removed {target / 'bgws-chat.service'}" in capsys.readouterr().out


def test_failed_command_exits_1_with_one_line(
    toml: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A command that fails stops the install: exit 1, one line naming it."""
    if install.current_platform() != "linux":
        pytest.skip("registers a service for this platform")
    monkeypatch.setattr(install, "_run", lambda argv: (1, "Failed to connect to bus"))
    assert bgws("install", str(toml), "--target-dir", str(tmp_path / "u")) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["bgws: systemctl --user daemon-reload failed (exit 1): Failed to connect to bus"]


@pytest.mark.parametrize("platform", ["macos", "windows"])
def test_install_other_platforms_files(
    platform: str, toml: Path, tmp_path: Path, commands: list[tuple[str, ...]]
) -> None:
    """The agent and the task file are written as they parse (the task in UTF-16)."""
    target = tmp_path / "out"
    assert (
        bgws(
            "install", str(toml), "--platform", platform, "--no-enable", "--target-dir", str(target)
        )
        == 0
    )
    (written,) = target.iterdir()
    if platform == "macos":
        assert plistlib.loads(written.read_bytes())["Label"] == "bgws.my_chat"
    else:
        assert written.read_bytes().startswith(b"\xff\xfe")  # UTF-16 with its BOM
        assert ET.fromstring(written.read_bytes()).tag == f"{TASK}Task"
    assert commands == []


def test_foreign_platform_is_not_registered(toml: Path, commands: list[tuple[str, ...]]) -> None:
    """Registering for another platform is refused (exit 2) unless --dry-run or --no-enable."""
    other = "windows" if install.current_platform() != "windows" else "linux"
    assert bgws("install", str(toml), "--platform", other) == 2
    assert commands == []


# -- wrong input ----------------------------------------------------------------------------------


def test_missing_toml_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service file that does not exist: exit 2, one clear line, nothing written."""
    missing = tmp_path / "nope.toml"
    assert bgws("install", str(missing), "--dry-run") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"bgws: {missing}: no such file"]


def test_invalid_service_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A service file that does not load: exit 2, one line naming the service and option."""
    path = tmp_path / "bad.toml"
    path.write_text('[services.feed]\nurl = "http://x/"\n')
    assert bgws("install", str(path), "--dry-run") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("bgws: configuration error: services.feed.url: ")


def test_default_name(tmp_path: Path) -> None:
    """The only service's name, else the file's name as a slug."""
    one = tmp_path / "one.toml"
    one.write_text('[services.gateway]\nurl = "wss://x/"\n')
    two = tmp_path / "My Desk.toml"
    two.write_text('[services.a]\nurl = "wss://x/"\n[services.b]\nurl = "wss://y/"\n')
    assert install.default_name(one) == "gateway"
    assert install.default_name(two) == "my_desk"


def test_socket_is_passed_to_the_daemon(
    toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--socket becomes `bgws run --socket PATH`, so several daemons can be installed."""
    socket = tmp_path / "run" / "desk.sock"
    code = bgws("install", str(toml), "--socket", str(socket), "--dry-run", "--platform", "macos")
    assert code == 0
    (text,) = dry_run_files(capsys.readouterr().out).values()
    arguments = plistlib.loads(text.encode())["ProgramArguments"]
    assert arguments[-2:] == ["--socket", str(socket)]


@pytest.mark.parametrize("name", ["../x", "a b", "-x", ""])
def test_bad_name_exits_2(name: str, toml: Path) -> None:
    """A name that is not a plain word cannot become a file or unit name."""
    assert bgws("install", str(toml), "--name", name, "--dry-run") == 2


def test_uninstall_needs_a_file_or_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    """`bgws uninstall` alone says what it needs."""
    assert bgws("uninstall") == 2
    assert "FILE.toml" in capsys.readouterr().err


def test_autostart_off_is_noted(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A service with autostart_on_boot = false is installed, and the output says so."""
    assert bgws("install", str(toml), "--platform", "macos", "--dry-run") == 0
    assert "# note: autostart_on_boot is false for my_chat" in capsys.readouterr().out
