"""What an application attaches to a service: handlers, taps, plugins, state listeners and
the subscriptions it keeps with the server.

:class:`Registration` is a half of :class:`bgws.Service` kept in a module of its own (the
service's module holds its life cycle): :meth:`~Registration.on`, :meth:`~Registration.tap`,
:meth:`~Registration.add_plugin`, :meth:`~Registration.on_state_change` and
:meth:`~Registration.state_changes`, and :meth:`~Registration.subscribe`,
:meth:`~Registration.unsubscribe` and :attr:`~Registration.subscriptions`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ServiceError
from .handlers import Handler
from .message import Message
from .plugins import Plugin
from .stats import StateChange

if TYPE_CHECKING:
    from ._engine.delivery import Delivery
    from ._engine.hooks import Hooks
    from ._engine.observe import StateWatch
    from ._engine.router import Router
    from .machine import Machine

__all__ = ["Registration"]

_F = TypeVar("_F", bound=Handler)


class Registration:
    """The application's registration calls of :class:`bgws.Service` (a base class of it)."""

    if TYPE_CHECKING:
        _delivery: Delivery
        _hooks: Hooks
        _machine: Machine
        _router: Router
        _watch: StateWatch

        def _check_open(self, what: str) -> None: ...

    def on(self, msg_type: str | None = None) -> Callable[[_F], _F]:
        """Register a handler for messages of ``msg_type`` (no type: the catch-all).

        Example::

            @service.on("chat_message")
            async def show(message: bgws.Message) -> None: ...
        """

        def register(func: _F) -> _F:
            self._router.add_route(msg_type, func)
            return func

        return register

    def tap(self, callback: Callable[[Message], None]) -> Callable[[], None]:
        """Watch every incoming message (after acks, replies and duplicates are taken out).

        A tap is a plain function called on the service's loop before the plugins; it cannot
        claim a message. Taps may come and go while the service runs (``bgws tail`` uses one).

        Returns:
            A function that removes the tap.
        """
        return self._router.add_tap(callback)

    def add_plugin(self, plugin: Plugin) -> None:
        """Add a plugin before the service starts.

        Raises:
            ServiceError: the service has started; plugins are composed once, at start.
        """
        if not self._machine.can("add_plugin"):
            raise ServiceError("plugins are composed at start; add them before start()")
        self._hooks.plugins.append(plugin)

    def on_state_change(self, callback: Callable[[StateChange], Any]) -> Callable[[], None]:
        """Call ``callback`` (plain or async) with every :class:`StateChange`.

        Returns:
            A function that unregisters the callback.
        """
        return self._watch.subscribe(callback)

    def state_changes(self, *, buffer: int = 64) -> AsyncIterator[StateChange]:
        """Iterate over state changes from now on; ends after ``CLOSED``.

        Args:
            buffer: changes kept for a slow reader; the oldest are dropped past that.
        """
        return self._watch.changes(buffer)

    async def subscribe(
        self, message: Mapping[str, Any] | str | bytes, *, key: str | None = None
    ) -> str:
        """Keep a subscription: sent now when connected, and again after every reconnect.

        Subscriptions are persisted with the store and re-sent before the outbox is flushed.

        Args:
            message: the subscription message.
            key: identifies the subscription for :meth:`unsubscribe`; by default the message
                without its type and id fields.

        Returns:
            The subscription's key.
        """
        self._check_open("subscribe")
        await self._delivery.open()
        return await self._delivery.subscribe(message, key)

    async def unsubscribe(
        self, message: Mapping[str, Any] | str | bytes | None = None, *, key: str | None = None
    ) -> bool:
        """Forget a subscription, and send ``message`` (e.g. an unsubscribe) when connected.

        The subscription is found by ``key``, or by the default key of ``message``.

        Returns:
            Whether such a subscription was kept.
        """
        self._check_open("unsubscribe")
        await self._delivery.open()
        return await self._delivery.unsubscribe(message, key)

    @property
    def subscriptions(self) -> list[str]:
        """The keys of the kept subscriptions, in the order they are re-sent."""
        return self._delivery.subscriptions
