"""The outbound half of the bridge: commands from a durable JetStream consumer to the outbox.

:class:`Consumer` pulls batches from one durable consumer per service (explicit acks), puts
each batch into the service's durable outbox in one commit (``send_many``), and acks the batch
to JetStream only after that commit. A crash between the two makes JetStream deliver the batch
again; each command's bgws message id comes from its JetStream stream sequence
(``<stream>-<seq>``), so the copy carries the same id and the WebSocket server can drop it.

A JSON object keeps an id it already has in the config's ``id_field``; other payloads go out
as they are (text when they are UTF-8, else binary), with no id. While the outbox is full the
batch waits (JetStream is told the work is in progress), and nothing is acked.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import QueueFull, ServiceClosed
from ._publish import BridgeError

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

__all__ = ["Consumer", "durable_name"]

_BATCH = 256
_ACK_WAIT = 5.0
"""Seconds JetStream waits for an ack before it delivers a command again: after a crash, the
commands fetched but not acked go to the next daemon this long after they were fetched (a full
outbox keeps telling JetStream that the work is in progress)."""
_FETCH_WAIT = 1.0
_FULL_WAIT = 0.05
_NOT_DURABLE = re.compile(r"[^A-Za-z0-9_-]")

SendMany = Callable[[Iterable[Mapping[str, Any] | str | bytes]], Awaitable[list[Any]]]


def durable_name(service: str) -> str:
    """The durable consumer's name for ``service`` (``bgws-<service>``, dots as ``_``)."""
    return "bgws-" + _NOT_DURABLE.sub("_", service)


class Consumer:
    """Moves commands from a durable JetStream consumer into the service's outbox.

    Args:
        subject: the subject consumed (the rendered ``consume`` template).
        stream: the stream it belongs to.
        durable: the durable consumer's name.
        id_field: where a JSON command's id goes (``None``: no id).
        send_many: puts messages into the durable outbox in one commit.
        note: counts and reports an error.
    """

    __slots__ = (
        "_durable",
        "_id_field",
        "_note",
        "_send_many",
        "_stream",
        "_subject",
        "consumed",
        "pending",
        "stopped",
    )

    def __init__(
        self,
        subject: str,
        stream: str,
        durable: str,
        id_field: str | None,
        send_many: SendMany,
        note: Callable[[BridgeError], None],
    ) -> None:
        self._subject = subject
        self._stream = stream
        self._durable = durable
        self._id_field = id_field
        self._send_many = send_many
        self._note = note
        self.consumed = 0
        self.stopped = False  # set at stop: the loop ends at its next round
        self.pending: int | None = None  # what the consumer still has to deliver (lag)

    async def run(self, js: JetStreamContext, max_ack_pending: int) -> None:
        """Consume forever (cancelled at stop); errors are noted and retried."""
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig

        config = ConsumerConfig(
            durable_name=self._durable,
            ack_policy=AckPolicy.EXPLICIT,
            max_ack_pending=max_ack_pending,
            ack_wait=_ACK_WAIT,
        )
        sub = None
        delay = 0.1
        while not self.stopped:  # also ends a loop whose cancel nats-py swallowed
            try:
                if sub is None:
                    sub = await js.pull_subscribe(
                        self._subject, durable=self._durable, stream=self._stream, config=config
                    )
                batch = await sub.fetch(_BATCH, timeout=_FETCH_WAIT)
            except (TimeoutError, nats.errors.TimeoutError):
                # nats-py raises either when nothing came, depending on where its wait ended
                self.pending = 0 if self.pending is not None else None
                continue
            except Exception as exc:
                self._note(BridgeError(f"consumer {self._durable}: {type(exc).__name__}: {exc}"))
                await asyncio.sleep(delay)  # a pause between retries, not synchronisation
                delay = min(delay * 2, 2.0)
                continue
            if not batch:  # the pull request expired on the broker (a 408): nothing came
                self.pending = 0 if self.pending is not None else None
                continue
            delay = 0.1
            try:
                if not await self._deliver(batch):
                    return
            except Exception as exc:  # not acked: JetStream delivers it again, same ids
                self._note(BridgeError(f"consumer {self._durable}: {type(exc).__name__}: {exc}"))

    async def _deliver(self, batch: list[Msg]) -> bool:
        """Outbox first, then ack; ``False`` once the service is closed."""
        commands = [self._command(msg) for msg in batch]
        while True:
            try:
                await self._send_many(commands)
                break
            except QueueFull:
                for msg in batch:  # not acked yet: keep JetStream from delivering it again
                    await msg.in_progress()
                await asyncio.sleep(_FULL_WAIT)
            except ServiceClosed:
                return False
        for msg in batch:
            await msg.ack()
        self.consumed += len(batch)
        self.pending = batch[-1].metadata.num_pending
        return True

    def _command(self, msg: Msg) -> Mapping[str, Any] | str | bytes:
        data = msg.data
        id_field = self._id_field
        if data[:1] == b"{":
            try:
                command = msgspec.json.decode(data)
            except msgspec.DecodeError:
                command = None
            if isinstance(command, dict):
                if id_field is not None and id_field not in command:
                    command[id_field] = f"{self._stream}-{msg.metadata.sequence.stream}"
                return command
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return bytes(data)
