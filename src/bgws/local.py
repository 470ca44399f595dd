"""Talk to a running ``bgws run`` daemon from any process: :func:`connect_local`.

A short-lived process (a cron job, a web request, a shell script) sends through the daemon's
connection instead of opening its own::

    async with bgws.connect_local() as daemon:
        await daemon.send({"type": "chat_message", "text": "hi"})   # queued if offline
        print((await daemon.status())["services"]["chat"]["state"])
        async with await daemon.tail(types=["chat_message"]) as tail:
            async for event in tail:
                print(event["data"])

From synchronous code, :func:`connect_local_sync` gives the same calls, blocking.

The daemon is found at ``path``, else at ``$BGWS_SOCKET``, else at
:func:`default_socket_path`. The protocol is in ``docs/control-protocol.md``.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Unpack

import msgspec

from ._controlsocket import (
    ControlError,
    DaemonNotRunning,
    default_socket_path,
    open_connection,
    read_reply,
    reply_result,
    socket_path,
)
from ._engine.delivery import SendArgs
from .errors import (
    BgwsError,
)

__all__ = [
    "ControlError",
    "DaemonNotRunning",
    "LocalClient",
    "SyncLocalClient",
    "SyncTail",
    "Tail",
    "connect_local",
    "connect_local_sync",
    "default_socket_path",
]

_LIMIT = 64 << 20  # the longest line a client accepts (a tail event carries a whole message)
_encode = msgspec.json.encode


# -- the client -------------------------------------------------------------------------------


class LocalClient:
    """A connection to the daemon's control socket. Made by :func:`connect_local`.

    Calls may run concurrently; each waits for its own reply.

    Attributes:
        path: the socket (or token file).
        services: the daemon's services, by name, when the connection opened.
        version: the daemon's bgws version.
        pid: the daemon's process id.
    """

    def __init__(
        self,
        path: Path,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hello: Mapping[str, Any],
        *,
        timeout: float,
    ) -> None:
        self.path = path
        self.services: list[str] = list(hello.get("services", []))
        self.version: str = str(hello.get("version", ""))
        self.pid: int = int(hello.get("pid", 0))
        self._timeout = timeout
        self._reader = reader
        self._writer = writer
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reading = asyncio.create_task(self._read())

    async def call(self, op: str, *, wait: float | None = 0.0, **fields: Any) -> Any:
        """Send one request and return its result (fields that are ``None`` are left out).

        Args:
            op: the operation (see ``docs/control-protocol.md``).
            wait: how long to wait for the reply beyond the client's timeout, for requests
                that wait at the daemon; ``None``: as long as the daemon takes.
            **fields: the request's fields.

        Raises:
            ControlError: the daemon refused the request, or the connection is gone.
            BgwsError: what the service raised in the daemon, as itself (``QueueFull``,
                ``ServiceClosed``, ``ServiceSuspended``, ``RequestTimeout``, ``AckTimeout``,
                ``MessageTooBig``, ``StoreError``).
        """
        if self._reading.done():
            raise DaemonNotRunning("the connection to the daemon is closed")
        rid = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        request = {"id": rid, "op": op, **{k: v for k, v in fields.items() if v is not None}}
        try:
            self._writer.write(_encode(request) + b"\n")
            await self._writer.drain()
            async with asyncio.timeout(None if wait is None else self._timeout + wait):
                return await future
        except TimeoutError:
            raise ControlError(f"no reply from the daemon to {op!r} in time") from None
        except ConnectionError as exc:
            raise DaemonNotRunning(f"the daemon closed the connection: {exc}") from exc
        finally:
            self._pending.pop(rid, None)

    async def status(self, service: str | None = None) -> dict[str, Any]:
        """The daemon's and its services' status (``service``: only that one)."""
        result: dict[str, Any] = await self.call("status", service=service)
        return result

    async def send(
        self,
        message: Mapping[str, Any] | str | bytes,
        *,
        service: str | None = None,
        **options: Unpack[SendArgs],
    ) -> dict[str, Any]:
        """Send through the daemon's service (queued there if it is offline).

        The options are those of :meth:`bgws.Service.send`; one left out takes the service's
        default.

        Returns:
            ``{"service", "id", "state", "queued"}``: the service, the message id, its state
            and how many messages its outbox holds now.
        """
        wait_for_ack = options.get("wait_for_ack")
        timeout = options.get("timeout")
        result: dict[str, Any] = await self.call(
            "send",
            wait=timeout if wait_for_ack else 0.0,
            service=service,
            priority=options.get("priority"),
            ttl=options.get("ttl"),
            wait_for_ack=wait_for_ack,
            timeout=timeout,
            **_message_fields(message),
        )
        return result

    async def request(
        self,
        message: Mapping[str, Any],
        *,
        service: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send a request through the daemon and return the reply (see :func:`message_dict`)."""
        result = await self.call(
            "request", wait=timeout, service=service, timeout=timeout, message=dict(message)
        )
        reply: dict[str, Any] = result["reply"]
        return reply

    async def subscribe(
        self,
        message: Mapping[str, Any] | str | bytes,
        *,
        service: str | None = None,
        key: str | None = None,
    ) -> str:
        """Keep a subscription in the daemon's service; returns its key."""
        result = await self.call("subscribe", service=service, key=key, **_message_fields(message))
        return str(result["key"])

    async def unsubscribe(
        self,
        message: Mapping[str, Any] | str | bytes | None = None,
        *,
        service: str | None = None,
        key: str | None = None,
    ) -> bool:
        """Forget a subscription; returns whether it was kept."""
        fields = _message_fields(message) if message is not None else {}
        result = await self.call("unsubscribe", service=service, key=key, **fields)
        return bool(result["removed"])

    async def tail(
        self,
        *,
        service: str | None = None,
        types: list[str] | None = None,
        buffer: int | None = None,
    ) -> Tail:
        """Stream incoming messages, on a connection of its own.

        Args:
            service: only this service's messages (default: every service's).
            types: only messages of these types.
            buffer: how many messages the daemon keeps for this client before it drops some.

        Returns:
            The open stream, once the daemon has started it.
        """
        reader, writer, _ = await open_connection(self.path, self._timeout)
        request = {"id": 1, "op": "tail", "service": service, "types": types, "buffer": buffer}
        writer.write(_encode({k: v for k, v in request.items() if v is not None}) + b"\n")
        try:
            async with asyncio.timeout(self._timeout):
                result = reply_result(await read_reply(reader))
        except BaseException:
            writer.close()
            raise
        return Tail(reader, writer, result)

    async def stop(
        self,
        *,
        service: str | None = None,
        timeout: float | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Stop the daemon (or only ``service``), draining within ``timeout`` seconds.

        Waits until it has stopped; this connection is closed then.

        Args:
            service: stop only this service; the daemon goes on with the others.
            timeout: the drain deadline (default: each service's ``close_timeout``).
            progress: called with each ``draining`` event's ``services``.

        Returns:
            The ``stopped`` event's ``services``: per service its ``state``, the messages
            ``queued`` and ``in_flight`` (kept in the store when it is SQLite) and ``dropped``.
        """
        await self.call("stop", service=service, timeout=timeout)
        while True:
            event = await self._events.get()
            if event is None:
                raise DaemonNotRunning("the daemon closed the connection before it had stopped")
            if event.get("event") == "draining" and progress is not None:
                progress(event["services"])
            elif event.get("event") == "stopped":
                await self.aclose()
                services: dict[str, Any] = event["services"]
                return services

    async def aclose(self) -> None:
        """Close the connection."""
        self._writer.close()
        self._reading.cancel()
        await asyncio.gather(self._reading, return_exceptions=True)

    async def __aenter__(self) -> LocalClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _read(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                data = msgspec.json.decode(line)
                if not isinstance(data, dict):
                    continue
                if "event" in data:
                    self._events.put_nowait(data)
                    continue
                rid = data.get("id")
                future = self._pending.get(rid) if isinstance(rid, int) else None
                if future is not None and not future.done():
                    try:
                        future.set_result(reply_result(data))
                    except BgwsError as exc:
                        future.set_exception(exc)
        except (ConnectionError, ValueError, msgspec.DecodeError):
            pass
        finally:
            self._events.put_nowait(None)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(DaemonNotRunning("the daemon closed the connection"))


class Tail:
    """An open ``tail`` stream: ``async for event in tail`` yields its events.

    Events are ``{"event": "message", "service", "type", "id", "received_at", "format",
    "data"}`` and ``{"event": "dropped", "count"}`` (messages lost because this client read
    too slowly). Iteration ends when the daemon stops (:attr:`end_reason` says why).

    Attributes:
        services: the services it follows.
        types: the message types it follows (``None``: all).
        end_reason: why the daemon ended the stream, once it has.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, result: Any
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.services: list[str] = list(result.get("services", []))
        self.types: list[str] | None = result.get("types")
        self.end_reason: str | None = None

    def __aiter__(self) -> Tail:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.end_reason is not None:
            raise StopAsyncIteration
        try:
            line = await self._reader.readline()
        except (ConnectionError, ValueError):
            line = b""
        if not line:
            self.end_reason = "the daemon closed the connection"
            raise StopAsyncIteration
        event: dict[str, Any] = msgspec.json.decode(line)
        if event.get("event") == "end":
            self.end_reason = str(event.get("reason"))
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Stop following."""
        self._writer.close()
        if self.end_reason is None:
            self.end_reason = "closed"

    async def __aenter__(self) -> Tail:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Connecting:
    """What :func:`connect_local` returns: await it, or use it with ``async with``."""

    def __init__(self, path: Path, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._client: LocalClient | None = None

    async def _connect(self) -> LocalClient:
        reader, writer, hello = await open_connection(self._path, self._timeout)
        return LocalClient(self._path, reader, writer, hello, timeout=self._timeout)

    def __await__(self) -> Generator[Any, None, LocalClient]:
        return self._connect().__await__()

    async def __aenter__(self) -> LocalClient:
        self._client = await self._connect()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()


def connect_local(
    path: str | os.PathLike[str] | None = None, *, timeout: float = 10.0
) -> _Connecting:
    """Connect to the daemon's control socket.

    ``client = await connect_local()`` or ``async with connect_local() as client:``.

    Args:
        path: the socket (on Windows the token file); default ``$BGWS_SOCKET``, else
            :func:`default_socket_path`.
        timeout: seconds to wait for the connection and for each reply (a request's own
            timeout is added to it).

    Returns:
        An awaitable async context manager giving a :class:`LocalClient`.

    Raises:
        DaemonNotRunning: no daemon listens there.
        ControlError: the path is not a control socket, or the daemon refused the client.
    """
    return _Connecting(socket_path(path), timeout)


def _message_fields(message: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    if isinstance(message, bytes):
        return {"message": base64.b64encode(message).decode(), "encoding": "base64"}
    if isinstance(message, str):
        return {"message": message}
    return {"message": dict(message)}


# -- the blocking client ----------------------------------------------------------------------


class SyncLocalClient:
    """:class:`LocalClient` for synchronous code: the same calls, blocking.

    It runs its own event loop; use it from one thread at a time. Made by
    :func:`connect_local_sync`; ``with`` closes it.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 10.0):
        self._runner = asyncio.Runner()
        try:
            connecting = _Connecting(socket_path(path), timeout)
            self._client: LocalClient = self._runner.run(connecting._connect())
        except BaseException:
            self._runner.close()
            raise
        self.services = self._client.services
        self.path = self._client.path

    def status(self, service: str | None = None) -> dict[str, Any]:
        """See :meth:`LocalClient.status`."""
        return self._runner.run(self._client.status(service))

    def call(self, op: str, **fields: Any) -> Any:
        """See :meth:`LocalClient.call`."""
        return self._runner.run(self._client.call(op, **fields))

    def send(
        self,
        message: Mapping[str, Any] | str | bytes,
        *,
        service: str | None = None,
        **options: Unpack[SendArgs],
    ) -> dict[str, Any]:
        """See :meth:`LocalClient.send`."""
        return self._runner.run(self._client.send(message, service=service, **options))

    def request(self, message: Mapping[str, Any], **options: Any) -> dict[str, Any]:
        """See :meth:`LocalClient.request`."""
        return self._runner.run(self._client.request(message, **options))

    def tail(self, **options: Any) -> SyncTail:
        """See :meth:`LocalClient.tail`; iterate over the result."""
        return SyncTail(self._runner, self._runner.run(self._client.tail(**options)))

    def stop(self, **options: Any) -> dict[str, Any]:
        """See :meth:`LocalClient.stop`."""
        return self._runner.run(self._client.stop(**options))

    def close(self) -> None:
        """Close the connection and the loop."""
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncLocalClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncTail:
    """A :class:`Tail` for synchronous code: ``for event in tail``."""

    def __init__(self, runner: asyncio.Runner, tail: Tail) -> None:
        self._runner = runner
        self._tail = tail
        self.services = tail.services
        self.types = tail.types

    @property
    def end_reason(self) -> str | None:
        """Why the daemon ended the stream, once it has."""
        return self._tail.end_reason

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                yield self._runner.run(self._tail.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Stop following."""
        self._runner.run(self._tail.aclose())


def connect_local_sync(
    path: str | os.PathLike[str] | None = None, *, timeout: float = 10.0
) -> SyncLocalClient:
    """Connect to the daemon from synchronous code (see :func:`connect_local`)."""
    return SyncLocalClient(path, timeout=timeout)
