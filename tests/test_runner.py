"""The thread runner: a service driven by blocking calls from synchronous code."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

import bgws
from bgws.runner import ServiceThread, start_in_thread
from bgws.testing import Reply, Server

from .conftest import fast_config

_T = TypeVar("_T")
CONNECTED = bgws.State.CONNECTED


class ThreadedServer:
    """A kit :class:`Server` on a thread and loop of its own, for plain (synchronous) tests."""

    def __init__(self, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kit-server")
        self._thread.start()
        self.server: Server = self.run(self._open(options))

    @staticmethod
    async def _open(options: dict[str, Any]) -> Server:
        server = Server(**options)
        await server.start()
        return server

    @property
    def url(self) -> str:
        return self.server.url

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def call(self, func: Callable[[], _T]) -> _T:
        """Call a plain function on the server's loop (the server is not thread-safe)."""

        async def wrapper() -> _T:
            return func()

        return self.run(wrapper())

    def close(self) -> None:
        try:
            self.run(self.server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
        self.server.raise_errors()


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    threaded = ThreadedServer()
    yield threaded
    threaded.close()


def service_for(url: str, **overrides: Any) -> bgws.Service:
    return bgws.Service(fast_config(url, **overrides))


def test_blocking_send_arrives(server: ThreadedServer) -> None:
    """A send() from the calling thread reaches the server with the id it returned."""
    with start_in_thread(service_for(server.url)) as handle:
        msg_id = handle.send({"type": "note", "n": 1})
        received = server.run(server.server.wait_for_messages(1))
    assert [m.json() for m in received] == [{"type": "note", "n": 1, "id": msg_id}]


def test_sends_from_many_threads_all_arrive(server: ThreadedServer) -> None:
    """Concurrent blocking sends from several threads each arrive once."""
    with start_in_thread(service_for(server.url)) as handle, ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda n: handle.send({"type": "n", "n": n}), range(40)))
        server.run(server.server.wait_for_messages(40))
    received = [m.json() for m in server.server.messages]
    assert sorted(m["n"] for m in received) == list(range(40))
    assert sorted(m["id"] for m in received) == sorted(ids)


def test_request_gets_its_reply(server: ThreadedServer) -> None:
    """A blocking request() returns the server's reply to it."""
    server.server.reply = Reply(body=lambda request: {"double": request["n"] * 2})
    with start_in_thread(service_for(server.url)) as handle:
        reply = handle.request({"type": "calc", "n": 21}, timeout=5)
    assert reply.type == "reply"
    assert reply.data["double"] == 42


def test_subscribe_and_unsubscribe(server: ThreadedServer) -> None:
    """subscribe() sends and keeps the subscription; unsubscribe() forgets it."""
    with start_in_thread(service_for(server.url)) as handle:
        handle.wait_for(CONNECTED, 5)
        key = handle.subscribe({"type": "subscribe", "channel": "ticks"})
        server.run(server.server.wait_for_messages(1))
        assert handle.service.subscriptions == [key]
        assert handle.unsubscribe(key=key) is True
        assert handle.unsubscribe(key=key) is False
    assert server.server.messages[0].json() == {"type": "subscribe", "channel": "ticks"}


def test_handlers_run_on_the_service_thread(server: ThreadedServer) -> None:
    """Plain and async handlers both run on the handle's thread, not the caller's."""
    service = service_for(server.url)
    seen: dict[str, threading.Thread] = {}
    done = threading.Event()

    @service.on("tick")
    def plain(message: bgws.Message) -> None:
        seen["plain"] = threading.current_thread()

    @service.on("tick")
    async def coro(message: bgws.Message) -> None:
        seen["async"] = threading.current_thread()
        done.set()

    with start_in_thread(service, name="bgws-handlers") as handle:
        server.run(server.server.wait_for_connections(1))
        server.call(lambda: server.server.push({"type": "tick"}))
        assert done.wait(5)
    assert seen == {"plain": handle.thread, "async": handle.thread}
    assert handle.thread.name == "bgws-handlers"
    assert handle.thread is not threading.current_thread()


def test_blocking_call_from_a_handler_raises(server: ThreadedServer) -> None:
    """A handle method called from a handler raises ServiceError instead of deadlocking."""
    service = service_for(server.url)
    handles: list[ServiceThread] = []
    caught: list[BaseException] = []
    done = threading.Event()

    @service.on("tick")
    def reenter(message: bgws.Message) -> None:
        for call in (lambda: handles[0].send({"type": "x"}), lambda: handles[0].stop()):
            try:
                call()
            except BaseException as exc:
                caught.append(exc)
        done.set()

    with start_in_thread(service) as handle:
        handles.append(handle)
        server.run(server.server.wait_for_connections(1))
        server.call(lambda: server.server.push({"type": "tick"}))
        assert done.wait(5)
        assert handle.is_running
        handle.wait_for(CONNECTED, 5)  # the service carries on
    assert [type(e) for e in caught] == [bgws.ServiceError, bgws.ServiceError]
    assert "deadlock" in str(caught[0])


def test_with_block_stops_on_exit(server: ThreadedServer) -> None:
    """Leaving ``with`` closes the link cleanly, ends the loop and joins the thread."""
    with start_in_thread(service_for(server.url)) as handle:
        handle.wait_for(CONNECTED, 5)
        assert handle.stats.state is CONNECTED
    closed = server.run(server.server.wait_for_disconnects(1))
    assert closed[0].close_code == 1000
    assert handle.state is bgws.State.CLOSED
    assert not handle.thread.is_alive()
    assert not handle.is_running
    assert handle.loop.is_closed()
    with pytest.raises(bgws.ServiceClosed):
        handle.send({"type": "late"})
    handle.stop()  # a second stop is harmless


def test_waiting_request_ends_with_service_closed(server: ThreadedServer) -> None:
    """A request still waiting for its reply when the service stops raises ServiceClosed."""
    handle = start_in_thread(service_for(server.url))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(handle.request, {"type": "unanswered"}, timeout=30)
        server.run(server.server.wait_for_messages(1))
        handle.stop()
        with pytest.raises(bgws.ServiceClosed):
            pending.result(5)


def test_failed_service_keeps_its_thread_and_can_reconnect(server: ThreadedServer) -> None:
    """A fatal refusal ends in FAILED; the thread stays up and connect() tries again."""
    server.call(lambda: server.server.refuse_next(1, 404))
    with start_in_thread(service_for(server.url)) as handle:
        with pytest.raises(bgws.ServiceClosed):
            handle.wait_for(CONNECTED, 5)
        assert handle.state is bgws.State.FAILED
        assert handle.is_running
        handle.connect()
        handle.wait_for(CONNECTED, 5)


def test_thread_ends_when_the_service_stops_on_its_loop(server: ThreadedServer) -> None:
    """A service stopped from its own loop ends the handle's thread as well."""
    service = service_for(server.url)
    handle = start_in_thread(service)
    handle.wait_for(CONNECTED, 5)
    asyncio.run_coroutine_threadsafe(service.stop(), handle.loop).result(5)
    handle.thread.join(5)
    assert not handle.thread.is_alive()
    assert not handle.is_running
    with pytest.raises(bgws.ServiceClosed):
        handle.send({"type": "late"})


def test_start_error_is_raised_in_the_caller(tmp_path: Path) -> None:
    """A corrupt store fails start_in_thread() with StoreError, and no thread is left."""
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    service = service_for("ws://127.0.0.1:9/", storage="sqlite", storage_path=str(path))
    with pytest.raises(bgws.StoreError, match="not a valid bgws store"):
        start_in_thread(service, name="bgws-corrupt")
    assert "bgws-corrupt" not in [t.name for t in threading.enumerate()]
    assert service.state is bgws.State.CLOSED


def test_start_timeout_cancels_the_start() -> None:
    """A start that takes longer than ``timeout`` raises TimeoutError and leaves no thread."""

    class Hang(bgws.Plugin):
        async def initialize(self) -> None:  # type: ignore[override]
            await asyncio.Event().wait()

    service = bgws.Service(fast_config("ws://127.0.0.1:9/"), plugins=[Hang()])
    with pytest.raises(TimeoutError, match="did not start within"):
        start_in_thread(service, name="bgws-hang", timeout=0.05)
    assert "bgws-hang" not in [t.name for t in threading.enumerate()]
    assert service.state is bgws.State.CLOSED


def test_started_service_cannot_start_in_a_thread(server: ThreadedServer) -> None:
    """start_in_thread() refuses a service that has already started."""
    service = service_for(server.url)
    with start_in_thread(service) as handle:
        handle.wait_for(CONNECTED, 5)
        with pytest.raises(bgws.ServiceError, match="starts once"):
            start_in_thread(service)
        assert handle.is_running


async def test_starts_from_inside_a_running_loop(bgws_server: Server) -> None:
    """As in Jupyter: started from a thread whose loop is running, the service still works."""
    handle = start_in_thread(service_for(bgws_server.url))
    try:
        await asyncio.to_thread(handle.wait_for, CONNECTED, 5)
        msg_id = await asyncio.to_thread(handle.send, {"type": "cell"})
        received = await bgws_server.wait_for_messages(1)
        assert received[0].json()["id"] == msg_id
        assert handle.loop is not asyncio.get_running_loop()
    finally:
        await asyncio.to_thread(handle.stop)
    assert not handle.thread.is_alive()


EXIT_SCRIPT = """
import sys
import bgws
from bgws.runner import start_in_thread

class Life(bgws.LifecycleHandler):
    async def on_service_stopped(self) -> None:
        print("stopped", flush=True)

config = bgws.Config(app_name="exit", url=sys.argv[1], storage="sqlite", storage_path=sys.argv[2])
handle = start_in_thread(bgws.Service(config, lifecycle_handler=Life()))
handle.wait_for(bgws.State.CONNECTED, 5)
handle.send({"type": "bye"})
print("exiting", flush=True)
"""


async def test_running_handle_is_stopped_at_interpreter_exit(
    bgws_server: Server, tmp_path: Path
) -> None:
    """A script that never calls stop() still flushes, closes cleanly and exits."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        EXIT_SCRIPT,
        bgws_server.url,
        str(tmp_path / "exit.sqlite3"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["exiting", "stopped"]
    assert b"Traceback" not in err
    closed = await bgws_server.wait_for_disconnects(1)
    assert closed[0].close_code == 1000
    assert [m.json()["type"] for m in bgws_server.messages] == ["bye"]


def test_a_handle_built_by_hand_launches_with_its_connection_data(server: ThreadedServer) -> None:
    """ServiceThread(connection_data=...) and launch() are public: no private reaching needed."""
    seen: list[Any] = []

    class Auth(bgws.AuthHandler):
        async def get_auth_data(self, connection_data: Any = None) -> dict[str, str]:
            seen.append(connection_data)
            return {}

    service = bgws.Service(fast_config(server.url), auth_handler=Auth())
    handle = ServiceThread(service, connection_data={"room": "a"})
    handle.launch(5)
    try:
        handle.wait_for(CONNECTED, 5)
        assert handle.is_running
        with pytest.raises(RuntimeError):
            handle.launch(5)  # a handle is launched once
    finally:
        handle.stop()
    assert seen[0] == {"room": "a"}
