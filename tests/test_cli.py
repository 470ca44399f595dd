"""Tests for bgws.cli: commands, output formats, exit codes and --verbose."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

import bgws
from bgws.cli import build_parser, main
from bgws.profiles import PROFILES, profile_values


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
    for command in ("demo", "profiles", "version"):
        assert command in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the help and returns 0 instead of raising SystemExit."""
    assert main(["--help"]) == 0
    assert "--verbose" in capsys.readouterr().out


def test_parser_lists_the_commands() -> None:
    """The parser knows exactly the commands of this release."""
    lines = build_parser().format_help().splitlines()
    listed = [m[1] for line in lines if (m := re.match(r"    (\w+) ", line))]
    assert listed == ["demo", "profiles", "version"]


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
