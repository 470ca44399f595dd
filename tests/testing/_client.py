"""A small picows client for testing the test server: it records every frame it receives."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import picows
from picows import WSMsgType

__all__ = ["Client", "Frame", "connect"]

WAIT = 2.0
"""Seconds a test waits for something that should happen."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame the client received."""

    msg_type: Any
    payload: bytes
    fin: bool

    @property
    def text(self) -> str:
        return self.payload.decode()


class _Listener(picows.WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.disconnected = False
        self.changed = asyncio.Event()

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        self.frames.append(Frame(frame.msg_type, frame.get_payload_as_bytes(), bool(frame.fin)))
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            self.close_reason = frame.get_close_reason()
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        self._notify()

    def on_ws_disconnected(self, transport: Any) -> None:
        self.disconnected = True
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


@dataclasses.dataclass
class Client:
    """A connected picows client and what it received."""

    transport: Any
    listener: _Listener

    @property
    def frames(self) -> list[Frame]:
        return self.listener.frames

    def data_frames(self) -> list[Frame]:
        """Received TEXT, BINARY and CONTINUATION frames."""
        kinds = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)
        return [f for f in self.frames if f.msg_type in kinds]

    def frames_of(self, msg_type: Any) -> list[Frame]:
        return [f for f in self.frames if f.msg_type == msg_type]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until ``predicate()`` holds, re-checking after every frame or disconnect."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self.listener.changed.wait()

    async def wait_data(self, n: int, timeout: float = WAIT) -> list[Frame]:
        """Wait for at least ``n`` data frames and return them."""
        await self.wait_until(lambda: len(self.data_frames()) >= n, timeout)
        return self.data_frames()

    async def wait_disconnected(self, timeout: float = WAIT) -> None:
        await self.wait_until(lambda: self.listener.disconnected, timeout)

    def send_text(self, text: str, *, fin: bool = True) -> None:
        self.transport.send(WSMsgType.TEXT, text.encode(), fin)

    def send_json(self, *messages: Any) -> None:
        """Send each message as one JSON text frame."""
        for message in messages:
            self.transport.send(WSMsgType.TEXT, msgspec.json.encode(message), True)

    def received_json(self) -> list[Any]:
        """Every TEXT frame received, decoded as JSON."""
        return [msgspec.json.decode(f.payload) for f in self.frames_of(WSMsgType.TEXT)]

    async def wait_json(self, n: int, timeout: float = WAIT) -> list[Any]:
        """Wait for at least ``n`` TEXT frames and return them decoded."""
        await self.wait_until(lambda: len(self.frames_of(WSMsgType.TEXT)) >= n, timeout)
        return self.received_json()


@contextlib.asynccontextmanager
async def connect(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    """Connect a picows client; disconnect it and wait for the socket to close on exit."""
    transport, listener = await picows.ws_connect(_Listener, url, **kwargs)
    try:
        yield Client(transport, listener)
    finally:
        transport.disconnect()
        with contextlib.suppress(picows.WSError):
            await transport.wait_disconnected()
