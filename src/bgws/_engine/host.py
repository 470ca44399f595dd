"""What a service lends its plugins: :class:`ServiceHost`, the :class:`bgws.plugins.PluginHost`.

A plugin that moves messages between the service and another system (the NATS bridge) needs
three things of the engine, each through a seam of its own: the durable outbox
(``send_many``), the saved resume position (:meth:`Resume.hold
<bgws._engine.replay.Resume.hold>`) and the link's reading (:meth:`InboxLoad.hold_reading
<bgws._engine.inboxload.InboxLoad.hold_reading>`). The host hands them over and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from ..config import Config
from ..errors import BgwsError
from .inboxload import InboxLoad
from .replay import Resume

__all__ = ["ServiceHost"]

SendMany = Callable[[Iterable[Mapping[str, Any] | str | bytes]], Awaitable[list[Any]]]
"""The service's ``send_many``."""


class ServiceHost:
    """The :class:`~bgws.plugins.PluginHost` of one service.

    Args:
        config: the service's configuration.
        send_many: puts messages into the durable outbox in one commit.
        resume: the resume position, or ``None`` without a resume policy.
        load: the inbox's flow control (pauses the link's reading).
        report: reports an error without waiting.
    """

    __slots__ = ("_load", "_report", "_resume", "_send_many", "config")

    def __init__(
        self,
        config: Config,
        send_many: SendMany,
        resume: Resume | None,
        load: InboxLoad,
        report: Callable[[BgwsError], None],
    ) -> None:
        self.config = config
        self._send_many = send_many
        self._resume = resume
        self._load = load
        self._report = report

    @property
    def name(self) -> str:
        """The service's tag."""
        return self.config.service_tag or self.config.app_name

    async def send_many(self, messages: Iterable[Mapping[str, Any] | str | bytes]) -> list[Any]:
        """Put messages into the durable outbox in one commit."""
        return await self._send_many(messages)

    def hold_position(self) -> Callable[[int], None] | None:
        """``release(seq)`` for the saved resume position, or ``None`` without resume.

        Raises:
            ServiceError: another plugin holds it already.
        """
        return None if self._resume is None else self._resume.hold()

    def hold_reading(self) -> None:
        """Pause reading until :meth:`release_reading`."""
        self._load.hold_reading()

    def release_reading(self) -> None:
        """Read again (once the inbox's bounds allow it)."""
        self._load.release_reading()

    def report(self, error: BgwsError) -> None:
        """Report ``error`` to the service's error handler."""
        self._report(error)
