"""`bgws status/reconnect/outbox`, run's log and metrics options, closed pipes: real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from bgws.testing import Server
from tests import test_daemon
from tests.test_daemon import TIMEOUT, bgws, service_file

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and signals")

env = test_daemon.env  # the fixtures of the daemon's tests, shared
daemons = test_daemon.daemons

TRANSPORTS = ("picows", "websockets")
SLOW_RETRY = {"initial_reconnect_delay": 30.0, "max_reconnect_delay": 30.0}
"""Backoff delays (full jitter, up to 30 s) far longer than the test waits."""
_DELAY = re.compile(r"reconnecting in ([0-9.]+)s")


async def backing_off(daemon: Any, at_least: float = 4.0) -> None:
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
        status = json.loads((await bgws(env, "status", "--json", "--socket", sock)).out)
        chat = status["services"]["chat"]
        assert chat["state"] == "BACKING_OFF"
        assert chat["offline_since"] is not None
        assert chat["online_since"] is None
        assert 0 < chat["next_retry_in"] <= 30
        assert chat["next_retry_at"] > chat["offline_since"]
        assert chat["reconnections"] == 0
        assert chat["last_error"]["at"] >= chat["offline_since"] - 1
        assert chat["last_error"]["before_recovery"] is False
        text = (await bgws(env, "status", "--socket", sock)).out
        assert re.search(r"^  offline since\s+\d\d:\d\d:\d\d \([0-9.]+s ago\)$", text, re.M), text
        assert re.search(r"^  next retry\s+\d\d:\d\d:\d\d \(in [0-9.]+s\)$", text, re.M), text
        assert re.search(
            r"^  last error\s+\w+: .* \(at \d\d:\d\d:\d\d, [0-9.]+s ago\)$", text, re.M
        )
        await server.start()
        result = await bgws(env, "reconnect", "--socket", sock)
        assert (result.rc, result.out) == (0, "chat: connecting now\n")
        await daemon.wait_for("-> CONNECTED", 2)
        status = json.loads((await bgws(env, "status", "--json", "--socket", sock)).out)
        chat = status["services"]["chat"]
        assert chat["state"] == "CONNECTED"
        assert chat["offline_since"] is None
        assert chat["next_retry_at"] is None
        assert chat["reconnections"] == 1
        assert chat["last_error"]["before_recovery"] is True
        text = (await bgws(env, "status", "--socket", sock)).out
        assert re.search(r"^  last error \(before recovery\)\s+\w+: ", text, re.M), text
        again = await bgws(env, "reconnect", "--socket", sock)
        assert again.out == "chat: CONNECTED, no backoff wait to skip\n"
        watched = await bgws(env, "status", "--watch", "--count", "2", "--interval", "0.05",
                             "--json", "--socket", sock)  # fmt: skip
        assert watched.rc == 0
        draws = [json.loads(line) for line in watched.out.splitlines()]
        assert [d["services"]["chat"]["state"] for d in draws] == ["CONNECTED", "CONNECTED"]
        assert (await bgws(env, "stop", "--socket", sock)).rc == 0
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
        sent = await bgws(env, "send", json.dumps({"type": "n", "n": n}), "--socket", sock)
        ids.append(sent.out.strip())
    listing = await bgws(env, "outbox", "list", "--socket", sock)
    assert listing.rc == 0
    lines = listing.out.splitlines()
    assert lines[0] == "chat: 3 undelivered message(s)"
    assert lines[1].split() == ["seq", "id", "prio", "bytes", "format", "state", "tries", "age"]
    assert [line.split()[1] for line in lines[2:]] == ids
    items = [json.loads(x) for x in (await bgws(env, "outbox", "list", "--json",
                                               "--socket", sock)).out.splitlines()]  # fmt: skip
    assert [item["id"] for item in items] == ids
    shown = await bgws(env, "outbox", "show", str(items[1]["seq"]), "--json", "--socket", sock)
    assert json.loads(json.loads(shown.out)["data"]) == {"type": "n", "n": 2, "id": ids[1]}
    out = tmp_path / "outbox.jsonl"
    exported = await bgws(env, "outbox", "export", "-o", out, "--socket", sock)
    assert exported.rc == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ids
    refused = await bgws(env, "outbox", "purge", "--socket", sock)
    assert refused.rc == 2
    assert "pass --yes" in refused.err
    one = await bgws(env, "outbox", "purge", ids[0], "--yes", "--socket", sock)
    assert one.out == "chat: 1 message(s) purged, 2 left\n"
    rest = await bgws(env, "outbox", "purge", "--yes", "--socket", sock)
    assert rest.out == "chat: 2 message(s) purged, 0 left\n"
    assert (await bgws(env, "outbox", "list", "--socket", sock)).out == (
        "chat: 0 undelivered message(s)\n"
    )
    await daemon.wait_for("2 undelivered message(s) purged")  # one WARNING each, no bodies
    assert not any('"n"' in line for line in daemon.lines)
    assert (await bgws(env, "stop", "--socket", sock)).rc == 0
    assert await daemon.finish() == 0


async def run_into_closed_pipe(env: dict[str, str], *args: Any) -> tuple[int, str, Any]:
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
    return 0, "", process


async def finish(process: Any) -> tuple[int, str]:
    async with asyncio.timeout(TIMEOUT):
        _, err = await process.communicate()
    return process.returncode, err.decode()


async def test_closed_pipe_ends_quietly(tmp_path: Path, env: dict[str, str], daemons: Any) -> None:
    """`bgws status | true` and `bgws tail --json | head -0` exit 0 and print no error."""
    sock = tmp_path / "d.sock"
    async with Server() as server:
        daemon = await daemons(service_file(tmp_path, server.url), "--socket", sock)
        await daemon.wait_for("chat connected")
        for args in (("status",), ("status", "--json")):
            _, _, process = await run_into_closed_pipe(env, *args, "--socket", sock)
            assert await finish(process) == (0, "")
        _, _, tail = await run_into_closed_pipe(env, "tail", "--json", "--socket", sock)
        assert tail.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            assert (await tail.stderr.readline()).startswith(b"tailing chat")
        server.publish({"type": "news"})
        assert await finish(tail) == (0, "")
        assert (await bgws(env, "stop", "--socket", sock)).rc == 0
        assert await daemon.finish() == 0


def free_port() -> int:
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
            assert (await bgws(env, "stop", "--socket", sock)).rc == 0
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
