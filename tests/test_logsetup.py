"""Log options of the daemon: JSON lines, rotated private files, secrets redacted."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from bgws.errors import ConfigError
from bgws.logsetup import JsonFormatter, LogOptions, configure


def test_json_lines_in_a_rotated_private_file(tmp_path: Path) -> None:
    """Records become JSON lines in a 0600 file, rotated at max_bytes into PATH.1 .. PATH.N."""
    path = tmp_path / "logs" / "bgws.log"
    undo = configure(
        LogOptions(format="json", file=path, max_bytes=400, backups=2), secrets=["hunter2"]
    )
    log = logging.getLogger("bgws.test")
    try:
        for n in range(20):
            log.info("record %d with token hunter2", n)
        try:
            raise ValueError("boom hunter2")
        except ValueError:
            log.exception("failed")
    finally:
        undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["bgws.log", "bgws.log.1", "bgws.log.2"]
    for file in path.parent.iterdir():
        assert stat.S_IMODE(os.stat(file).st_mode) == 0o600, file
        assert "hunter2" not in file.read_text()
    last = [json.loads(line) for line in path.read_text().splitlines()][-1]
    assert (last["level"], last["logger"], last["message"]) == ("ERROR", "bgws.test", "failed")
    assert "ValueError: boom ***" in last["exc"]


def test_text_to_a_file_has_iso_timestamps(tmp_path: Path) -> None:
    """--log-file without --log-format json writes the daemon's text lines."""
    path = tmp_path / "bgws.log"
    undo = configure(LogOptions(file=path))
    try:
        logging.getLogger("bgws.test").warning("hello")
    finally:
        undo()
    [line] = path.read_text().splitlines()
    assert line.endswith(" WARNING bgws.test: hello")
    assert line[4] == "-"
    assert "T" in line.split()[0]


def test_bad_log_options_are_config_errors(tmp_path: Path) -> None:
    """An unknown format, a negative size, an unwritable file: ConfigError naming the option."""
    with pytest.raises(ConfigError, match="log_format"):
        LogOptions(format="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="log_max_bytes"):
        LogOptions(max_bytes=-1)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="log_file"):
        configure(LogOptions(file=tmp_path / "file" / "bgws.log"))


def test_json_formatter_is_one_line() -> None:
    """A multi-line message stays one JSON line."""
    record = logging.LogRecord("bgws", logging.INFO, __file__, 1, "a\nb", None, None)
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert json.loads(text)["message"] == "a\nb"
