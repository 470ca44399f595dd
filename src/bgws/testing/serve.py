"""Run the test server in a process of its own, for crash tests: ``python -m bgws.testing.serve``.

It prints one line when it listens, ``serving ws://127.0.0.1:PORT/ ...``. A test reads the URL
(or the port: :func:`parse_ready`) from that first line of its standard output, points producer
processes at it, and at the end sends ``SIGTERM`` (or the ``stop`` command) and reads back every
message received from the dump file::

    python -m bgws.testing.serve --ack --drop-chance 0.2 --max-drops 5 --seed 1 --dump out.jsonl

It listens on 127.0.0.1 only. Random drops are seeded (``--seed``) and bounded in number
(``--max-drops``). Commands on standard input, one per line, each answered with one line on
standard output:

``report``
    Flush the dump; answers ``dumped N`` (N messages in it so far).
``drop``
    Drop every connection; answers ``dropped N``.
``publish {"type": "tick"}``
    Publish a message (numbered, kept for replay); answers ``published SEQ``.
``stop``
    Like ``SIGTERM``: answers ``stopping``, then stops, ends the dump and exits 0.

The dump (``--dump``) is JSON lines: one ``{"record": "message", ...}`` per received message
in order (``index``, ``connection``, ``id``, ``duplicate``, ``kind`` and ``data``), written and
flushed as each message arrives, so a test can watch it grow and a killed server leaves every
message it received; then, at the end, one ``{"record": "connection", ...}`` per connection
(the fields of :class:`~bgws.testing.ConnectionReport`). :func:`read_dump` reads it back.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from bgws.testing._connection import Connection
from bgws.testing._delivery import AckReply, Feed, IdLedger, Reply
from bgws.testing._records import ReceivedMessage
from bgws.testing._server import Server

__all__ = [
    "DumpWriter",
    "RandomDrops",
    "build_parser",
    "dump_records",
    "main",
    "parse_ready",
    "read_dump",
    "write_dump",
]

_STDIN = 0


class RandomDrops:
    """Seeded, bounded random drops: per received message, and at random intervals.

    The two draw from separate generators, so the drops per message depend only on the seed
    and the number of messages, not on timing.

    Args:
        chance: The probability of dropping a connection after each message it sends.
        every: The mean interval, in seconds, between drops of every connection (each interval
            is drawn between half and one and a half of it); ``None``: no timed drops.
        max_drops: How many drops at most, both kinds together.
        seed: Seeds both generators.

    Raises:
        ValueError: ``chance`` outside 0-1, ``every`` not positive or ``max_drops`` negative.
    """

    def __init__(
        self, *, chance: float = 0.0, every: float | None = None, max_drops: int = 10, seed: int = 0
    ) -> None:
        if not 0.0 <= chance <= 1.0:
            raise ValueError(f"chance must be in 0-1, got {chance}")
        if every is not None and every <= 0:
            raise ValueError(f"every must be > 0, got {every}")
        if max_drops < 0:
            raise ValueError(f"max_drops must be >= 0, got {max_drops}")
        self.chance = chance
        self.every = every
        self.max_drops = max_drops
        self.done = 0
        self._per_message = random.Random(seed)
        self._timed = random.Random(seed + 1)

    @property
    def exhausted(self) -> bool:
        """Whether ``max_drops`` drops were made."""
        return self.done >= self.max_drops

    def after_message(self) -> bool:
        """Whether to drop the connection a message just came on (counted as a drop if so)."""
        if self.chance <= 0 or self.exhausted:
            return False
        if self._per_message.random() < self.chance:
            self.done += 1
            return True
        return False

    def next_interval(self) -> float | None:
        """Seconds until the next timed drop, or ``None`` if there is none to come."""
        if self.every is None or self.exhausted:
            return None
        return self.every * self._timed.uniform(0.5, 1.5)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bgws.testing.serve``."""
    parser = argparse.ArgumentParser(
        prog="python -m bgws.testing.serve",
        description=(
            "Run the bgws test server on 127.0.0.1; the first line of output is "
            "'serving ws://127.0.0.1:PORT/ ...'."
        ),
    )
    add = parser.add_argument
    add("--port", type=int, default=0, help="port to listen on (default: 0, a free one)")
    add("--dump", type=Path, help="file to write received messages to, as JSON lines")
    add("--id-field", default="id", help="field holding message ids ('' : none)")
    add("--echo", action="store_true", help="send every message back")
    add("--delay", type=float, default=0.0, help="seconds every outgoing frame waits")
    acks = parser.add_argument_group("acks")
    acks.add_argument("--ack", action="store_true", help="acknowledge every message with an id")
    acks.add_argument("--ack-type", default="ack", help="type of acks (default: ack)")
    acks.add_argument("--ack-field", default="id", help="field of the ack holding the id(s)")
    acks.add_argument("--ack-batch", type=int, default=1, help="ids per ack, as a list")
    acks.add_argument(
        "--ack-batch-delay", type=float, default=0.1, help="seconds before a partial batch goes"
    )
    acks.add_argument("--ack-fraction", type=float, default=1.0, help="share of ids to ack")
    faults = parser.add_argument_group("random drops")
    faults.add_argument(
        "--drop-chance", type=float, default=0.0, help="chance to drop a link after a message"
    )
    faults.add_argument(
        "--drop-every", type=float, help="drop every link at random intervals of about SECONDS"
    )
    faults.add_argument("--max-drops", type=int, default=10, help="at most this many drops")
    faults.add_argument("--seed", type=int, default=0, help="seed of the random drops")
    feed = parser.add_argument_group("feed and requests")
    feed.add_argument("--seq-field", default="seq", help="field of the sequence number")
    feed.add_argument("--resume-type", default="resume", help="type of resume requests")
    feed.add_argument("--position-field", default="after", help="position of a resume request")
    feed.add_argument("--history", type=int, default=1000, help="published messages kept")
    feed.add_argument("--reply-to", metavar="TYPE", help="answer requests of this type")
    return parser


def dump_records(server: Server) -> list[dict[str, Any]]:
    """What the dump holds: one record per received message, then one per connection."""
    records: list[dict[str, Any]] = []
    ledger = IdLedger()
    for index, message in enumerate(server.messages):
        records.append(_message_record(index, message, server.id_field, ledger))
    for report in server.report():
        records.append({"record": "connection", **report.to_dict()})
    return records


def write_dump(server: Server, path: Path) -> int:
    """Write the dump to ``path`` (atomically, through a temporary file).

    Returns:
        How many message records it holds.
    """
    records = dump_records(server)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        for record in records:
            file.write(msgspec.json.encode(record) + b"\n")
    temporary.replace(path)
    return len(server.messages)


class DumpWriter:
    """Writes the dump as the server runs: each message record flushed as the message arrives.

    Args:
        path: the dump file (created, or emptied).
        id_field: where messages carry their id (``None``: no ids).
    """

    def __init__(self, path: Path, id_field: str | None) -> None:
        self._file = path.open("wb")
        self._id_field = id_field
        self._ledger = IdLedger()
        self.count = 0
        """How many message records were written."""

    def message(self, message: ReceivedMessage) -> None:
        """Write and flush the record of one received message."""
        record = _message_record(self.count, message, self._id_field, self._ledger)
        self._file.write(msgspec.json.encode(record) + b"\n")
        self._file.flush()
        self.count += 1

    def close(self, server: Server) -> None:
        """Write one record per connection of ``server``, and close the file."""
        for report in server.report():
            record = {"record": "connection", **report.to_dict()}
            self._file.write(msgspec.json.encode(record) + b"\n")
        self._file.close()


def parse_ready(line: str | bytes) -> int:
    """The port in the server's first line, ``serving ws://127.0.0.1:PORT/ ...``.

    Args:
        line: the first line of its standard output.

    Raises:
        ValueError: the line is not that line.
    """
    text = line.decode() if isinstance(line, bytes) else line
    word, _, rest = text.strip().partition(" ")
    url = rest.split(" ", 1)[0]
    prefix = "ws://127.0.0.1:"
    if word != "serving" or not url.startswith(prefix):
        raise ValueError(f"not the server's first line: {text!r}")
    return int(url.removeprefix(prefix).rstrip("/"))


def read_dump(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a dump: the message records, in order, and the connection records."""
    messages: list[dict[str, Any]] = []
    connections: list[dict[str, Any]] = []
    for line in Path(path).read_bytes().splitlines():
        record = msgspec.json.decode(line)
        (messages if record["record"] == "message" else connections).append(record)
    return messages, connections


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until ``SIGTERM``, ``SIGINT`` or ``stop``; return the exit status."""
    args = build_parser().parse_args(argv)
    return asyncio.run(_serve(args))


def _message_record(
    index: int, message: ReceivedMessage, id_field: str | None, ledger: IdLedger
) -> dict[str, Any]:
    data: Any
    try:
        data, kind = message.json(), "json"
    except ValueError:
        if isinstance(message.data, str):
            data, kind = message.data, "text"
        else:
            data, kind = base64.b64encode(message.data).decode(), "binary"
    msg_id = data.get(id_field) if kind == "json" and id_field and isinstance(data, dict) else None
    return {
        "record": "message",
        "index": index,
        "connection": message.connection_id,
        "id": msg_id,
        "duplicate": msg_id is not None and ledger.add(msg_id),
        "binary": not message.is_text,
        "kind": kind,
        "data": data,
    }


def _make_server(args: argparse.Namespace, drops: RandomDrops, dump: DumpWriter | None) -> Server:
    ack = None
    if args.ack:
        ack = AckReply(
            message_type=args.ack_type,
            id_field=args.ack_field,
            batch=args.ack_batch,
            batch_delay=args.ack_batch_delay if args.ack_batch > 1 else None,
            fraction=args.ack_fraction,
        )

    def drop_at_random(connection: Connection, message: ReceivedMessage) -> None:
        if dump is not None:
            dump.message(message)
        if drops.after_message():
            connection.drop()

    return Server(
        port=args.port,
        echo=args.echo,
        delay=args.delay,
        id_field=args.id_field or None,
        ack=ack,
        reply=Reply(request_type=args.reply_to) if args.reply_to else None,
        feed=Feed(
            seq_field=args.seq_field,
            request_type=args.resume_type,
            position_field=args.position_field,
            history=args.history,
        ),
        on_message=drop_at_random,
    )


async def _serve(args: argparse.Namespace) -> int:
    drops = RandomDrops(
        chance=args.drop_chance, every=args.drop_every, max_drops=args.max_drops, seed=args.seed
    )
    dump = None if args.dump is None else DumpWriter(args.dump, args.id_field or None)
    server = _make_server(args, drops, dump)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    timer: asyncio.TimerHandle | None = None

    def drop_on_time() -> None:
        nonlocal timer
        timer = None
        if server.drop():
            drops.done += 1
        interval = drops.next_interval()
        if interval is not None:
            timer = loop.call_later(interval, drop_on_time)

    def command(line: str) -> None:
        name, _, rest = line.strip().partition(" ")
        if name == "stop":
            _say("stopping")
            stop.set()
        elif name == "report":
            if dump is None:
                _say("error: no --dump file")
            else:
                _say(f"dumped {dump.count}")
        elif name == "drop":
            _say(f"dropped {server.drop()}")
        elif name == "publish":
            try:
                _say(f"published {server.publish(msgspec.json.decode(rest))}")
            except (ValueError, TypeError) as exc:
                _say(f"error: {exc}")
        elif name:
            _say(f"error: unknown command {name!r}")

    try:
        async with server:
            what = f", dump {args.dump}" if args.dump is not None else ""
            _say(f"serving ws://127.0.0.1:{server.port}/ (stop: Ctrl-C, SIGTERM or 'stop'{what})")
            threading.Thread(target=_read_commands, args=(loop, command), daemon=True).start()
            interval = drops.next_interval()
            if interval is not None:
                timer = loop.call_later(interval, drop_on_time)
            await stop.wait()
            if timer is not None:
                timer.cancel()
    finally:
        if dump is not None:
            dump.close(server)
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _read_commands(loop: asyncio.AbstractEventLoop, handle: Callable[[str], None]) -> None:
    """Read standard input (raw, so no buffer lock is held at exit) and pass on each line."""
    pending = b""
    while True:
        try:
            chunk = os.read(_STDIN, 65536)
        except OSError:
            return
        if not chunk:
            return  # end of input: keep serving until a signal
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting
                loop.call_soon_threadsafe(handle, line.decode("utf-8", "replace"))


if __name__ == "__main__":
    raise SystemExit(main())
