"""Tests for bgws.control and bgws.local: the control protocol against an in-process daemon."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws.control import ControlServer
from bgws.daemon import Daemon
from bgws.local import ControlError, DaemonNotRunning, connect_local, connect_local_sync
from bgws.testing import Reply, Server

from .conftest import fast_config

TIMEOUT = 10.0


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """The kit server; it answers ``whoami`` requests."""
    async with Server(reply=Reply(request_type="whoami", body=lambda r: {"user": "ann"})) as s:
        yield s


class StartDaemon:
    """Starts in-process daemons (connected to their servers) and knows their run() tasks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tasks: dict[Daemon, asyncio.Task[int]] = {}

    async def __call__(self, urls: dict[str, str], *, wait: bool = True, **options: Any) -> Daemon:
        manager = bgws.ServiceManager()
        for name, url in urls.items():
            config = fast_config(url, app_name=name, **options.pop(f"{name}_config", {}))
            manager.add(name, bgws.Service(config))
        options.setdefault("socket", self.folder / f"d{len(self.tasks)}.sock")
        daemon = Daemon(manager, **options)
        task = self.tasks[daemon] = asyncio.create_task(daemon.run())
        ready = asyncio.create_task(daemon.ready.wait())
        async with asyncio.timeout(TIMEOUT):
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises what stopped it
        if wait:
            for name in urls:
                await manager.wait_for(name, bgws.State.CONNECTED, timeout=TIMEOUT)
        return daemon

    async def finished(self, daemon: Daemon) -> int:
        """Wait for the daemon's run() to return; its exit code."""
        async with asyncio.timeout(TIMEOUT):
            return await self.tasks[daemon]


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """Start in-process daemons; each is stopped at teardown."""
    starter = StartDaemon(tmp_path)
    yield starter
    for daemon, task in starter.tasks.items():
        daemon.request_stop()
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(task, return_exceptions=True)


class Raw:
    """A bare connection: writes any bytes, and reads lines only when asked (a slow reader)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.pending = reader, writer, b""

    @classmethod
    async def open(cls, path: str) -> Raw:
        reader, writer = await asyncio.open_unix_connection(path, limit=4096)
        return cls(reader, writer)

    def write(self, data: bytes | dict[str, Any]) -> None:
        self.writer.write(data if isinstance(data, bytes) else json.dumps(data).encode() + b"\n")

    async def line(self) -> dict[str, Any] | None:
        async with asyncio.timeout(TIMEOUT):
            while b"\n" not in self.pending:
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    return None
                self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        data: dict[str, Any] = json.loads(line)
        return data


async def test_hello_and_status(server: Server, start_daemon: StartDaemon) -> None:
    """A client learns the services at connect; status reports each one's state and counts."""
    daemon = await start_daemon({"chat": server.url})
    async with connect_local(daemon.socket) as client:
        assert client.services == ["chat"]
        assert client.version == bgws.__version__
        assert client.pid == os.getpid()
        status = await client.status()
    assert status["daemon"]["socket"] == daemon.socket
    assert status["daemon"]["stopping"] is False
    chat = status["services"]["chat"]
    assert chat["state"] == "CONNECTED"
    assert chat["url"] == server.url
    assert chat["stats"]["queued"] == 0


async def test_send_json_text_and_binary(server: Server, start_daemon: StartDaemon) -> None:
    """send carries a JSON object, a text frame and a binary frame to the server, in order."""
    daemon = await start_daemon({"chat": server.url})
    async with connect_local(daemon.socket) as client:
        result = await client.send({"type": "chat", "text": "hi"})
        assert result["service"] == "chat"
        assert result["state"] == "CONNECTED"
        await client.send("plain text")
        await client.send(b"\x00\x01binary")
    received = await server.wait_for_messages(3)
    assert received[0].json() == {"type": "chat", "text": "hi", "id": result["id"]}
    assert received[1].data == "plain text"
    assert received[2].data == b"\x00\x01binary"


async def test_request_returns_the_reply(server: Server, start_daemon: StartDaemon) -> None:
    """request waits for the server's reply with the same id and returns it."""
    daemon = await start_daemon({"chat": server.url})
    async with connect_local(daemon.socket) as client:
        reply = await client.request({"type": "whoami"}, timeout=5)
    assert reply["type"] == "reply"
    assert reply["format"] == "json"
    assert reply["data"]["user"] == "ann"
    assert reply["id"] == server.received_json()[0]["id"]


async def test_subscribe_and_unsubscribe(server: Server, start_daemon: StartDaemon) -> None:
    """subscribe sends and keeps the subscription; unsubscribe forgets it once."""
    daemon = await start_daemon({"chat": server.url})
    async with connect_local(daemon.socket) as client:
        key = await client.subscribe({"type": "subscribe", "room": "a"}, key="room-a")
        assert key == "room-a"
        assert daemon.manager["chat"].subscriptions == ["room-a"]
        assert await client.unsubscribe({"type": "unsubscribe", "room": "a"}, key="room-a")
        assert not await client.unsubscribe(key="room-a")
    received = await server.wait_for_messages(2)
    assert [m.json()["type"] for m in received] == ["subscribe", "unsubscribe"]


async def test_bad_requests_are_usage_errors(server: Server, start_daemon: StartDaemon) -> None:
    """Unknown ops, missing or mistyped fields and unknown services are usage errors."""
    daemon = await start_daemon({"chat": server.url})
    async with connect_local(daemon.socket) as client:
        with pytest.raises(ControlError, match="unknown op 'frob'") as caught:
            await client.call("frob")
        assert (caught.value.kind, caught.value.usage) == ("BadRequest", True)
        with pytest.raises(ControlError, match="'message' is missing"):
            await client.call("send")
        with pytest.raises(ControlError, match="'priority' must be an integer"):
            await client.call("send", message={}, priority="high")
        with pytest.raises(ControlError, match="no service named 'nope'") as caught:
            await client.send({"type": "x"}, service="nope")
        assert caught.value.kind == "UnknownService"
        assert (await client.status())["services"]["chat"]["state"] == "CONNECTED"


async def test_malformed_lines_get_an_error_and_the_connection_lives(
    server: Server, start_daemon: StartDaemon
) -> None:
    """A line that is not a JSON object is answered with an error; the next request works."""
    daemon = await start_daemon({"chat": server.url})
    raw = await Raw.open(daemon.socket)
    raw.write(b"this is not json\n")
    raw.write(b"[1, 2]\n")
    raw.write({"id": 7, "op": "hello"})
    first, second, third = await raw.line(), await raw.line(), await raw.line()
    assert first is not None
    assert second is not None
    assert third is not None
    assert first["ok"] is False
    assert first["error"]["type"] == "BadRequest"
    assert first["id"] is None
    assert second["error"]["message"] == "a request must be a JSON object"
    assert third == {"id": 7, "ok": True, "result": third["result"]}
    assert third["result"]["services"] == ["chat"]
    raw.writer.close()


async def test_several_services_need_a_name(server: Server, start_daemon: StartDaemon) -> None:
    """With several services, send must name one; status covers all, or the one named."""
    daemon = await start_daemon({"a": server.url, "b": server.url})
    async with connect_local(daemon.socket) as client:
        with pytest.raises(ControlError, match=r"runs 2 services \(a, b\)") as caught:
            await client.send({"type": "x"})
        assert caught.value.usage
        await client.send({"type": "x"}, service="b")
        assert list((await client.status())["services"]) == ["a", "b"]
        assert list((await client.status("b"))["services"]) == ["b"]
    await server.wait_for_messages(1)


async def test_service_errors_are_raised_as_themselves(
    server: Server, start_daemon: StartDaemon
) -> None:
    """A service's error in the daemon (here ServiceClosed) is raised as that bgws class."""
    daemon = await start_daemon({"a": server.url, "b": server.url})
    async with connect_local(daemon.socket) as client:
        stopped = await client.stop(service="b", timeout=1)
    assert stopped["b"]["state"] == "CLOSED"
    assert daemon.manager["a"].state is bgws.State.CONNECTED
    async with connect_local(daemon.socket) as client:
        with pytest.raises(bgws.ServiceClosed, match="cannot send"):
            await client.send({"type": "x"}, service="b")
        await client.send({"type": "x"}, service="a")


async def test_stopping_the_last_service_stops_the_daemon(
    server: Server, start_daemon: StartDaemon
) -> None:
    """Once a stop request has stopped every service, the daemon stops (and run() returns 0)."""
    daemon = await start_daemon({"chat": server.url})
    async with connect_local(daemon.socket) as client:
        stopped = await client.stop(service="chat")
    assert stopped == {"chat": {"state": "CLOSED", "queued": 0, "in_flight": 0, "dropped": 0}}
    assert await start_daemon.finished(daemon) == 0
    assert not await asyncio.to_thread(os.path.exists, daemon.socket)


async def test_tail_follows_only_the_chosen_types(
    server: Server, start_daemon: StartDaemon
) -> None:
    """tail yields the incoming messages of the requested types, with their fields."""
    daemon = await start_daemon({"chat": server.url})
    async with connect_local(daemon.socket) as client, await client.tail(types=["chat"]) as tail:
        assert tail.services == ["chat"]
        assert tail.types == ["chat"]
        server.push({"type": "noise"})
        server.push({"type": "chat", "id": "m1", "text": "hello"})
        async with asyncio.timeout(TIMEOUT):
            event = await anext(tail)
    assert event["event"] == "message"
    assert event["service"] == "chat"
    assert (event["type"], event["id"], event["format"]) == ("chat", "m1", "json")
    assert event["data"] == {"type": "chat", "id": "m1", "text": "hello"}
    assert event["received_at"] > 0


async def test_tail_of_binary_frames(server: Server, start_daemon: StartDaemon) -> None:
    """A binary frame reaches a tail as base64."""
    daemon = await start_daemon({"chat": server.url}, chat_config={"codec": "raw"})
    async with connect_local(daemon.socket) as client, await client.tail() as tail:
        server.push(b"\xff\x00")
        server.push("text")
        async with asyncio.timeout(TIMEOUT):
            first, second = await anext(tail), await anext(tail)
    assert (first["format"], base64.b64decode(first["data"])) == ("binary", b"\xff\x00")
    assert (second["format"], second["data"]) == ("text", "text")


async def test_slow_tail_loses_messages_but_never_blocks(
    server: Server, start_daemon: StartDaemon
) -> None:
    """A tail client that does not read loses messages (counted), while the service and a
    fast tail get every one."""
    total, size = 100, 100_000
    daemon = await start_daemon({"chat": server.url})
    slow = await Raw.open(daemon.socket)
    slow.write({"id": 1, "op": "tail", "buffer": 5})
    assert (await slow.line() or {}).get("ok") is True
    async with connect_local(daemon.socket) as client, await client.tail() as fast:
        for n in range(total):
            server.push({"type": "tick", "n": n, "pad": "x" * size})
        got = []
        async with asyncio.timeout(TIMEOUT):
            while len(got) < total:
                got.append((await anext(fast))["data"]["n"])
        assert got == list(range(total))
        assert daemon.manager["chat"].stats.received == total
        tails = (await client.status())["daemon"]["tails"]
    assert max(t["lost"] for t in tails) > 0
    daemon.request_stop()  # the end flushes the slow client's last "dropped" notice
    seen = dropped = 0
    while (event := await slow.line()) is not None and event["event"] != "end":
        if event["event"] == "dropped":
            dropped += event["count"]
        else:
            seen += 1
    slow.writer.close()
    assert event is not None, "the stream ended without its end event"
    assert dropped > 0
    assert seen + dropped == total


async def test_stop_drains_shows_progress_and_reports(
    server: Server, start_daemon: StartDaemon
) -> None:
    """stop waits for the drain deadline with progress events, then reports what was left."""
    daemon = await start_daemon({"chat": server.url}, chat_config={"ack": bgws.AckPolicy()})
    seen: list[dict[str, Any]] = []
    async with connect_local(daemon.socket) as client:
        await client.send({"type": "unacked"})
        await server.wait_for_messages(1)
        final = await client.stop(timeout=0.6, progress=seen.append)
    assert seen, "no progress event while draining"
    assert seen[0]["chat"]["in_flight"] == 1
    assert final["chat"]["state"] == "CLOSED"
    assert final["chat"]["dropped"] == 1  # a memory store keeps nothing; it was reported
    assert not await asyncio.to_thread(os.path.exists, daemon.socket)


async def test_daemon_stop_returns_zero_and_ends_tails(
    server: Server, start_daemon: StartDaemon
) -> None:
    """A stop request ends the daemon's run() with 0, and open tails with an end event."""
    daemon = await start_daemon({"chat": server.url})
    async with connect_local(daemon.socket) as client, await client.tail() as tail:
        other = await connect_local(daemon.socket)
        await other.stop()
        async with asyncio.timeout(TIMEOUT):
            events = [event async for event in tail]
        assert events == []
        assert tail.end_reason == "the daemon stopped"
    assert await start_daemon.finished(daemon) == 0
    with pytest.raises(DaemonNotRunning):
        await connect_local(daemon.socket)


async def test_second_daemon_on_one_socket_is_refused(
    server: Server, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """A second daemon on a live socket fails; a stale socket file is replaced."""
    daemon = await start_daemon({"chat": server.url})
    with pytest.raises(ControlError, match="already listening"):
        await start_daemon({"chat2": server.url}, socket=daemon.socket, wait=False)
    stale = tmp_path / "stale.sock"
    import socket as sockets

    with sockets.socket(sockets.AF_UNIX) as leftover:
        leftover.bind(str(stale))  # bound, never listening: what a crash leaves
    second = await start_daemon({"other": server.url}, socket=stale)
    async with connect_local(second.socket) as client:
        assert client.services == ["other"]


async def test_default_socket_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default socket is 0600 in $XDG_RUNTIME_DIR/bgws, made (or fixed) to 0700."""
    runtime = tmp_path / "run"
    (runtime / "bgws").mkdir(parents=True, mode=0o755)
    os.chmod(runtime / "bgws", 0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    control = ControlServer(bgws.ServiceManager(), on_stop=lambda timeout: None)
    await control.start()
    try:
        assert control.path == runtime / "bgws" / "bgws.sock"
        assert stat.S_IMODE(os.stat(control.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(runtime / "bgws").st_mode) == 0o700
        async with connect_local() as client:
            assert client.services == []
    finally:
        await control.close()
    assert not control.path.exists()


async def test_default_directory_must_not_be_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link in place of the private directory is refused."""
    (tmp_path / "run").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run" / "bgws").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    control = ControlServer(bgws.ServiceManager(), on_stop=lambda timeout: None)
    with pytest.raises(ControlError, match="is not a directory"):
        await control.start()


async def test_tcp_port_needs_the_token(server: Server, start_daemon: StartDaemon) -> None:
    """Over TCP the socket path is a 0600 token file; a client without the token is refused."""
    daemon = await start_daemon({"chat": server.url}, transport="tcp")
    token_file = Path(daemon.socket)
    mode = stat.S_IMODE((await asyncio.to_thread(os.stat, token_file)).st_mode)
    assert mode == 0o600
    info = json.loads(await asyncio.to_thread(token_file.read_text))
    async with connect_local(token_file) as client:
        await client.send({"type": "over-tcp"})
    assert (await server.wait_for_messages(1))[0].json()["type"] == "over-tcp"
    for first in ({"id": 1, "op": "status"}, {"id": 1, "op": "hello", "token": "guess"}):
        reader, writer = await asyncio.open_connection("127.0.0.1", info["port"])
        writer.write(json.dumps(first).encode() + b"\n")
        async with asyncio.timeout(TIMEOUT):
            reply = json.loads(await reader.readline())
            assert await reader.read() == b""  # and the connection is closed
        assert reply["error"]["type"] == "Unauthorized"
        writer.close()


async def test_sync_client(server: Server, start_daemon: StartDaemon) -> None:
    """connect_local_sync offers the same calls, blocking (here from a worker thread)."""
    daemon = await start_daemon({"chat": server.url})

    def work() -> tuple[list[str], Any]:
        with connect_local_sync(daemon.socket) as client:
            client.send({"type": "from-sync"})
            return client.services, client.status()["services"]["chat"]["state"]

    services, state = await asyncio.to_thread(work)
    assert (services, state) == (["chat"], "CONNECTED")
    assert (await server.wait_for_messages(1))[0].json()["type"] == "from-sync"


async def test_no_daemon(tmp_path: Path) -> None:
    """Connecting where no daemon listens raises DaemonNotRunning naming the path."""
    with pytest.raises(DaemonNotRunning, match="does not exist"):
        await connect_local(tmp_path / "none.sock")


async def test_a_suspended_send_is_raised_as_itself(
    server: Server, start_daemon: StartDaemon
) -> None:
    """send() to a SUSPENDED service with suspended_send="fail" raises ServiceSuspended."""
    server.on_handshake = lambda handshake: 503
    offline = {"suspend_after": "100ms", "suspended_retry": "10s", "suspended_send": "fail"}
    daemon = await start_daemon({"chat": server.url}, wait=False, chat_config=offline)
    await daemon.manager.wait_for("chat", bgws.State.SUSPENDED, timeout=TIMEOUT)
    async with connect_local(daemon.socket) as client:
        with pytest.raises(bgws.ServiceSuspended, match="SUSPENDED"):
            await client.send({"type": "x"})


class _Leaky(bgws.Plugin):
    plugin_name = "leaky"

    def status(self) -> dict[str, Any]:
        return {"note": "sent with a-123456", "nested": ["x a-123456"]}


async def test_status_redacts_plugin_sections(server: Server, tmp_path: Path) -> None:
    """A secret a plugin puts in its status() never leaves the daemon; the section does."""
    config = fast_config(server.url, headers={"X-Auth": "a-123456"})
    manager = bgws.ServiceManager({"chat": bgws.Service(config, plugins=[_Leaky()])})
    daemon = Daemon(manager, socket=tmp_path / "d.sock")
    task = asyncio.create_task(daemon.run())
    try:
        await manager.wait_for("chat", bgws.State.CONNECTED, timeout=TIMEOUT)
        async with connect_local(daemon.socket) as client:
            status = await client.status()
    finally:
        daemon.request_stop()
        async with asyncio.timeout(TIMEOUT):
            await task
    assert status["services"]["chat"]["plugins"]["leaky"] == {
        "note": "sent with ***",
        "nested": ["x ***"],
    }
    assert "a-123456" not in json.dumps(status)
