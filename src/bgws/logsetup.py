"""Where the daemon's logs go, and in which form: ``bgws run --log-format/--log-file``.

:class:`LogOptions` says it: text (the default, as :func:`bgws.daemon.configure_logging`
writes it) or JSON lines (one object per record: ``ts``, ``level``, ``logger``, ``message``,
and ``exc`` with a traceback), to stderr or to a file rotated by size
(:class:`logging.handlers.RotatingFileHandler`: ``PATH``, ``PATH.1`` ... ``PATH.N``). A file
is created with mode 0600 (logs may name hosts and users). In both forms every service's
secrets are redacted from the whole line.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, TextIO

from ._redact import redact_text
from .errors import ConfigError

__all__ = ["DEFAULT_BACKUPS", "DEFAULT_MAX_BYTES", "JsonFormatter", "LogOptions", "configure"]

DEFAULT_MAX_BYTES = 10 << 20
"""A log file is rotated when it would pass this size (10 MiB)."""
DEFAULT_BACKUPS = 5
"""Rotated files kept beside the current one."""


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How and where the daemon logs.

    Attributes:
        format: ``"text"`` or ``"json"`` (one JSON object per line).
        file: the log file (rotated); ``None``: stderr.
        max_bytes: the size at which the file is rotated (0: never).
        backups: how many rotated files are kept.

    Raises:
        ConfigError: an unknown format, or a negative size or count.
    """

    format: Literal["text", "json"] = "text"
    file: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS

    def __post_init__(self) -> None:
        if self.format not in ("text", "json"):
            raise ConfigError("log_format", f"{self.format!r}: choose text or json")
        if self.max_bytes < 0:
            raise ConfigError("log_max_bytes", "must not be negative")
        if self.backups < 0:
            raise ConfigError("log_backups", "must not be negative")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets redacted from every text in it.

    Args:
        secrets: the values to hide (see :meth:`bgws.Config.secret_values`).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        data = {
            "ts": datetime.fromtimestamp(record.created)
            .astimezone()
            .isoformat("T", "milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage(), self.secrets),
        }
        if record.exc_info:
            data["exc"] = redact_text(self.formatException(record.exc_info), self.secrets)
        return json.dumps(data, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    """``<ISO time> LEVEL logger: message``, secrets redacted (for a log file)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).astimezone()
        text = redact_text(super().format(record), self.secrets)
        return f"{when.isoformat(timespec='milliseconds')} {text}"


def configure(
    options: LogOptions,
    *,
    verbose: bool = False,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    text_stderr: Callable[[], Callable[[], None]] | None = None,
) -> Callable[[], None]:
    """Send log records (bgws's and the program's) where ``options`` say.

    Args:
        options: the form and the place.
        verbose: include DEBUG records (default: INFO and above).
        secrets: values to hide wherever they appear.
        stream: where stderr records go (default: ``sys.stderr``).
        text_stderr: sets up the plain text form on stderr (the daemon's own, which knows
            the journal); used when ``options`` ask for text without a file.

    Returns:
        A function that removes the handler and restores the root logger's level.

    Raises:
        ConfigError: the log file cannot be opened.
    """
    if options.format == "text" and options.file is None and text_stderr is not None:
        return text_stderr()
    handler = _rotating(options) if options.file is not None else logging.StreamHandler(stream)
    formatter: logging.Formatter = (
        JsonFormatter(secrets) if options.format == "json" else _TextFormatter(secrets)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)

    def undo() -> None:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)

    return undo


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A rotating log file whose every generation is created with mode 0600."""

    def _open(self) -> io.TextIOWrapper:
        return open(
            self.baseFilename,
            "a",
            encoding=self.encoding,
            errors=self.errors,
            opener=_private,
        )


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _rotating(options: LogOptions) -> logging.Handler:
    path = options.file
    assert path is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _PrivateRotatingFile(
            path, maxBytes=options.max_bytes, backupCount=options.backups, encoding="utf-8"
        )
    except OSError as exc:
        raise ConfigError("log_file", f"cannot write {path}: {exc.strerror or exc}") from exc
