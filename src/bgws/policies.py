"""Delivery policies: how to recognise the server's acknowledgements and how to resume a feed.

Both are small immutable records that a :class:`bgws.Config` holds (``ack=``, ``resume=``),
written in Python or as TOML tables::

    [ack]
    message_type = "ack"
    id_field = "id"

    [resume]
    seq_field = "seq"
    request_type = "resume"
    position_field = "after"

Each also has a function form for servers whose shapes the fields cannot describe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .message import Message

__all__ = ["AckPolicy", "ResumePolicy"]


@dataclass(frozen=True, slots=True)
class AckPolicy:
    """How to recognise the server's acknowledgement of an outgoing message.

    With an ack policy a sent message stays in flight (at most ``max_in_flight`` at a time)
    until its ack arrives; after a reconnect or ``ack_timeout`` it is sent again with the same
    id, so the server can deduplicate.

    Args:
        message_type: the ``type`` of ack messages (``None``: any message type may carry acks).
        id_field: the field of the ack that holds the acknowledged id (or a list of ids).
        match: the function form: given an incoming message, return the acknowledged id, a list
            of ids, or ``None`` when the message is not an ack. When set, the two fields above
            are not used.
    """

    message_type: str | None = "ack"
    id_field: str = "id"
    match: Callable[[Message], Any] | None = None

    def __post_init__(self) -> None:
        if self.match is None:
            if not isinstance(self.id_field, str) or not self.id_field:
                raise ValueError("id_field must be a non-empty string")
            if self.message_type is not None and (
                not isinstance(self.message_type, str) or not self.message_type
            ):
                raise ValueError("message_type must be a non-empty string or None")
        elif not callable(self.match):
            raise ValueError("match must be callable")

    def acked_ids(self, message: Message) -> list[Any] | None:
        """The ids ``message`` acknowledges, or ``None`` when it is not an ack."""
        if self.match is not None:
            found = self.match(message)
        else:
            if self.message_type is not None and message.type != self.message_type:
                return None
            found = message.get(self.id_field)
        if found is None:
            return None
        if isinstance(found, list | tuple):
            return list(found)
        return [found]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for status output and TOML round trips."""
        if self.match is not None:
            return {"match": _name(self.match)}
        return {"message_type": self.message_type, "id_field": self.id_field}


@dataclass(frozen=True, slots=True)
class ResumePolicy:
    """How to resume an inbound feed after a reconnect.

    Inbound messages carry a sequence number in ``seq_field``. The service remembers the last
    one processed (persisted in batches), drops messages at or below it as duplicates, reports
    a jump as a :class:`bgws.SequenceGap` with the missing range, and after every reconnect
    sends ``{type_field: request_type, position_field: <last processed seq>}``.

    Args:
        seq_field: the field that carries the sequence number (an integer).
        request_type: the ``type`` of the resume request.
        position_field: the field of the resume request that carries the position.
        request: the function form: given the last processed sequence, return the whole resume
            message (a mapping, str or bytes). When set, ``request_type`` and
            ``position_field`` are not used.
        epoch_field: the field that names the feed's epoch (the server's numbering), or
            ``None``. A message of another epoch is reported as a :class:`bgws.StreamReset`
            (not a gap); the position restarts from it and is kept with its epoch, and the
            resume request carries the epoch in this same field (not the function form).
    """

    seq_field: str = "seq"
    request_type: str = "resume"
    position_field: str = "after"
    request: Callable[[int], Mapping[str, Any] | str | bytes] | None = None
    epoch_field: str | None = None

    def __post_init__(self) -> None:
        names = ("seq_field", "request_type", "position_field")
        for name in names + (("epoch_field",) if self.epoch_field is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        if self.request is not None and not callable(self.request):
            raise ValueError("request must be callable")

    def resume_message(
        self, position: int, type_field: str, epoch: Any = None
    ) -> Mapping[str, Any] | str | bytes:
        """The message that asks the server to replay everything after ``position``.

        Args:
            position: the last processed sequence number.
            type_field: the codec's type field.
            epoch: the epoch ``position`` belongs to (sent in ``epoch_field``), or ``None``.
        """
        if self.request is not None:
            return self.request(position)
        message: dict[str, Any] = {type_field: self.request_type, self.position_field: position}
        if self.epoch_field is not None and epoch is not None:
            message[self.epoch_field] = epoch
        return message

    def to_dict(self) -> dict[str, Any]:
        """Plain data for status output and TOML round trips."""
        data: dict[str, Any] = {"seq_field": self.seq_field}
        if self.request is not None:
            data["request"] = _name(self.request)
        else:
            data.update(request_type=self.request_type, position_field=self.position_field)
        if self.epoch_field is not None:
            data["epoch_field"] = self.epoch_field
        return data


def _name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", "?")
    return f"{module}:{getattr(func, '__qualname__', type(func).__name__)}"
