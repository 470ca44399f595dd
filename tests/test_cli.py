"""Tests for bgws.cli: commands, output formats, exit codes and --verbose."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bgws
from bgws.cli import build_parser, main
from bgws.daemon import Daemon, format_event, format_status
from bgws.profiles import PROFILES, profile_values
from bgws.testing import Server

from .conftest import fast_config


def test_profiles_table(capsys: pytest.CaptureFixture[str]) -> None:
    """`profiles` prints one row per option, the default and every preset as columns."""
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["option", "default", *PROFILES]
    cells = {row.split()[0]: row.split() for row in rows if row and not row.startswith("-")}
    assert cells["heartbeat_interval"] == ["heartbeat_interval", "20s", "25s", "5s", "60s", "2s"]
    assert cells["max_reconnect_delay"][4] == "15m"  # iot: 900 s
    assert cells["foreground"][2] == "yes"  # chat
    assert cells["foreground"][3] == "-"  # gaming keeps the default
    for name in PROFILES:
        assert set(profile_values(name)) <= set(cells)


def test_profiles_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`profiles --json` prints every preset's own values as parseable JSON."""
    assert main(["profiles", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {name: profile_values(name) for name in PROFILES}


def test_profiles_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    """`profiles NAME --json` shows only the named presets, in the given order."""
    assert main(["profiles", "trading", "chat", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["trading", "chat"]
    assert data["chat"] == profile_values("chat")


def test_unknown_profile_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown preset is a configuration error: exit 2, one line on stderr."""
    assert main(["profiles", "chaat"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("bgws: configuration error: profile: unknown profile 'chaat'")
    assert "did you mean 'chat'?" in lines[0]


def test_verbose_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """With --verbose an error comes with its traceback, and the one-line summary last."""
    assert main(["--verbose", "profiles", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "ConfigError" in err
    assert err.splitlines()[-1].startswith("bgws: configuration error: profile:")


def test_verbose_logs_debug_only_while_running() -> None:
    """--verbose turns on bgws debug logging for the command and restores it afterwards."""
    logger = logging.getLogger("bgws")
    level, handlers = logger.level, list(logger.handlers)
    assert main(["--verbose", "version"]) == 0
    assert (logger.level, logger.handlers) == (level, handlers)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`version` and `--version` print the package version."""
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith(f"bgws {bgws.__version__} (Python ")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"bgws {bgws.__version__} ")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command exits 2 with argparse's usage message."""
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command, the help goes to stderr and the exit code is 2."""
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: bgws" in err
    for command in ("run", "status", "send", "tail", "stop", "demo", "profiles", "version"):
        assert command in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the help and returns 0 instead of raising SystemExit."""
    assert main(["--help"]) == 0
    assert "--verbose" in capsys.readouterr().out


def test_parser_lists_the_commands() -> None:
    """The parser knows exactly the commands of this release."""
    lines = build_parser().format_help().splitlines()
    listed = [m[1] for line in lines if (m := re.match(r"    (\w+) ", line))]
    assert listed == [
        "run",
        "status",
        "send",
        "tail",
        "stop",
        "reconnect",
        "outbox",
        "install",
        "uninstall",
        "demo",
        "profiles",
        "version",
    ]


def test_python_dash_m() -> None:
    """`python -m bgws version` runs the same main()."""
    result = subprocess.run(
        [sys.executable, "-m", "bgws", "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"bgws {bgws.__version__}")


# -- the daemon's commands ----------------------------------------------------------------------

DAEMON_COMMANDS = {
    "run": ["run", "x.toml"],
    "status": ["status"],
    "send": ["send", "{}"],
    "tail": ["tail"],
    "stop": ["stop"],
}


@pytest.mark.parametrize("command", DAEMON_COMMANDS)
def test_daemon_commands_take_socket_and_service(command: str) -> None:
    """Every daemon command takes --socket PATH and --service NAME."""
    argv = [*DAEMON_COMMANDS[command], "--socket", "/tmp/x.sock", "--service", "chat"]
    args = build_parser().parse_args(argv)
    assert args.socket == "/tmp/x.sock"
    assert args.service in ("chat", ["chat"])  # run takes it more than once


def test_no_daemon_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client command without a daemon exits 1 with one line naming the socket."""
    path = tmp_path / "none.sock"
    assert main(["status", "--socket", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"bgws: no bgws daemon is running ({path} does not exist)"]


def test_bgws_socket_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --socket, $BGWS_SOCKET names the socket."""
    monkeypatch.setenv("BGWS_SOCKET", str(tmp_path / "env.sock"))
    assert main(["stop"]) == 1
    assert str(tmp_path / "env.sock") in capsys.readouterr().err


@pytest.mark.parametrize(
    ("message", "error"),
    [("{not json", "the message is not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_send_refuses_what_is_not_an_object(
    message: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """send wants a JSON object (or --text): anything else is a usage error, exit 2."""
    assert main(["send", message, "--socket", "/nonexistent/x.sock"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert error in err


def test_run_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """run --check loads the file (and its imports) and exits 0 without running anything."""
    path = tmp_path / "s.toml"
    path.write_text('[services.a]\nurl = "ws://127.0.0.1:1/"\n[services.b]\nurl = "ws://h:2/"\n')
    assert main(["run", str(path), "--check"]) == 0
    assert capsys.readouterr().out == f"{path}: OK (a, b)\n"
    assert main(["run", str(path), "--check", "--service", "b"]) == 0
    assert capsys.readouterr().out == f"{path}: OK (b)\n"
    assert main(["run", str(path), "--check", "--service", "c"]) == 2
    assert "no service named 'c'" in capsys.readouterr().err


def test_run_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """run with a missing file is a configuration error: exit 2, one line."""
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err == f"bgws: configuration error: {tmp_path / 'nope.toml'}: no such file\n"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    """An in-process daemon connected to a kit server; yields the server and the socket."""
    async with Server() as server:
        manager = bgws.ServiceManager({"chat": bgws.Service(fast_config(server.url))})
        daemon = Daemon(manager, socket=tmp_path / "d.sock")
        task = asyncio.create_task(daemon.run())
        await manager.wait_for("chat", bgws.State.CONNECTED, timeout=10)
        yield server, daemon.socket
        daemon.request_stop()
        async with asyncio.timeout(10):
            await task


async def test_commands_against_a_daemon(
    running: tuple[Server, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """send prints the id (or why none), status the service's block, stop the outcome."""
    server, sock = running

    async def bgws_main(*argv: str) -> int:
        return await asyncio.to_thread(main, [*argv, "--socket", sock])

    assert await bgws_main("send", '{"type": "hi"}') == 0
    msg_id = capsys.readouterr().out.strip()
    assert (await server.wait_for_messages(1))[0].json() == {"type": "hi", "id": msg_id}
    assert await bgws_main("send", "--text", "plain") == 0  # no id, and it says so
    assert capsys.readouterr().out == "accepted (no id: a text frame carries none)\n"
    assert (await server.wait_for_messages(2))[1].data == "plain"
    assert await bgws_main("send", '{"type": "x"}', "--service", "nope") == 2
    assert "no service named 'nope'" in capsys.readouterr().err
    assert await bgws_main("status") == 0
    lines = capsys.readouterr().out.splitlines()
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines[1:] if line)
    assert lines[0] == "service chat"
    assert rows["state"] == "CONNECTED"
    assert rows["url"] == server.url
    assert rows["sent/received"].startswith("2/")
    assert await bgws_main("stop") == 0
    assert capsys.readouterr().err.splitlines() == ["stopping chat…", "chat: CLOSED"]


def test_format_status() -> None:
    """The status text shows uptime, outbox, in flight, reconnects and the last error."""
    stats = {
        "connected_since": None,
        "uptime": 0.0,
        "queued": 3,
        "in_flight": 1,
        "reconnects": 4,
        "sent": 5,
        "received": 6,
        "dropped": 1,
        "expired": 1,
        "last_error": "LinkError: refused",
    }
    status = {"state": "BACKING_OFF", "url": "wss://h/", "error": None, "stats": stats}
    text = format_status({"services": {"chat": status}})
    rows = dict(line.strip().split(None, 1) for line in text.splitlines()[1:] if "  " in line)
    assert rows["state"] == "BACKING_OFF"
    assert rows["uptime"] == "-"
    assert rows["outbox"] == "3"
    assert rows["reconnects"] == "4"
    assert rows["dropped"] == "2"
    assert text.splitlines()[-1] == "  last error  LinkError: refused"


def test_format_event() -> None:
    """A tail line is service, type and the data (compact JSON, text, or base64)."""
    event = {"service": "chat", "type": "hi", "format": "json", "data": {"a": [1, "é"]}}
    assert format_event(event) == 'chat hi {"a":[1,"é"]}'
    assert format_event({**event, "type": None, "format": "text", "data": "x y"}) == "chat - x y"
    assert format_event({**event, "format": "binary", "data": "AAE="}) == "chat hi base64:AAE="
