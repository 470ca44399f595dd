"""The daemon as a real process, driven only through the `bgws` command line; and its logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bgws.daemon import configure_logging, notify_systemd, under_journal
from bgws.testing import Server

from .daemonkit import TIMEOUT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and signals")

FAST = {
    "heartbeat_interval": 0.5,
    "ping_timeout": 0.5,
    "initial_reconnect_delay": 0.02,
    "max_reconnect_delay": 0.1,
    "min_uptime": 0.2,
    "connect_timeout": 1.0,
    "close_timeout": 1.0,
}
ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d (INFO|WARNING|ERROR) ")


@dataclass
class Result:
    rc: int
    out: str
    err: str


async def bgws(env: dict[str, str], *args: Any, stdin: str | None = None) -> Result:
    """Run ``python -m bgws ARGS`` to completion (bounded)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bgws",
        *map(str, args),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await process.communicate(None if stdin is None else stdin.encode())
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


@pytest.fixture
async def spawn(env: dict[str, str]) -> AsyncIterator[Any]:
    """Start ``python -m bgws ARGS`` with pipes; any still running at teardown is killed."""
    started: list[asyncio.subprocess.Process] = []

    async def start(*args: Any) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bgws", *map(str, args)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(TIMEOUT):
            await process.wait()


def service_file(tmp_path: Path, url: str, **options: Any) -> Path:
    """A service file with one service ``chat`` at ``url``, with test-speed intervals."""
    values = {"url": url, "storage": "memory", **FAST, **options}
    lines = ["[services.chat]"]
    for key, value in values.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "service.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def free_port_server() -> tuple[Server, str]:
    """A kit server that has picked its port and is stopped (the daemon starts offline)."""
    server = Server()
    await server.start()
    await server.stop()
    return server, server.url


async def test_send_while_the_server_is_down_arrives_once_it_is_up(
    tmp_path: Path, env: dict[str, str], daemons: Any
) -> None:
    """`bgws send` queues in the daemon while offline; the message goes out after connect."""
    server, url = await free_port_server()
    sock = tmp_path / "d.sock"
    daemon = await daemons(service_file(tmp_path, url), "--socket", sock)
    assert "waiting for chat to connect…" in daemon.lines[0]
    sent = await bgws(env, "send", '{"type": "chat", "text": "hi"}', "--socket", sock)
    assert sent.rc == 0, sent.err
    assert re.match(r"queued: chat is (BACKING_OFF|CONNECTING)", sent.err)
    msg_id = sent.out.strip()
    await server.start()
    try:
        received = await server.wait_for_messages(1, timeout=TIMEOUT)
        assert received[0].json() == {"type": "chat", "text": "hi", "id": msg_id}
        await daemon.wait_for("chat connected to " + url)
        stopped = await bgws(env, "stop", "--socket", sock)
    finally:
        await server.stop()
    assert stopped.rc == 0, stopped.err
    assert stopped.err.splitlines() == ["stopping chat…", "chat: CLOSED"]
    assert await daemon.finish() == 0
    assert not sock.exists()


async def test_tail_prints_pushed_messages_of_the_chosen_type(
    tmp_path: Path, env: dict[str, str], daemons: Any, spawn: Any
) -> None:
    """`bgws tail --type chat --count 2 --json` prints exactly the two chat messages."""
    sock = tmp_path / "d.sock"
    async with Server() as server:
        daemon = await daemons(service_file(tmp_path, server.url), "--socket", sock)
        await daemon.wait_for("chat connected")
        tail = await spawn("tail", "--type", "chat", "--count", "2", "--json", "--socket", sock)
        assert tail.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            started = await tail.stderr.readline()
        assert started.decode().strip() == "tailing chat (types: chat)…"
        for text in ("a", "b", "c"):
            server.push({"type": "noise", "text": text})
            server.push({"type": "chat", "text": text})
        async with asyncio.timeout(TIMEOUT):
            out, err = await tail.communicate()
        assert tail.returncode == 0, err
        events = [json.loads(line) for line in out.decode().splitlines()]
        assert [(e["type"], e["data"]["text"]) for e in events] == [("chat", "a"), ("chat", "b")]
        assert all(e["event"] == "message" and e["service"] == "chat" for e in events)
        plain = await spawn("tail", "--socket", sock)
        assert plain.stdout is not None
        assert plain.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            assert (await plain.stderr.readline()).decode().startswith("tailing chat…")
            server.push({"type": "note", "text": "plain"})
            line = await plain.stdout.readline()
            plain.send_signal(signal.SIGINT)  # Ctrl-C is how a tail ends: exit 0
            assert await plain.wait() == 0
        assert line.decode() == 'chat note {"type":"note","text":"plain"}\n'
        stopped = await bgws(env, "stop", "--socket", sock)
        assert stopped.rc == 0
        assert await daemon.finish() == 0


async def test_status_json_reports_real_numbers(
    tmp_path: Path, env: dict[str, str], daemons: Any
) -> None:
    """`bgws status --json` shows the state, what was sent and what waits in the outbox."""
    sock = tmp_path / "d.sock"
    server = Server()
    await server.start()
    try:
        daemon = await daemons(service_file(tmp_path, server.url), "--socket", sock)
        await daemon.wait_for("chat connected")
        for n in (1, 2):
            assert (
                await bgws(env, "send", json.dumps({"type": "n", "n": n}), "--socket", sock)
            ).rc == 0
        await server.wait_for_messages(2)
        status = json.loads((await bgws(env, "status", "--json", "--socket", sock)).out)
        chat = status["services"]["chat"]
        assert chat["state"] == "CONNECTED"
        assert (chat["stats"]["sent"], chat["stats"]["queued"]) == (2, 0)
        assert chat["stats"]["uptime"] > 0
        assert status["daemon"]["socket"] == str(sock)
        await server.stop()
        await daemon.wait_for("link lost")
        assert (await bgws(env, "send", '{"type": "late"}', "--socket", sock)).rc == 0
        status = json.loads((await bgws(env, "status", "--json", "--socket", sock)).out)
        chat = status["services"]["chat"]
        assert chat["state"] in ("BACKING_OFF", "CONNECTING")
        assert (chat["stats"]["sent"], chat["stats"]["queued"]) == (2, 1)
        last_error = chat["stats"]["last_error"]
        assert last_error.split(":")[0] in ("ConnectionClosed", "LinkError")
        text = await bgws(env, "status", "--socket", sock)
        assert text.out.splitlines()[0] == "service chat"
        assert re.search(r"^  outbox\s+1 \(oldest [0-9.]+s old\)$", text.out, re.MULTILINE), (
            text.out
        )
        assert re.search(r"^  last error\s+(ConnectionClosed|LinkError): ", text.out, re.MULTILINE)
    finally:
        await server.stop()


async def test_sigterm_keeps_unsent_messages_and_a_restart_sends_them(
    tmp_path: Path, env: dict[str, str], daemons: Any
) -> None:
    """SIGTERM stops gracefully with the queue in the SQLite store; the next daemon sends it."""
    server, url = await free_port_server()
    toml = service_file(tmp_path, url, storage="sqlite", storage_path="chat.sqlite3")
    sock = tmp_path / "d.sock"
    daemon = await daemons(toml, "--socket", sock)
    ids = []
    for n in range(3):
        sent = await bgws(env, "send", "--socket", sock, stdin=json.dumps({"type": "n", "n": n}))
        assert sent.rc == 0, sent.err
        ids.append(sent.out.strip())
    daemon.process.send_signal(signal.SIGTERM)
    assert await daemon.finish() == 0
    await daemon.wait_for("SIGTERM received: stopping gracefully")
    await daemon.wait_for("chat: 3 message(s) kept in the store for the next start")
    assert (tmp_path / "chat.sqlite3").exists()
    await server.start()
    try:
        again = await daemons(toml, "--socket", sock)
        received = await server.wait_for_messages(3, timeout=TIMEOUT)
        assert [m.json()["id"] for m in received] == ids
        assert [m.json()["n"] for m in received] == [0, 1, 2]
        again.process.send_signal(signal.SIGINT)
        assert await again.finish() == 0
    finally:
        await server.stop()


async def test_default_control_socket_is_private(
    tmp_path: Path, env: dict[str, str], daemons: Any
) -> None:
    """Without --socket the socket is $XDG_RUNTIME_DIR/bgws/bgws.sock: 0600, in a 0700 dir."""
    _, url = await free_port_server()
    daemon = await daemons(service_file(tmp_path, url))
    path = tmp_path / "run" / "bgws" / "bgws.sock"
    assert str(path) in await daemon.wait_for("control socket")
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    status = await bgws(env, "status", "--json")  # found without --socket
    assert status.rc == 0, status.err
    assert json.loads(status.out)["daemon"]["socket"] == str(path)
    daemon.process.send_signal(signal.SIGINT)
    assert await daemon.finish() == 0
    assert not path.exists()


async def test_a_stop_that_hangs_ends_the_process_after_its_grace(
    tmp_path: Path, env: dict[str, str], daemons: Any
) -> None:
    """A plugin blocks the event loop in ``on_service_stopped``: nothing inside the loop can
    bound that, so past the drain deadline plus ``EXIT_GRACE`` the daemon's exit guard logs
    where each thread was and exits with 1 (it waited for ever before)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "bgws_stuck_plugin.py").write_text(
        "import time, bgws, bgws.daemon\n"
        "bgws.daemon.EXIT_GRACE = 0.5  # this test's grace, set as the file is loaded\n"
        "class Stuck(bgws.Plugin):\n"
        "    def on_service_stopped(self):\n"
        "        time.sleep(60)  # blocks the event loop: no timeout inside it can fire\n"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    async with Server() as server:
        toml = service_file(tmp_path, server.url, plugins=["bgws_stuck_plugin:Stuck"])
        daemon = await daemons(toml, "--socket", tmp_path / "d.sock", "--stop-timeout", "0.2")
        await daemon.wait_for("chat connected")
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.finish() == 1
    await daemon.wait_for("the stop did not end within 0.7s; exiting now")
    await daemon.wait_for("in on_service_stopped")  # the thread dump shows where it hung


async def test_handler_plugin_and_logs(tmp_path: Path, env: dict[str, str], daemons: Any) -> None:
    """Handlers and plugins load from import paths; logs carry ISO times, level and logger,
    and the config's secrets are redacted, also from the program's own log lines."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "bgws_daemon_app.py").write_text(
        "import logging, bgws\n"
        "log = logging.getLogger('app')\n"
        "class Handler(bgws.MessageHandler):\n"
        "    async def handle_message(self, message):\n"
        "        log.info('handled %s with Bearer s3cr3t-token-42', message.type)\n"
        "class Claim(bgws.Plugin):\n"
        "    supported_message_types = ('secret',)\n"
        "    def handle_message(self, message):\n"
        "        log.warning('claimed %s', message.type)\n"
        "        return True\n"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    sock = tmp_path / "d.sock"
    async with Server() as server:
        toml = service_file(
            tmp_path,
            server.url,
            headers={"Authorization": "Bearer s3cr3t-token-42"},
            handler="bgws_daemon_app:Handler",
            plugins=["bgws_daemon_app:Claim"],
        )
        daemon = await daemons(toml, "--socket", sock)
        await daemon.wait_for("chat connected")
        assert server.handshakes[0].headers["authorization"] == "Bearer s3cr3t-token-42"
        server.push({"type": "secret"})
        server.push({"type": "chat"})
        handled = await daemon.wait_for("INFO app: handled chat with ***")
        assert ISO_LINE.match(handled), handled
        assert ISO_LINE.match(await daemon.wait_for("WARNING app: claimed secret"))
        assert not [line for line in daemon.lines if "handled secret" in line]
        assert (await bgws(env, "stop", "--socket", sock)).rc == 0
        assert await daemon.finish() == 0
    assert not [line for line in daemon.lines if "s3cr3t" in line]
    assert all(ISO_LINE.match(line) for line in daemon.lines), daemon.lines


async def test_a_wrong_service_file_exits_2_with_one_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Broken TOML, or a handler that cannot be imported: exit 2, one clear line on stderr."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[services.chat\n")
    result = await bgws(env, "run", bad)
    assert result.rc == 2
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith(f"bgws: configuration error: {bad}: invalid TOML")
    toml = service_file(tmp_path, "ws://127.0.0.1:9/", handler="no_such_module_bgws:Handler")
    result = await bgws(env, "run", toml)
    assert result.rc == 2
    assert result.err.splitlines() == [
        "bgws: configuration error: services.chat.handler: cannot import "
        "'no_such_module_bgws': No module named 'no_such_module_bgws'"
    ]
    assert result.out == ""


async def test_second_daemon_on_the_same_socket_exits_1(
    tmp_path: Path, env: dict[str, str], daemons: Any
) -> None:
    """A daemon whose socket is taken by a live daemon fails at once with one line."""
    _, url = await free_port_server()
    sock = tmp_path / "d.sock"
    first = await daemons(service_file(tmp_path, url), "--socket", sock)
    second = await bgws(env, "run", service_file(tmp_path, url), "--socket", sock)
    assert second.rc == 1
    assert (
        second.err.splitlines()[-1] == f"bgws: another bgws daemon is already listening on {sock}"
    )
    first.process.send_signal(signal.SIGTERM)
    assert await first.finish() == 0


# -- logging, in-process ----------------------------------------------------------------------


def _log_through(stream: Any, env: dict[str, str], secrets: tuple[str, ...] = ()) -> None:
    undo = configure_logging(stream, env=env, secrets=secrets)
    try:
        logging.getLogger("bgws.test").info("hello %s", "pw-123456")
        logging.getLogger("bgws.test").error("two\nlines")
    finally:
        undo()


def test_logs_under_systemd_have_priorities_and_no_timestamps() -> None:
    """On the journal stream (JOURNAL_STREAM matches stderr) lines get <N> and no time."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "w") as writer:
        info = os.fstat(writer.fileno())
        journal = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert under_journal(writer, journal)
        _log_through(writer, journal, secrets=("pw-123456",))
        writer.close()
        lines = reader.read().decode().splitlines()
    assert lines == ["<6>INFO bgws.test: hello ***", "<3>ERROR bgws.test: two", "<3>lines"]


def test_logs_elsewhere_have_iso_timestamps() -> None:
    """An inherited JOURNAL_STREAM that is not this stream does not count: ISO times."""
    stream = io.StringIO()
    assert not under_journal(stream, {"JOURNAL_STREAM": "1:2"})
    _log_through(stream, {"JOURNAL_STREAM": "1:2"})
    first = stream.getvalue().splitlines()[0]
    assert ISO_LINE.match(first)
    assert first.endswith(" INFO bgws.test: hello pw-123456")


def test_notify_systemd(tmp_path: Path) -> None:
    """READY=1 reaches $NOTIFY_SOCKET; without it nothing is sent."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(TIMEOUT)
        assert notify_systemd("READY=1", {"NOTIFY_SOCKET": path})
        assert listener.recv(64) == b"READY=1"
    assert not notify_systemd("READY=1", {})
