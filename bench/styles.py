"""The documented handler styles: a bgws service built each way users build one.

Each style builds its service exactly as the docs show it, so the benchmark measures the code
users write, not only bgws' fastest configuration:

* ``def``: a plain function registered with ``@service.on("tick")`` (docs/tutorial.md);
* ``async``: an ``async def`` function registered the same way (the README's shape);
* ``class``: a ``bgws.MessageHandler`` subclass with ``async def handle_message`` given as
  ``message_handler=`` to a factory (the seed's shape, docs/seed-mapping.md and
  docs/handlers-and-plugins.md);
* ``chat``: ``bgws.create_chat_service(...)`` with the chat profile's notification rules
  (``notify_types=["chat_message"]``) in front of an ``async def`` handler (the README);
* ``plugins``: a plain ``def`` handler behind 3 ``bgws.Plugin`` subclasses
  (docs/handlers-and-plugins.md): two claim other types (``typing``, ``presence``) and one
  watches every type (``"*"``) and counts without claiming.

A row's variant names its style (see :func:`style_of`): the ``def`` style keeps the variant
names the rows had before styles existed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bgws

__all__ = ["STYLES", "STYLE_LABELS", "build", "style_of", "style_variants", "variant_label"]

STYLES = ("def", "async", "class", "chat", "plugins")
"""Every style, in table order (``--styles`` picks among them)."""

STYLE_LABELS = {
    "def": "def handler",
    "async": "async def handler",
    "class": "MessageHandler class",
    "chat": "chat profile",
    "plugins": "3 plugins",
}

_HANDLER_PREFIX = "handler"
"""Echo variants through ``send()`` plus a handler: ``handler`` (def) or ``handler-<style>``."""


def style_variants(workload: str) -> tuple[str, ...]:
    """The bgws variants of ``workload`` that measure a style, the ``def`` style first."""
    others = STYLES[1:]
    if workload in ("receive", "send"):
        return ("memory", *others)
    if workload == "echo":
        handler = (_HANDLER_PREFIX, *(f"{_HANDLER_PREFIX}-{s}" for s in others))
        return ("", *others, *handler)
    return ()


def style_of(workload: str, variant: str) -> str | None:
    """The style a bgws row measures, or ``None`` for a row that is not a style row."""
    if variant not in style_variants(workload):
        return None
    name = variant.removeprefix(_HANDLER_PREFIX).removeprefix("-")
    return "def" if name in ("", "memory") else name


def variant_label(workload: str, variant: str) -> str | None:
    """The label of a style row (``None`` for other rows), e.g. ``send+handler, chat profile``."""
    style = style_of(workload, variant)
    if style is None:
        return None
    if workload == "echo":
        how = "send+handler" if variant.startswith(_HANDLER_PREFIX) else "request"
        return f"{how}, {STYLE_LABELS[style]}"
    return "" if style == "def" else STYLE_LABELS[style]


class _Typing(bgws.Plugin):
    plugin_name = "typing-indicator"
    supported_message_types = ("typing",)

    def handle_message(self, message: bgws.Message) -> bool:
        return True  # claimed: handlers do not see it


class _Presence(bgws.Plugin):
    plugin_name = "presence"
    supported_message_types = ("presence",)

    def __init__(self) -> None:
        self.online: set[Any] = set()

    def handle_message(self, message: bgws.Message) -> bool:
        self.online.add(message.get("user"))
        return True


class _Counter(bgws.Plugin):
    plugin_name = "message-counter"
    supported_message_types = ("*",)

    def __init__(self) -> None:
        self.seen = 0

    def handle_message(self, message: bgws.Message) -> bool:
        self.seen += 1
        return False  # a tap: the handlers still see every message


def build(
    style: str,
    values: dict[str, Any],
    kind: str,
    on_message: Callable[[bgws.Message], None],
) -> bgws.Service:
    """A service built in ``style``, whose handler for ``kind`` calls ``on_message``.

    The ``def`` styles register ``on_message`` itself; the ``async def`` and class styles call
    it from their coroutine (one Python call more per message than the user's own body).

    Args:
        style: one of :data:`STYLES`.
        values: every config field (``app_name``, ``url``, ``storage`` and the rest).
        kind: the message type the handler is registered for.
        on_message: what the handler does with each message of that type.

    Raises:
        ValueError: an unknown style.
    """
    if style == "chat":
        options = dict(values)
        service = bgws.create_chat_service(
            app_name=options.pop("app_name"),
            url=options.pop("url"),
            storage=options.pop("storage"),
            **options,
        )
        style = "async"
    elif style == "class":

        class Handler(bgws.MessageHandler):
            async def handle_message(self, message: bgws.Message) -> None:
                if message.type == kind:
                    on_message(message)

        return bgws.create_custom_service(config=bgws.Config(**values), message_handler=Handler())
    elif style == "plugins":
        plugins = [_Typing(), _Presence(), _Counter()]
        service = bgws.create_custom_service(config=bgws.Config(**values), plugins=plugins)
        style = "def"
    elif style in ("def", "async"):
        service = bgws.Service(bgws.Config(**values))
    else:
        raise ValueError(f"unknown style {style!r} (known: {', '.join(STYLES)})")
    if style == "async":

        @service.on(kind)
        async def on_async(message: bgws.Message) -> None:
            on_message(message)

    else:  # the function itself is the handler: no extra call per message
        service.on(kind)(on_message)
    return service
