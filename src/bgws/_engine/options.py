"""How one message is sent: the options of ``send()`` and ``request()``, in one place.

:class:`SendOptions` is what the engine's :meth:`Delivery.submit` takes instead of a row of
flags; :class:`SendArgs` and :class:`RequestArgs` type the same options as keyword arguments,
so the thread runner, the manager's facade and the local client pass them on
(``**options: Unpack[SendArgs]``) instead of declaring ``send()``'s signature again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

__all__ = ["PLAIN", "REQUEST", "RequestArgs", "SendArgs", "SendOptions"]


@dataclass(frozen=True, slots=True)
class SendOptions:
    """How one message is sent.

    Attributes:
        priority: its lane; higher priorities are sent first.
        ttl: seconds after which it is not sent any more, or ``None``.
        wait_for_ack: ``send()`` returns only once the server acknowledged it.
        timeout: how long ``wait_for_ack`` waits (``None``: ``ack_timeout``).
        durable: kept in the store until delivered (when the store is durable).
        request: a request: written as it comes, never opening a burst.
    """

    priority: int = 0
    ttl: float | None = None
    wait_for_ack: bool = False
    timeout: float | None = None
    durable: bool = True
    request: bool = False


PLAIN = SendOptions()
"""``send(message)`` with every default (shared: no struct per message)."""

REQUEST = SendOptions(durable=False, request=True)
"""A request at priority 0 (shared)."""


class SendArgs(TypedDict, total=False):
    """The keyword arguments of ``send()``, for facades that pass them on."""

    priority: int
    ttl: float | None
    wait_for_ack: bool
    timeout: float | None


class RequestArgs(TypedDict, total=False):
    """The keyword arguments of ``request()``, for facades that pass them on."""

    timeout: float | None
    priority: int
    dispatch_reply: bool
