"""The default hooks: the error handler logs on the service's logger, and a flood does not bury
the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

import bgws
from bgws.testing import Server
from bgws.transport import Transport

from .conftest import ServiceFactory


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


async def test_non_json_text_frame_is_one_warning_on_the_service_logger(
    transport: Transport, make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Echoed non-JSON text on a json service: one WARNING on bgws.<tag>, then DEBUG; no body."""
    seen = asyncio.Event()
    records: list[logging.LogRecord] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "DecodeError" in record.getMessage():
                records.append(record)
                if len(records) == 2:
                    seen.set()

    watch = Watch()
    logging.getLogger("bgws").addHandler(watch)
    caplog.set_level(logging.DEBUG, logger="bgws")
    try:
        async with Server(echo=True) as server:
            service = make_service(
                server.url, transport=transport, error_handler=bgws.ErrorHandler()
            )
            async with service:
                await service.wait_for(bgws.State.CONNECTED, timeout=5)
                await service.send("hello there")
                await service.send("hello again")
                await asyncio.wait_for(seen.wait(), 5)
                assert service.stats.decode_errors == 2
    finally:
        logging.getLogger("bgws").removeHandler(watch)
    assert [(r.name, r.levelno) for r in records] == [
        ("bgws.test", logging.WARNING),
        ("bgws.test", logging.DEBUG),
    ]
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG and "hello" in r.message]


async def test_default_error_handler_outside_a_service_logs_on_bgws(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Called by hand, the default handler logs on 'bgws'; a cause already shown is not repeated."""
    caplog.set_level(logging.WARNING, logger="bgws")
    error = bgws.MessageTooBig("too big: bad value")
    error.__cause__ = ValueError("bad value")
    await bgws.ErrorHandler().on_error(error)
    (record,) = caplog.records
    assert record.name == "bgws"
    assert record.getMessage().count("bad value") == 1
