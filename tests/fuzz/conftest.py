"""Fuzz targets' shared hooks: the end-of-session report of their figures."""

from __future__ import annotations

import pytest

from ._budget import EXAMPLES, FIGURES

__all__: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each fuzz target's figures (cases run, crashes, invalid calls, outbox intact)."""
    if not FIGURES:
        return
    terminalreporter.section(f"fuzz figures ({EXAMPLES} examples per target)")
    for name, figures in FIGURES.items():
        terminalreporter.write_line(figures.line(name))
