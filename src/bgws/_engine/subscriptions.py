"""Subscriptions: messages kept in the store and sent again after every reconnect.

:class:`Subscriptions` holds a service's subscriptions by key, in the order they were made;
the writer sends them after the resume request and before the outbox on every fresh link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..message import Codec
from .outbox import Entry

if TYPE_CHECKING:
    from .store import Store
    from .writer import Frame, Writer

__all__ = ["Subscriptions"]

_key_encoder = msgspec.json.Encoder(order="sorted")


class Subscriptions:
    """The kept subscriptions of one service.

    Args:
        codec: encodes the subscription messages.
        store: where they are kept.
        writer: sends a new subscription at once when connected.
    """

    __slots__ = ("_codec", "_kept", "_store", "_writer")

    def __init__(self, codec: Codec, store: Store, writer: Writer) -> None:
        self._codec = codec
        self._store = store
        self._writer = writer
        self._kept: dict[str, Entry] = {}

    def load(self, kept: list[tuple[str, Entry]]) -> None:
        """Take the subscriptions the store kept."""
        self._kept = dict(kept)

    def key(self, message: Mapping[str, Any] | str | bytes) -> str:
        """The default key of a subscription: the message without its type and id fields.

        So ``{"type": "subscribe", "channel": "ticks"}`` and
        ``{"type": "unsubscribe", "channel": "ticks"}`` share the key ``{"channel":"ticks"}``.
        """
        if isinstance(message, Mapping):
            skip = {self._codec.type_field, self._codec.id_field}
            body = {k: v for k, v in message.items() if k not in skip}
            return _key_encoder.encode(body).decode()
        return message if isinstance(message, str) else message.hex()

    async def add(self, message: Mapping[str, Any] | str | bytes, key: str | None) -> str:
        """Keep ``message`` and send it now (if connected) and after every reconnect."""
        key = key if key is not None else self.key(message)
        payload, binary, _ = self._codec.encode(message, assign_id=False)
        entry = Entry(payload, binary)
        await self._store.put_subscription(key, entry)
        self._kept.pop(key, None)
        self._kept[key] = entry
        self._writer.control((payload, binary))
        return key

    async def remove(self, key: str) -> bool:
        """Forget the subscription under ``key``; returns whether it existed."""
        existed = self._kept.pop(key, None) is not None
        await self._store.drop_subscription(key)
        return existed

    def frames(self) -> list[Frame]:
        """The subscription messages, in the order they are re-sent."""
        return [(entry.payload, entry.binary) for entry in self._kept.values()]

    @property
    def keys(self) -> list[str]:
        """The keys of the kept subscriptions, in the order they are re-sent."""
        return list(self._kept)
