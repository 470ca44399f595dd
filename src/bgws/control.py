"""The daemon's control socket: a JSON-lines protocol over a local socket.

A client writes one JSON object per line, ``{"id": 1, "op": "send", ...}``, and reads one
reply per request, ``{"id": 1, "ok": true, "result": ...}`` or ``{"id": 1, "ok": false,
"error": {"type": ..., "message": ..., "usage": ...}}``; replies may come out of order, matched
by ``id``. ``tail`` and ``stop`` turn the connection into a stream of ``{"event": ...}`` lines.
``docs/control-protocol.md`` describes every request and reply.

On POSIX the socket is a Unix socket, mode 0600, in a directory only its owner can enter
(0700). On Windows it is a loopback TCP port, and the socket "path" is a token file (readable
by its owner only) holding the port and a random token that every connection presents first.

A ``tail`` client gets incoming messages through a bounded queue of its own: a client that
reads too slowly loses messages (a ``dropped`` event counts them), and never slows the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from ._controlsocket import (
    PROTOCOL_VERSION,
    BadRequest,
    TailEnd,
    TailFeed,
    bind_unix,
    check_private_dir,
    claim_path,
    decode_request,
    default_socket_path,
    get_field,
    message_dict,
    message_field,
    write_token_file,
)
from ._redact import redact_text
from .errors import BgwsError
from .machine import State
from .manager import ServiceManager
from .service import Service

__all__ = ["DEFAULT_TAIL_BUFFER", "ControlServer"]

DEFAULT_TAIL_BUFFER = 1000
"""Messages a ``tail`` client may fall behind by before it loses some."""

_log = logging.getLogger("bgws.control")
_encode = msgspec.json.encode
_MAX_REQUESTS_PER_CLIENT = 32
_MAX_TAIL_BUFFER = 100_000
_PROGRESS_EVERY = 0.25
_CLOSE_GRACE = 1.0
_ENDED = (State.CLOSED, State.FAILED)

StopCallback = Callable[[float | None], None]
"""Asks the daemon to stop (with a drain deadline in seconds, or its default)."""


class _Client:
    """One connection: its writer, its running requests, and what it is used for."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.mode: Literal["requests", "tail", "stop"] = "requests"
        self.slots = asyncio.Semaphore(_MAX_REQUESTS_PER_CLIENT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.task = asyncio.current_task()

    def send(self, obj: Mapping[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(_encode(obj) + b"\n")

    async def flush(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def reply(self, rid: Any, result: Any) -> None:
        self.send({"id": rid, "ok": True, "result": result})

    def fail(self, rid: Any, kind: str, message: str, *, usage: bool = False) -> None:
        error = {"type": kind, "message": message, "usage": usage}
        self.send({"id": rid, "ok": False, "error": error})


class ControlServer:
    """Serves the control protocol for the services of a :class:`~bgws.ServiceManager`.

    Args:
        manager: the services, by name.
        path: the socket (on Windows: the token file); default
            :func:`bgws.local.default_socket_path`.
        on_stop: called with the drain deadline when a client asks the whole daemon to stop.
        tail_buffer: the default bound of each tail client's queue.
        transport: ``"unix"`` (the default on POSIX) or ``"tcp"`` (loopback with a token
            file; the default on Windows).
    """

    def __init__(
        self,
        manager: ServiceManager,
        path: str | os.PathLike[str] | None = None,
        *,
        on_stop: StopCallback,
        tail_buffer: int = DEFAULT_TAIL_BUFFER,
        transport: Literal["unix", "tcp"] | None = None,
    ) -> None:
        self.manager = manager
        self.path = Path(path) if path is not None else default_socket_path()
        self._strict = path is None  # bgws's own directory: created and kept private
        self.transport = transport or ("tcp" if sys.platform == "win32" else "unix")
        self.started_at = time.time()
        self.stopping = False
        self._on_stop = on_stop
        self._tail_buffer = tail_buffer
        self._server: asyncio.Server | None = None
        self._token: str | None = None
        self._inode: int | None = None
        self._clients: set[_Client] = set()
        self._tails: set[TailFeed] = set()
        self._finished = asyncio.Event()
        self._secrets = [s for name in manager for s in manager[name].config.secret_values()]
        largest = max((manager[name].config.max_message_size for name in manager), default=0)
        self._limit = max(4 * largest + 65536, 1 << 20)
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "hello": self._hello,
            "status": self._status,
            "send": self._send,
            "request": self._request,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "reconnect": self._reconnect,
            "outbox": self._outbox,
        }

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the socket (or the loopback port and its token file).

        Raises:
            ControlError: another daemon listens there, the path is taken by something else,
                is too long, or its directory is not private.
        """
        check_private_dir(self.path.parent, strict=self._strict)
        await claim_path(self.path, self.transport)
        if self.transport == "unix":
            sock, self._inode = bind_unix(self.path)
            self._server = await asyncio.start_unix_server(
                self._serve_client, sock=sock, limit=self._limit
            )
        else:
            self._server = await asyncio.start_server(
                self._serve_client, "127.0.0.1", 0, limit=self._limit
            )
            port = int(self._server.sockets[0].getsockname()[1])
            self._token = secrets.token_hex(32)
            self._inode = write_token_file(self.path, port, self._token)
        self.started_at = time.time()
        _log.debug("control socket listening on %s", self.path)

    async def close(self) -> None:
        """Send the last events (``stopped``, ``end``), close the connections, remove the socket."""
        if self._server is None:
            return
        self.stopping = True
        self._finished.set()
        for feed in list(self._tails):
            feed.end("the daemon stopped")
        for client in list(self._clients):
            if client.mode == "requests":
                client.writer.close()
        waiting = [c.task for c in self._clients if c.task is not None and not c.task.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=_CLOSE_GRACE)
        for client in list(self._clients):
            client.writer.close()
            if client.task is not None:
                client.task.cancel()
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)
        server, self._server = self._server, None
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_GRACE):
                await server.wait_closed()
        self._remove_path()

    def _remove_path(self) -> None:
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    # -- one connection ---------------------------------------------------------------------

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        client = _Client(writer)
        self._clients.add(client)
        try:
            await self._converse(client, reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            # Requests already read are answered, even after the client's EOF: a client may
            # write its requests and close its side (a cancelled wait cancels them too).
            await asyncio.gather(*list(client.tasks), return_exceptions=True)
            self._clients.discard(client)
            with contextlib.suppress(ConnectionError):
                await client.flush()
            writer.close()

    async def _converse(self, client: _Client, reader: asyncio.StreamReader) -> None:
        trusted = self._token is None
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                client.fail(None, "BadRequest", f"a request is longer than {self._limit} bytes")
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                request = decode_request(line)
            except BadRequest as exc:
                client.fail(None, exc.kind, str(exc), usage=True)
                continue
            rid, op = request.get("id"), request.get("op")
            if not trusted:
                token = request.get("token")
                if op != "hello" or not isinstance(token, str) or self._token is None:
                    client.fail(rid, "Unauthorized", "present the token first (op 'hello')")
                    return
                if not hmac.compare_digest(token.encode(), self._token.encode()):
                    client.fail(rid, "Unauthorized", "wrong token")
                    return
                trusted = True
            if op == "tail":
                await self._tail(client, reader, rid, request)
                return
            if op == "stop":
                await self._stop(client, rid, request)
                return
            await client.slots.acquire()
            task = asyncio.create_task(self._answer(client, rid, op, request))
            client.tasks.add(task)
            task.add_done_callback(functools.partial(_finished, client))

    async def _answer(self, client: _Client, rid: Any, op: Any, request: dict[str, Any]) -> None:
        try:
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                known = ", ".join([*self._ops, "tail", "stop"])
                raise BadRequest(f"unknown op {op!r}; the ops are: {known}")
            result = await handler(request)
        except BadRequest as exc:
            client.fail(rid, exc.kind, str(exc), usage=True)
        except (BgwsError, TypeError) as exc:
            kind = type(exc).__name__ if isinstance(exc, BgwsError) else "BadRequest"
            client.fail(rid, kind, self._redact(exc), usage=not isinstance(exc, BgwsError))
        except Exception as exc:
            _log.exception("control request %r failed", op)
            client.fail(rid, "InternalError", f"{type(exc).__name__}: {self._redact(exc)}")
        else:
            client.reply(rid, result)
        await client.flush()

    def _redact(self, exc: BaseException | None) -> str:
        return redact_text(str(exc), self._secrets)

    def _redacted(self, status: dict[str, Any]) -> dict[str, Any]:
        """A status with the secrets of every service hidden from its error texts."""
        holders = [(status, "error"), (status["stats"], "last_error")]
        if status.get("last_error"):
            holders.append((status["last_error"], "error"))
        for holder, key in holders:
            if holder.get(key):
                holder[key] = redact_text(holder[key], self._secrets)
        if status.get("plugins"):
            status["plugins"] = _redact_all(status["plugins"], self._secrets)
        return status

    # -- the ops ----------------------------------------------------------------------------

    async def _hello(self, request: dict[str, Any]) -> dict[str, Any]:
        import bgws  # at call time: bgws may still be importing this module

        return {
            "protocol": PROTOCOL_VERSION,
            "version": bgws.__version__,
            "pid": os.getpid(),
            "services": self.manager.names,
        }

    async def _status(self, request: dict[str, Any]) -> dict[str, Any]:
        names = self._select(request)
        statuses = self.manager.status()
        tails = [
            {"services": feed.services, "types": _sorted(feed.types), "lost": feed.lost}
            for feed in self._tails
        ]
        return {
            "daemon": {
                "pid": os.getpid(),
                "socket": os.fspath(self.path),
                "started_at": self.started_at,
                "uptime": time.time() - self.started_at,
                "stopping": self.stopping,
                "tails": tails,
            },
            "services": {
                name: self._redacted({**self.manager[name].status(), **statuses[name].to_dict()})
                for name in names
            },
        }

    async def _send(self, request: dict[str, Any]) -> dict[str, Any]:
        name, service = self._live(request)
        message = message_field(request)
        msg_id = await service.send(
            message,
            priority=get_field(request, "priority", int, 0),
            ttl=get_field(request, "ttl", float, None),
            wait_for_ack=get_field(request, "wait_for_ack", bool, False),
            timeout=get_field(request, "timeout", float, None),
        )
        stats = service.stats
        return {"service": name, "id": msg_id, "state": stats.state.name, "queued": stats.queued}

    async def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        name, service = self._live(request)
        message = message_field(request)
        if not isinstance(message, Mapping):
            raise BadRequest("a request's 'message' must be a JSON object")
        reply = await service.request(
            message,
            timeout=get_field(request, "timeout", float, None),
            priority=get_field(request, "priority", int, 0),
        )
        return {"service": name, "reply": message_dict(reply, service.config.codec)}

    async def _subscribe(self, request: dict[str, Any]) -> dict[str, Any]:
        name, service = self._live(request)
        key = await service.subscribe(
            message_field(request), key=get_field(request, "key", str, None)
        )
        return {"service": name, "key": key}

    async def _unsubscribe(self, request: dict[str, Any]) -> dict[str, Any]:
        name, service = self._live(request)
        message = message_field(request) if request.get("message") is not None else None
        key = get_field(request, "key", str, None)
        if message is None and key is None:
            raise BadRequest("unsubscribe needs a 'message' or a 'key'")
        removed = await service.unsubscribe(message, key=key)
        return {"service": name, "removed": removed}

    async def _reconnect(self, request: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self._select(request):
            service = self.manager[name]
            early = await service.reconnect_now()
            out[name] = {"reconnecting": early, "state": service.state.name}
        return {"services": out}

    async def _outbox(self, request: dict[str, Any]) -> dict[str, Any]:
        name, service = self._one(request)
        action = get_field(request, "action", str, "list")
        tools = service.outbox
        if action == "list":
            limit = get_field(request, "limit", int, None)
            items = [item.to_dict() for item in tools.list(limit)]
            return {"service": name, "depth": len(tools), "messages": items}
        if action == "show":
            ref = request.get("ref")
            if not isinstance(ref, int | str) or isinstance(ref, bool):
                raise BadRequest("'ref' (a message's seq or id) is missing")
            return {"service": name, "message": tools.show(ref).to_dict()}
        if action == "export":
            return {"service": name, "messages": list(tools.iter_export())}
        if action == "purge":
            refs = get_field(request, "refs", list, None)
            purged = tools.purge(refs, confirm=get_field(request, "confirm", bool, False))
            return {"service": name, "purged": purged, "depth": len(tools)}
        raise BadRequest(f"unknown outbox action {action!r}; try list, show, export or purge")

    # -- streams ----------------------------------------------------------------------------

    async def _tail(
        self, client: _Client, reader: asyncio.StreamReader, rid: Any, request: dict[str, Any]
    ) -> None:
        client.mode = "tail"
        try:
            names = self._select(request)
            types = get_field(request, "types", list, None)
            if types is not None and not all(isinstance(t, str) for t in types):
                raise BadRequest("'types' must be a list of strings")
            size = get_field(request, "buffer", int, self._tail_buffer)
            if not 1 <= size <= _MAX_TAIL_BUFFER:
                raise BadRequest(f"'buffer' must be between 1 and {_MAX_TAIL_BUFFER}")
        except BadRequest as exc:
            client.fail(rid, exc.kind, str(exc), usage=True)
            return
        feed = TailFeed(size, None if types is None else frozenset(types), names)
        if self.stopping:
            feed.end("the daemon is stopping")
        removers = [self.manager[name].tap(functools.partial(feed.put, name)) for name in names]
        self._tails.add(feed)
        client.reply(rid, {"services": names, "types": types, "buffer": size})
        codecs = {name: self.manager[name].config.codec for name in names}
        pump = asyncio.create_task(_pump(client, feed, codecs))
        hangup = asyncio.create_task(_until_eof(reader))
        try:
            await asyncio.wait({pump, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for remove in removers:
                remove()
            self._tails.discard(feed)
            for task in (pump, hangup):
                task.cancel()
            await asyncio.gather(pump, hangup, return_exceptions=True)

    async def _stop(self, client: _Client, rid: Any, request: dict[str, Any]) -> None:
        client.mode = "stop"
        try:
            timeout = get_field(request, "timeout", float, None)
            if timeout is not None and timeout < 0:
                raise BadRequest("'timeout' must not be negative")
            names = self._select(request)
        except BadRequest as exc:
            client.fail(rid, exc.kind, str(exc), usage=True)
            return
        client.reply(rid, {"stopping": names})
        await client.flush()
        if request.get("service") is None:
            if not self.stopping:
                _log.info("stop requested over the control socket")
                self.stopping = True
                self._on_stop(timeout)
            done: Awaitable[Any] = self._finished.wait()
        else:
            done = self.manager[names[0]].stop(timeout)
        waiting = asyncio.ensure_future(done)
        try:
            while True:
                finished, _ = await asyncio.wait({waiting}, timeout=_PROGRESS_EVERY)
                if finished:
                    break
                client.send({"event": "draining", "services": self._progress(names)})
                await client.flush()
            if waiting.exception() is not None:
                _log.error("stopping %s: %s", ", ".join(names), self._redact(waiting.exception()))
        finally:
            waiting.cancel()
        client.send({"event": "stopped", "services": self._progress(names)})
        if not self.stopping and all(self.manager[n].state in _ENDED for n in self.manager):
            _log.info("every service has stopped; stopping the daemon")
            self.stopping = True
            self._on_stop(timeout)

    def _progress(self, names: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            stats = self.manager[name].stats
            out[name] = {
                "state": stats.state.name,
                "queued": stats.queued,
                "in_flight": stats.in_flight,
                "dropped": stats.dropped,
            }
        return out

    # -- choosing a service -----------------------------------------------------------------

    def _select(self, request: dict[str, Any]) -> list[str]:
        """The service the request names, or every service when it names none."""
        if request.get("service") is None:
            return self.manager.names
        return [self._one(request)[0]]

    def _one(self, request: dict[str, Any]) -> tuple[str, Service]:
        names = self.manager.names
        name = request.get("service")
        if name is None:
            if len(names) != 1:
                raise BadRequest(
                    f"this daemon runs {len(names)} services ({', '.join(names)}); name one "
                    "(--service on the command line, 'service' in a request)",
                    "UnknownService",
                )
            name = names[0]
        if not isinstance(name, str):
            raise BadRequest("'service' must be a string")
        if name not in self.manager:
            raise BadRequest(
                f"no service named {name!r} here (services: {', '.join(names)})",
                "UnknownService",
            )
        return name, self.manager[name]

    def _live(self, request: dict[str, Any]) -> tuple[str, Service]:
        """Like :meth:`_one`, for what needs the service running here (send, request...)."""
        name, service = self._one(request)
        elsewhere = self.manager.elsewhere(name)
        if elsewhere is not None:  # a fleet member that does not hold it
            raise BadRequest(elsewhere, "NotHere")
        return name, service


# -- helpers --------------------------------------------------------------------------------


async def _pump(client: _Client, feed: TailFeed, codecs: Mapping[str, str]) -> None:
    """Write the feed to the client, one line at a time; only this task waits for it."""
    while True:
        item = await feed.get()
        if isinstance(item, TailEnd):
            client.send({"event": "end", "reason": item.reason})
            await client.flush()
            return
        if isinstance(item, int):
            client.send({"event": "dropped", "count": item})
        else:
            name, message = item
            event = {"event": "message", "service": name}
            event.update(message_dict(message, codecs[name]))
            client.send(event)
        await client.writer.drain()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def _finished(client: _Client, task: asyncio.Task[None]) -> None:
    client.tasks.discard(task)
    client.slots.release()


def _redact_all(value: Any, secrets: list[str]) -> Any:
    """``value`` (plain JSON types) with the secrets hidden from every string in it."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_all(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_all(v, secrets) for v in value]
    return value


def _sorted(types: frozenset[str] | None) -> list[str] | None:
    return None if types is None else sorted(types)
