"""Plugins: one typed contract, composed once when the service starts.

A plugin sees the messages whose type it lists in ``supported_message_types`` before any
handler does; returning ``True`` from :meth:`Plugin.handle_message` claims the message, and no
handler sees it. Plugins hear the connection and service lifecycle too. The set of plugins is
fixed at start: adding one to a running service raises.

A plugin that moves messages between the service and something else (the NATS bridge) is
handed a :class:`PluginHost` at start (:meth:`Plugin.bind`): the service's durable outbox, its
resume position and its reading, lent through one typed contract.
"""

from __future__ import annotations

import inspect
from abc import ABC
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from .message import Message

if TYPE_CHECKING:
    from .config import Config
    from .errors import BgwsError

__all__ = ["Plugin", "PluginChain", "PluginHost"]


class PluginHost(Protocol):
    """What a service lends its plugins at start (see :meth:`Plugin.bind`)."""

    @property
    def name(self) -> str:
        """The service's tag (``Config.service_tag``)."""
        ...

    @property
    def config(self) -> Config:
        """The service's configuration."""
        ...

    async def send_many(self, messages: Iterable[Mapping[str, Any] | str | bytes]) -> list[Any]:
        """Put messages into the durable outbox in one commit (see ``Service.send_many``)."""
        ...

    def hold_position(self) -> Callable[[int], None] | None:
        """Save the resume position only as far as the plugin releases it.

        Returns:
            ``release(seq)``, or ``None`` when the service has no resume policy.

        Raises:
            ServiceError: another plugin holds it already.
        """
        ...

    def hold_reading(self) -> None:
        """Pause reading the WebSocket (on this link and the next) until released."""
        ...

    def release_reading(self) -> None:
        """Read again (once the inbox's own bounds allow it too)."""
        ...

    def report(self, error: BgwsError) -> None:
        """Report ``error`` to the service's error handler (counted in its stats)."""
        ...


class Plugin(ABC):
    """A reusable extension of a service (the seed's ``BackgroundServicePlugin``).

    Example::

        class Typing(bgws.Plugin):
            plugin_name = "typing-indicator"
            supported_message_types = ("typing",)

            def handle_message(self, message: bgws.Message) -> bool:
                show_typing(message.data["user"])
                return True          # claimed: handlers do not see it
    """

    plugin_name: str = ""
    """A name for logs and errors; defaults to the class name."""

    supported_message_types: Sequence[str] = ()
    """The message types this plugin wants to see; ``"*"`` means every type."""

    def initialize(self) -> Awaitable[None] | None:
        """Called once when the service starts, before any message. Default: nothing."""
        return None

    def bind(self, host: PluginHost) -> None:
        """Called once when the service starts, before :meth:`initialize`. Default: nothing.

        Args:
            host: what the service lends its plugins (outbox, resume position, reading).
        """

    def handle_message(self, message: Message) -> bool:
        """Look at a message of a supported type; return ``True`` to claim it."""
        return False

    def on_connection_changed(self, is_connected: bool) -> Awaitable[None] | None:
        """The link went up (``True``) or down (``False``). Default: nothing."""
        return None

    def on_service_started(self) -> Awaitable[None] | None:
        """The service started. Default: nothing."""
        return None

    def on_service_stopped(self) -> Awaitable[None] | None:
        """The service stopped. Default: nothing."""
        return None

    def dispose(self) -> Awaitable[None] | None:
        """Release what the plugin holds; called once, after the service stopped."""
        return None

    @property
    def name(self) -> str:
        """``plugin_name``, or the class name when that is empty."""
        return self.plugin_name or type(self).__name__


class PluginChain:
    """The plugins of one service, indexed by message type once, at start.

    Args:
        plugins: the plugins, in the order they should see messages.
    """

    __slots__ = ("_by_type", "_wildcard", "plugins")

    def __init__(self, plugins: Iterable[Plugin]) -> None:
        self.plugins: tuple[Plugin, ...] = tuple(plugins)
        for plugin in self.plugins:
            if not isinstance(plugin, Plugin):
                raise TypeError(f"{plugin!r} is not a bgws.Plugin")
            if inspect.iscoroutinefunction(plugin.handle_message):
                raise TypeError(
                    f"{plugin.name}.handle_message must be a plain method returning bool: "
                    "claiming a message is decided at once, before the handlers run"
                )
        by_type: dict[str, list[Plugin]] = {}
        wildcard: list[Plugin] = []
        for plugin in self.plugins:
            types = plugin.supported_message_types
            if isinstance(types, str):
                raise TypeError(f"{plugin.name}: supported_message_types must be a sequence")
            for msg_type in types:
                if msg_type == "*":
                    wildcard.append(plugin)
                else:
                    by_type.setdefault(msg_type, []).append(plugin)
        # A wildcard plugin sees every type, in its place in the plugin order.
        order = {id(p): i for i, p in enumerate(self.plugins)}
        merged = {
            t: tuple(sorted({id(p): p for p in ps + wildcard}.values(), key=lambda p: order[id(p)]))
            for t, ps in by_type.items()
        }
        self._by_type: Mapping[str, tuple[Plugin, ...]] = MappingProxyType(merged)
        self._wildcard: tuple[Plugin, ...] = tuple(wildcard)

    def for_type(self, msg_type: str | None) -> tuple[Plugin, ...]:
        """The plugins that want messages of ``msg_type``, in order."""
        if msg_type is None:
            return self._wildcard
        return self._by_type.get(msg_type, self._wildcard)

    def __bool__(self) -> bool:
        return bool(self.plugins)

    def __len__(self) -> int:
        return len(self.plugins)
