"""`bgws status/reconnect/outbox`, run's log and metrics options, closed pipes: real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws.cli import main
from bgws.cli_ops import format_health
from bgws.testing import Server
from tests import test_daemon
from tests.daemonkit import TIMEOUT
from tests.test_daemon import service_file

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and signals")

run_bgws = test_daemon.bgws

TRANSPORTS = ("picows", "websockets")
SLOW_RETRY = {"initial_reconnect_delay": 60.0, "max_reconnect_delay": 60.0}
"""Backoff delays (full jitter, up to 60 s) far longer than the test waits."""
_DELAY = re.compile(r"reconnecting in ([0-9.]+)s")


async def backing_off(daemon: Any, at_least: float = 8.0) -> None:
    """Wait until the daemon's service waits ``at_least`` seconds before its next attempt.

    A full-jitter delay may be short; each failed attempt logs a new one (bounded count).
    """
    for count in range(1, 30):
        line = await daemon.wait_for("reconnecting in", count)
        match = _DELAY.search(line)
        assert match is not None, line
        if float(match[1]) >= at_least:
            return
    raise AssertionError("no long backoff delay in 30 attempts")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_status_explains_the_outage_and_reconnect_skips_the_wait(
    tmp_path: Path, env: dict[str, str], daemons: Any, transport: str
) -> None:
    """Server stopped: status shows offline since, the next retry, the last error with its
    time; server back: `bgws reconnect` connects at once; status shows the recovery."""
    sock = tmp_path / "d.sock"
    server = Server()
    await server.start()
    try:
        toml = service_file(tmp_path, server.url, transport=transport, **SLOW_RETRY)
        daemon = await daemons(toml, "--socket", sock)
        await daemon.wait_for("chat connected")
        await server.stop()
        await daemon.wait_for("link lost")
        await backing_off(daemon)
        status = json.loads((await run_bgws(env, "status", "--json", "--socket", sock)).out)
        chat = status["services"]["chat"]
        assert chat["state"] == "BACKING_OFF"
        assert chat["offline_since"] is not None
        assert chat["online_since"] is None
        assert 0 < chat["next_retry_in"] <= 60
        assert chat["next_retry_at"] > chat["offline_since"]
        assert chat["reconnections"] == 0
        assert chat["last_error"]["at"] >= chat["offline_since"] - 1
        assert chat["last_error"]["before_recovery"] is False
        text = (await run_bgws(env, "status", "--socket", sock)).out
        assert re.search(r"^  offline since\s+\d\d:\d\d:\d\d \([0-9.]+s ago\)$", text, re.M), text
        assert re.search(r"^  next retry\s+\d\d:\d\d:\d\d \(in [0-9.]+s\)$", text, re.M), text
        assert re.search(
            r"^  last error\s+\w+: .* \(at \d\d:\d\d:\d\d, [0-9.]+s ago\)$", text, re.M
        )
        await server.start()
        result = await run_bgws(env, "reconnect", "--socket", sock)
        assert (result.rc, result.out) == (0, "chat: connecting now\n")
        await daemon.wait_for("-> CONNECTED", 2)
        status = json.loads((await run_bgws(env, "status", "--json", "--socket", sock)).out)
        chat = status["services"]["chat"]
        assert chat["state"] == "CONNECTED"
        assert chat["offline_since"] is None
        assert chat["next_retry_at"] is None
        assert chat["reconnections"] == 1
        assert chat["last_error"]["before_recovery"] is True
        text = (await run_bgws(env, "status", "--socket", sock)).out
        assert re.search(r"^  last error \(before recovery\)\s+\w+: ", text, re.M), text
        again = await run_bgws(env, "reconnect", "--socket", sock)
        assert again.out == "chat: CONNECTED, no backoff wait to skip\n"
        watched = await run_bgws(env, "status", "--watch", "--count", "2", "--interval", "0.05",
                             "--json", "--socket", sock)  # fmt: skip
        assert watched.rc == 0
        draws = [json.loads(line) for line in watched.out.splitlines()]
        assert [d["services"]["chat"]["state"] for d in draws] == ["CONNECTED", "CONNECTED"]
        assert (await run_bgws(env, "stop", "--socket", sock)).rc == 0
        assert await daemon.finish() == 0
    finally:
        await server.stop()


async def test_outbox_commands(tmp_path: Path, env: dict[str, str], daemons: Any) -> None:
    """outbox list/show/export/purge through the daemon; purge refuses without --yes."""
    sock = tmp_path / "d.sock"
    server = Server()
    await server.start()
    url = server.url
    await server.stop()
    daemon = await daemons(service_file(tmp_path, url, **SLOW_RETRY), "--socket", sock)
    ids = []
    for n in (1, 2, 3):
        sent = await run_bgws(env, "send", json.dumps({"type": "n", "n": n}), "--socket", sock)
        ids.append(sent.out.strip())
    listing = await run_bgws(env, "outbox", "list", "--socket", sock)
    assert listing.rc == 0
    lines = listing.out.splitlines()
    assert lines[0] == "chat: 3 undelivered message(s)"
    assert lines[1].split() == ["seq", "id", "prio", "bytes", "format", "state", "tries", "age"]
    assert [line.split()[1] for line in lines[2:]] == ids
    items = [json.loads(x) for x in (await run_bgws(env, "outbox", "list", "--json",
                                               "--socket", sock)).out.splitlines()]  # fmt: skip
    assert [item["id"] for item in items] == ids
    shown = await run_bgws(env, "outbox", "show", str(items[1]["seq"]), "--json", "--socket", sock)
    assert json.loads(json.loads(shown.out)["data"]) == {"type": "n", "n": 2, "id": ids[1]}
    out = tmp_path / "outbox.jsonl"
    exported = await run_bgws(env, "outbox", "export", "-o", out, "--socket", sock)
    assert exported.rc == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ids
    refused = await run_bgws(env, "outbox", "purge", "--socket", sock)
    assert refused.rc == 2
    assert "pass --yes" in refused.err
    one = await run_bgws(env, "outbox", "purge", ids[0], "--yes", "--socket", sock)
    assert one.out == "chat: 1 message(s) purged, 2 left\n"
    rest = await run_bgws(env, "outbox", "purge", "--yes", "--socket", sock)
    assert rest.out == "chat: 2 message(s) purged, 0 left\n"
    assert (await run_bgws(env, "outbox", "list", "--socket", sock)).out == (
        "chat: 0 undelivered message(s)\n"
    )
    await daemon.wait_for("2 undelivered message(s) purged")  # one WARNING each, no bodies
    assert not any('"n"' in line for line in daemon.lines)
    assert (await run_bgws(env, "stop", "--socket", sock)).rc == 0
    assert await daemon.finish() == 0


async def run_into_closed_pipe(env: dict[str, str], *args: Any) -> Any:
    """Start ``bgws ARGS`` with stdout a pipe whose reader is already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bgws", *map(str, args)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    finally:
        os.close(write_end)
    return process


async def finish(process: Any) -> tuple[int, str]:
    """Wait (bounded) for ``process``; its exit code and its stderr."""
    async with asyncio.timeout(TIMEOUT):
        _, err = await process.communicate()
    return process.returncode, err.decode()


async def test_closed_pipe_ends_quietly(tmp_path: Path, env: dict[str, str], daemons: Any) -> None:
    """`bgws status | true` and `bgws tail --json | head -0` exit 0 and print no error; so
    does Ctrl-C on `bgws status --watch`."""
    sock = tmp_path / "d.sock"
    async with Server() as server:
        daemon = await daemons(service_file(tmp_path, server.url), "--socket", sock)
        await daemon.wait_for("chat connected")
        for args in (("status",), ("status", "--json")):
            process = await run_into_closed_pipe(env, *args, "--socket", sock)
            assert await finish(process) == (0, "")
        tail = await run_into_closed_pipe(env, "tail", "--json", "--socket", sock)
        assert tail.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            assert (await tail.stderr.readline()).startswith(b"tailing chat")
        server.publish({"type": "news"})
        assert await finish(tail) == (0, "")
        watch = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bgws", "status", "--watch", "--interval", "0.05"),
            *("--socket", str(sock)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert watch.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            assert await watch.stdout.readline() == b"service chat\n"
        watch.send_signal(signal.SIGINT)  # Ctrl-C is how a watch ends: quietly, exit 0
        assert await finish(watch) == (0, "")
        assert (await run_bgws(env, "stop", "--socket", sock)).rc == 0
        assert await daemon.finish() == 0


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_run_logs_json_to_a_rotated_file_and_serves_metrics(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """run --log-format json --log-file --metrics: JSON lines in a 0600 file, /metrics up."""
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_metrics import http_get

    sock, log = tmp_path / "d.sock", tmp_path / "logs" / "bgws.log"
    notify = tmp_path / "notify"
    port = free_port()
    async with Server() as server:
        toml = service_file(tmp_path, server.url)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(str(notify))
        listener.setblocking(False)
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bgws", "run", str(toml), "--socket", str(sock)),
            *("--log-format", "json", "--log-file", str(log), "--log-max-bytes", "100000"),
            *("--metrics", f"127.0.0.1:{port}"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**env, "NOTIFY_SOCKET": str(notify)},
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                ready = await asyncio.get_running_loop().sock_recv(listener, 64)
            assert ready == b"READY=1"
            await server.wait_for_connections(1)
            status, body = await http_get(port, "/metrics")
            assert status == 200
            names = {f.name for f in text_string_to_metric_families(body)}
            assert {"bgws_link_up", "bgws_outbox_messages", "bgws_rtt_seconds"} <= names
            assert (await run_bgws(env, "stop", "--socket", sock)).rc == 0
            async with asyncio.timeout(TIMEOUT):
                _, err = await process.communicate()
        finally:
            listener.close()
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0
    assert err == b""  # everything went to the file
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"].startswith("ready:") for r in records)
    assert any(r["logger"] == "bgws.metrics" for r in records)


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    """An in-process daemon whose service's server is down; yields the server and socket."""
    from bgws.daemon import Daemon
    from tests.conftest import fast_config
    from tests.test_operations import long_backoff

    server = Server()
    await server.start()
    url = server.url
    await server.stop()
    service = bgws.Service(fast_config(url), backoff=long_backoff())  # 30 s, then 60 s
    manager = bgws.ServiceManager({"chat": service})
    daemon = Daemon(manager, socket=tmp_path / "d.sock")
    task = asyncio.create_task(daemon.run())
    await manager.wait_for("chat", bgws.State.BACKING_OFF, timeout=TIMEOUT)
    yield server, daemon.socket
    daemon.request_stop()
    async with asyncio.timeout(TIMEOUT):
        await task
    await server.stop()


async def test_commands_in_process_during_an_outage(
    offline: tuple[Server, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """main(): status explains the outage, outbox shows and purges, reconnect connects."""
    server, sock = offline

    async def bgws_main(*argv: str) -> int:
        return await asyncio.to_thread(main, [*argv, "--socket", sock])

    assert await bgws_main("send", '{"type": "a"}') == 0
    assert await bgws_main("send", "--text", "b c") == 0
    msg_id = capsys.readouterr().out.split()[0]
    assert await bgws_main("status", "--watch", "--count", "2", "--interval", "0.01") == 0
    draws = capsys.readouterr().out.split("service chat\n")[1:]
    assert len(draws) == 2
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in draws[0].splitlines()
                if line.strip())  # fmt: skip
    assert rows["state"] == "BACKING_OFF"
    assert rows["outbox"].startswith("2 (oldest ")
    assert rows["attempts"] == "1 failed in this outage"
    assert rows["last received"] == "never"
    assert rows["last error"].startswith("LinkError: ")
    assert await bgws_main("outbox", "show", msg_id) == 0
    shown = capsys.readouterr().out
    assert f"id: {msg_id}" in shown
    assert 'data: {"type":"a","id":"' in shown
    assert await bgws_main("outbox", "export") == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["data"] for item in exported][1] == "b c"
    assert await bgws_main("outbox", "show", "nope") == 1
    assert "no undelivered message" in capsys.readouterr().err
    assert await bgws_main("outbox", "purge") == 2  # no terminal to ask on
    assert "pass --yes" in capsys.readouterr().err
    assert await bgws_main("outbox", "purge", "--yes", str(exported[1]["seq"])) == 0
    assert capsys.readouterr().out == "chat: 1 message(s) purged, 1 left\n"
    await server.start()
    assert await bgws_main("reconnect") == 0
    assert capsys.readouterr().out == "chat: connecting now\n"
    await server.wait_for_messages(1, timeout=TIMEOUT)
    assert await bgws_main("outbox", "list") == 0
    assert capsys.readouterr().out == "chat: 0 undelivered message(s)\n"


def test_format_health_marks_an_old_error_and_shows_plugins() -> None:
    """After recovery the last error is 'before recovery'; plugin sections are one row each."""
    status = {
        "state": "CONNECTED", "url": "ws://h/", "error": None, "online_since": 100.0,
        "reconnections": 2, "outbox": {"depth": 0}, "in_flight": 0,
        "last_received_at": 101.0, "stats": {"sent": 1, "received": 2},
        "last_error": {"error": "LinkError: refused", "at": 90.0, "before_recovery": True},
        "plugins": {"bridge": {"lag": 3, "subjects": ["a"]}},
    }  # fmt: skip
    text = format_health({"services": {"chat": status}}, now=110.0)
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines()[1:])
    assert rows["online since"].endswith("(10.0s ago)")
    assert rows["reconnections"] == "2"
    assert rows["last error (before recovery)"].startswith("LinkError: refused (at ")
    assert rows["plugin bridge"] == 'lag=3, subjects=["a"]'
    assert "offline since" not in rows
    assert "next retry" not in rows


def test_run_refuses_bad_log_and_metrics_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong --metrics address or an unwritable --log-file is a configuration error (2)."""
    path = service_file(tmp_path, "ws://127.0.0.1:9/")
    assert main(["run", str(path), "--metrics", "localhost:http"]) == 2
    assert "metrics: address 'localhost:http'" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert main(["run", str(path), "--log-file", str(tmp_path / "f" / "x.log")]) == 2
    assert "log_file: cannot write" in capsys.readouterr().err
