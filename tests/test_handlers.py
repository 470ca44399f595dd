"""The default hooks: the error handler logs, but a flood does not bury the log."""

from __future__ import annotations

import logging

import pytest

import bgws


async def test_default_error_handler_rate_limits_its_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A burst of one error type logs log_burst lines, then a count when the window ends."""
    handler = bgws.ErrorHandler()
    handler.log_window = 0.0 + 3600  # one long window for the burst
    caplog.set_level(logging.WARNING, logger="bgws")
    for n in range(50):
        await handler.on_error(bgws.MessageDropped(f"dropped {n}", b""))
    await handler.on_error(bgws.DecodeError("bad frame", b"x"))
    lines = [r.getMessage() for r in caplog.records]
    assert len([x for x in lines if x.startswith("MessageDropped")]) == 10
    assert any(x.startswith("DecodeError") for x in lines)
    handler.log_window = 0.0  # the window is over: the next error reports the held-back count
    await handler.on_error(bgws.MessageDropped("one more", b""))
    assert any("40 more like it" in r.getMessage() for r in caplog.records)
