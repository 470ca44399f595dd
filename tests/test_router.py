"""The router: where a message goes, in what order, and what it does with failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import bgws
from bgws._engine.router import Router
from bgws.errors import BgwsError, HandlerError
from bgws.message import Codec
from bgws.plugins import PluginChain

CODEC = Codec()


def message(msg_type: str | None) -> bgws.Message:
    """A decoded JSON message of ``msg_type`` (no type field when ``None``)."""
    payload = b"{}" if msg_type is None else b'{"type":"%s"}' % msg_type.encode()
    return CODEC.decode(payload, False, 0.0)


class Reports:
    """Collects what the router reports, and counts the wake-ups it asks for."""

    def __init__(self) -> None:
        self.errors: list[BgwsError] = []
        self.wakes = 0

    async def report(self, error: BgwsError) -> None:
        self.errors.append(error)

    def wake(self) -> None:
        self.wakes += 1


def new_router() -> tuple[Router, Reports]:
    """A router wired to a fresh :class:`Reports`."""
    reports = Reports()
    router = Router(reports.report)
    router.notify(reports.wake)
    return router, reports


class Interceptor:
    """An interceptor that consumes messages of type ``ack`` while ``intercepts``."""

    def __init__(self) -> None:
        self.intercepts = False
        self._changed: Callable[[], None] = lambda: None

    def intercept(self, message: bgws.Message) -> bool:
        return message.type == "ack"

    def watch(self, changed: Callable[[], None]) -> None:
        self._changed = changed

    def set(self, intercepts: bool) -> None:
        self.intercepts = intercepts
        self._changed()

    def takes_early(self) -> bool:
        return False

    def take_early(self, message: bgws.Message) -> bool:
        return False


async def test_plugins_then_type_handlers_then_message_handler_then_catch_alls() -> None:
    """Plugins see a message first, then its type handlers in order, then the
    MessageHandler; catch-alls only get messages that no type handler matched."""
    seen: list[str] = []

    class Watch(bgws.Plugin):
        supported_message_types = ("a",)

        def handle_message(self, message: bgws.Message) -> bool:
            seen.append("plugin")
            return False

    class Everything(bgws.MessageHandler):
        async def handle_message(self, message: bgws.Message) -> None:
            seen.append(f"class {message.type}")

    router, reports = new_router()
    router.add_route("a", lambda m: seen.append("a1"))
    router.add_route("a", lambda m: seen.append("a2"))
    router.add_route(None, lambda m: seen.append(f"any {m.type}"))
    router.configure(plugins=PluginChain([Watch()]), message_handler=Everything(), heartbeat=None)
    await router.dispatch(message("a"))
    await router.dispatch(message("b"))
    assert seen == ["plugin", "a1", "a2", "class a", "class b", "any b"]
    assert reports.errors == []


async def test_a_claiming_plugin_stops_the_message() -> None:
    """A plugin returning True claims the message: no handler sees it."""
    seen: list[str] = []

    class Claim(bgws.Plugin):
        supported_message_types = ("a",)

        def handle_message(self, message: bgws.Message) -> bool:
            return True

    router, _ = new_router()
    router.add_route("a", lambda m: seen.append("a"))
    router.configure(plugins=PluginChain([Claim()]), message_handler=None, heartbeat=None)
    assert router.route(message("a")) is None
    assert seen == []


def test_direct_table_only_while_nothing_but_handlers_is_in_play() -> None:
    """A type with only plain handlers is routable by one lookup, but not while a tap
    or an intercepting interceptor is in play, and again once they are gone."""
    router, _ = new_router()
    router.add_route("a", lambda m: None)
    interceptor = Interceptor()
    router.configure(
        plugins=PluginChain(()), message_handler=None, heartbeat=None, interceptor=interceptor
    )
    router.route(message("a"))
    assert "a" in router.direct
    remove = router.add_tap(lambda m: None)
    assert router.direct == {}
    router.route(message("a"))
    assert router.direct == {}  # a tap must see every message
    remove()
    router.route(message("a"))
    assert "a" in router.direct
    interceptor.set(True)
    assert router.direct == {}
    assert router.route(message("ack")) is None  # consumed
    router.route(message("a"))
    assert router.direct == {}  # the interceptor must see every message
    interceptor.set(False)
    router.route(message("a"))
    assert "a" in router.direct


def test_a_lone_async_handler_goes_to_the_async_table_not_the_plain_one() -> None:
    """A type whose only handler is async is found by one lookup in the async table (the
    inbox drives its coroutine), never in the plain one; with more handlers, in neither."""
    router, _ = new_router()

    async def slow(message: bgws.Message) -> None:
        return None

    router.add_route("a", slow)
    router.add_route("b", lambda m: None)
    router.add_route("b", slow)
    for msg_type in ("a", "b"):
        found = router.route(message(msg_type))
        assert found is not None
        assert found[1] is False
    assert router.direct == {}
    assert router.direct_async == {"a": slow}
    router.add_tap(lambda m: None)
    assert router.direct_async == {}


async def test_inline_handlers_after_a_suspended_one_wait_for_it() -> None:
    """Handlers run inline in order; once one suspends, the handlers after it (the class
    handler here) run only when the task finishes it; a failure before suspending is
    noted, one after is reported at once."""
    seen: list[str] = []
    gate = asyncio.Event()

    async def first(m: bgws.Message) -> None:
        seen.append("first")
        raise ValueError("before")

    async def second(m: bgws.Message) -> None:
        seen.append("second")
        await gate.wait()
        seen.append("second done")
        raise KeyError("after")

    class Everything(bgws.MessageHandler):
        def handle_message(self, message: bgws.Message) -> None:  # type: ignore[override]
            seen.append("class")

    router, reports = new_router()
    router.add_route("a", first)
    router.add_route("a", second)
    router.configure(plugins=PluginChain(()), message_handler=Everything(), heartbeat=None)
    found = router.route(message("a"))
    assert found is not None
    suspended = router.run_inline(found[0], message("a"))
    assert suspended is not None
    assert seen == ["first", "second"]
    assert [type(e.__cause__) for e in router.unreported] == [ValueError]
    asyncio.get_running_loop().call_soon(gate.set)
    await asyncio.wait_for(_finish(suspended), timeout=5)
    assert seen == ["first", "second", "second done", "class"]
    assert [type(e.__cause__) for e in reports.errors] == [KeyError]


async def _finish(awaitable: Awaitable[None]) -> None:
    await awaitable


def test_the_default_class_handler_costs_messages_nothing() -> None:
    """A MessageHandler that does not override handle_message is left out of routing: a
    plain handler's type stays in the plain table, with the handler itself as its runner."""

    class Watcher(bgws.MessageHandler):
        def on_connection_lost(self) -> None:
            return None

    def handle(m: bgws.Message) -> None:
        return None

    router, _ = new_router()
    router.add_route("a", handle)
    router.configure(plugins=PluginChain(()), message_handler=Watcher(), heartbeat=None)
    router.route(message("a"))
    assert router.direct["a"] is handle


async def test_plain_failures_are_noted_in_order_and_the_next_handler_runs() -> None:
    """A plain handler that raises is noted (and the inbox woken), the next handler still
    runs, and the noted errors are reported in order."""
    seen: list[str] = []

    def first(message: bgws.Message) -> None:
        raise ValueError("first")

    def second(message: bgws.Message) -> None:
        raise KeyError("second")

    router, reports = new_router()
    router.add_route("a", first)
    router.add_route("a", second)
    router.add_route("a", lambda m: seen.append("third"))
    found = router.route(message("a"))
    assert found is not None
    router.run_plain(found[0], message("a"))
    assert seen == ["third"]
    assert reports.wakes == 2
    assert len(router.unreported) == 2
    assert router.handler_errors == 2
    await router.report_unreported()
    assert router.unreported == []
    assert [type(e.__cause__) for e in reports.errors] == [ValueError, KeyError]
    assert all(isinstance(e, HandlerError) for e in reports.errors)


async def test_async_handler_failure_is_reported_at_once() -> None:
    """An async handler that raises is reported when it fails, not noted for later."""
    router, reports = new_router()

    async def broken(message: bgws.Message) -> None:
        raise RuntimeError("broken")

    router.add_route("a", broken)
    await router.dispatch(message("a"))
    assert router.unreported == []
    assert reports.wakes == 0
    assert len(reports.errors) == 1
    assert isinstance(reports.errors[0].__cause__, RuntimeError)


# -- plugins, taps and heartbeats cost only the types they watch ------------------------------


class Claims(bgws.Plugin):
    """A plugin for ``types`` that records what it sees and claims type ``claimed``."""

    def __init__(self, name: str, types: tuple[str, ...], seen: list[str]) -> None:
        self.plugin_name = name
        self.supported_message_types = types
        self._seen = seen

    def handle_message(self, message: bgws.Message) -> bool:
        self._seen.append(f"{self.plugin_name}:{message.type}")
        if message.type == "boom":
            raise ValueError("boom")
        return message.type == "claimed"


def test_a_plugin_for_other_types_leaves_a_type_on_the_direct_route() -> None:
    """A type no plugin, tap or heartbeat watches is routed by one dict lookup to its
    handler, even when plugins watch other types and a heartbeat replies with another."""
    seen: list[str] = []

    def handle(m: bgws.Message) -> None:
        seen.append(f"handler:{m.type}")

    router, _ = new_router()
    router.add_route("tick", handle)
    chain = PluginChain((Claims("typing", ("typing",), seen),))
    router.configure(plugins=chain, message_handler=None, heartbeat=bgws.HeartbeatHandler())
    router.route(message("tick"))
    assert router.direct["tick"] is handle
    assert seen == []


def test_watching_plugins_run_in_the_direct_runner_in_order() -> None:
    """A type that plugins watch gets a direct runner that runs them first: a claim stops
    the handlers, a failing plugin is noted by name and the next one still runs."""
    seen: list[str] = []

    def handle(m: bgws.Message) -> None:
        seen.append(f"handler:{m.type}")

    router, reports = new_router()
    for msg_type in ("tick", "claimed", "boom"):
        router.add_route(msg_type, handle)
    chain = PluginChain((Claims("all", ("*",), seen), Claims("more", ("*",), seen)))
    router.configure(plugins=chain, message_handler=None, heartbeat=None)
    for msg_type in ("tick", "claimed", "boom"):
        router.route(message(msg_type))  # fills the direct table (and runs the plugins once)
    seen.clear()
    for msg_type in ("tick", "claimed", "boom"):
        router.direct[msg_type](message(msg_type))
    assert seen == [
        "all:tick",
        "more:tick",
        "handler:tick",
        "all:claimed",
        "all:boom",
        "more:boom",
        "handler:boom",
    ]
    assert [e.where for e in router.unreported[-2:]] == ["plugin all", "plugin more"]
    assert reports.wakes == 4


def test_a_custom_heartbeat_test_sees_every_message() -> None:
    """A heartbeat handler with its own is_heartbeat_reply keeps every type off the direct
    route, so it sees every message; the default one only watches type "pong"."""

    class Custom(bgws.HeartbeatHandler):
        def is_heartbeat_reply(self, message: bgws.Message) -> bool:
            return message.get("pong") is True

    router, _ = new_router()
    router.add_route("tick", lambda m: None)
    router.configure(plugins=PluginChain(()), message_handler=None, heartbeat=Custom())
    router.route(message("tick"))
    assert "tick" not in router.direct
    router.configure(
        plugins=PluginChain(()), message_handler=None, heartbeat=bgws.HeartbeatHandler()
    )
    router.route(message("tick"))
    router.route(message("pong"))
    assert "tick" in router.direct
    assert "pong" not in router.direct
