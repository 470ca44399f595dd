"""Notifications: rules and templates, the log and desktop backends, and foreground notices."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws import notify
from bgws.notify import (
    MAX_BODY,
    DesktopNotifier,
    LogNotifier,
    NotificationRules,
    build_notifications,
    has_desktop_session,
    render,
    state_notice,
)
from bgws.testing import Server

from .conftest import Changes, ServiceFactory, fast_config

SESSION_VARIABLES = ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY")


class Recorder(bgws.NotificationHandler):
    """A notification handler that records what it is asked to show."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str, str | None]] = []
        self.states: list[Any] = []
        self._changed = asyncio.Event()

    async def notify(self, title: str, body: str, message: bgws.Message | None = None) -> None:
        self.notes.append((title, body, message.type if message is not None else None))
        self._changed.set()

    async def on_state_changed(self, state: Any) -> None:
        self.states.append(state)

    async def wait(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.notes) < count:
                self._changed.clear()
                await self._changed.wait()


def message(data: Any, type: str | None = "chat_message") -> bgws.Message:
    """A received message, as the codec would make it."""
    return bgws.Message(type, data)


def built(
    make_service: ServiceFactory,
    url: str,
    handler: bgws.NotificationHandler | None = None,
    **overrides: Any,
) -> tuple[bgws.Service, bgws.NotificationHandler, list[bgws.Plugin]]:
    """A test service, its notifier and its rule plugins, as Service.__init__ wired them."""
    service = make_service(url, notification_handler=handler, **overrides)
    plugins = [p for p in service._hooks.plugins if isinstance(p, NotificationRules)]
    return service, service._hooks.notifier, plugins  # type: ignore[return-value]


# -- templates --------------------------------------------------------------------------------


def test_render_fills_app_name_type_and_top_level_fields() -> None:
    """{app_name}, {type} and the message's own fields are filled in; {{ }} stay literal."""
    got = render(
        "{app_name}/{type}: {sender} says {text} {{x}}",
        message({"type": "chat_message", "sender": "ann", "text": "hi"}),
        "MyChat",
    )
    assert got == "MyChat/chat_message: ann says hi {x}"


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        ("[{sender}]", {"text": "hi"}, "[]"),  # missing
        ("[{sender}]", {"sender": None}, "[]"),  # null
        ("[{sender}]", "plain text frame", "[]"),  # not a JSON object
        ("[{price:.2f}]", {"price": 1.5}, "[1.50]"),
        ("[{price:.2f}]", {"price": "n/a"}, "[n/a]"),  # spec does not fit: plain text
        ("[{price:.2f}]", {}, "[]"),
        ("[{items}]", {"items": [1, 2]}, "[[1, 2]]"),
        ("[{text!r}]", {"text": "hi"}, "['hi']"),
    ],
)
def test_render_never_raises(template: str, data: Any, expected: str) -> None:
    """Missing, null, odd or mistyped fields render as plain text or nothing."""
    assert render(template, message(data), "App") == expected


def test_render_without_a_message_and_cut_long_text() -> None:
    """Without a message only app_name is known; text over the limit is cut with an ellipsis."""
    assert render("{app_name}: {type}{text}", None, "App") == "App: "
    long = render("{text}", message({"text": "x" * 5000}), "App")
    assert len(long) == MAX_BODY
    assert long.endswith("…")


def test_state_notice_words() -> None:
    """Connecting reads 'reconnecting' once the service has had a link; idle changes nothing."""
    assert state_notice(bgws.State.CONNECTING, was_connected=False) == "connecting"
    assert state_notice(bgws.State.CONNECTING, was_connected=True) == "reconnecting"
    assert state_notice(bgws.State.BACKING_OFF, was_connected=False) == "reconnecting"
    assert state_notice("connected", was_connected=False) == "connected"
    assert state_notice(bgws.State.FAILED, was_connected=True) == "failed"
    assert state_notice(bgws.State.CLOSED, was_connected=True) == "stopped"
    assert state_notice(bgws.State.IDLE, was_connected=False) is None
    assert state_notice("no such state", was_connected=False) is None


# -- building ---------------------------------------------------------------------------------


def test_build_picks_the_backend_by_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The given handler wins; else log, desktop or none by config; rules only with types."""
    for variable in SESSION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    base = fast_config("ws://127.0.0.1:9/", notify_types=["chat_message"])
    mine = Recorder()
    handler, plugins = build_notifications(base, mine)
    assert handler is mine
    assert [type(p) for p in plugins] == [NotificationRules]
    assert plugins[0].supported_message_types == ("chat_message",)
    assert type(build_notifications(base, None)[0]) is LogNotifier
    assert type(build_notifications(base.replace(notifications="desktop"), None)[0]) is (
        DesktopNotifier
    )
    silent, none_plugins = build_notifications(base.replace(notifications="none"), None)
    assert type(silent) is bgws.NotificationHandler
    assert none_plugins == []
    assert build_notifications(base.replace(notify_types=[]), mine)[1] == []


# -- rules on a real service ------------------------------------------------------------------


async def test_rules_notify_for_listed_types_only(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Only notify_types messages notify, rendered; handlers still see every message."""
    recorder = Recorder()
    service, _, _ = built(
        make_service,
        bgws_server.url,
        recorder,
        notify_types=["chat_message", "mention"],
        notify_title="{app_name}: {sender}",
        notify_body="{text}",
    )
    seen: list[str | None] = []
    service.on()(lambda m: seen.append(m.type))
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        bgws_server.push({"type": "user_status", "sender": "ann", "text": "online"})
        bgws_server.push({"type": "chat_message", "sender": "ann", "text": "hi"})
        bgws_server.push({"type": "typing", "sender": "bob"})
        bgws_server.push({"type": "mention", "text": "@you"})
        await recorder.wait(2)
        await bgws_server.wait_until(lambda: len(seen) == 4, timeout=5, what="4 dispatched")
    assert recorder.notes == [
        ("test: ann", "hi", "chat_message"),
        ("test: ", "@you", "mention"),
    ]
    assert seen == ["user_status", "chat_message", "typing", "mention"]


async def test_rules_drop_beyond_max_pending_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With max_pending notifications waiting, more are dropped and counted, warned once."""
    gate = asyncio.Event()

    class Slow(Recorder):
        async def notify(self, title: str, body: str, message: bgws.Message | None = None) -> None:
            await gate.wait()
            await super().notify(title, body, message)

    slow = Slow()
    config = fast_config("ws://127.0.0.1:9/", notify_types=["chat_message"])
    rules = NotificationRules(config, slow, max_pending=2)
    with caplog.at_level(logging.WARNING, logger="bgws.test.notify"):
        claims = [rules.handle_message(message({"text": str(i)})) for i in range(5)]
    assert claims == [False] * 5
    assert (rules.pending, rules.dropped) == (2, 3)
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1
    gate.set()
    await rules.dispose()
    assert [body for _, body, _ in slow.notes] == ["0", "1"]
    assert rules.pending == 0


async def test_a_raising_handler_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A notify that raises is reported on the notify logger; the plugin goes on."""

    class Broken(bgws.NotificationHandler):
        async def notify(self, title: str, body: str, message: bgws.Message | None = None) -> None:
            raise OSError("notification centre is gone")

    rules = NotificationRules(fast_config("ws://127.0.0.1:9/", notify_types=["x"]), Broken())
    with caplog.at_level(logging.WARNING, logger="bgws.test.notify"):
        assert rules.handle_message(message({}, "x")) is False
        await rules.dispose()
    assert "notification centre is gone" in caplog.text


# -- the log backend --------------------------------------------------------------------------


async def test_log_notifier_writes_debug_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """LogNotifier logs 'title: body' at DEBUG (private) on bgws.<tag>.notify, secrets as ***."""
    secret = "s3cr3t-t0ken-value"
    config = bgws.Config(
        app_name="Chat", url="wss://chat.example/ws", headers={"Authorization": f"Bearer {secret}"}
    )
    with caplog.at_level(logging.DEBUG, logger="bgws.chat.notify"):
        await LogNotifier(config).notify("Chat", f"your token is {secret}")
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("bgws.chat.notify", logging.DEBUG)
    assert record.getMessage() == "Chat: your token is ***"


async def test_chat_profile_never_logs_a_message_body_at_info(
    bgws_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A chat message's text reaches the log only at DEBUG, on any logger, with the chat profile."""
    service = bgws.create_chat_service(
        app_name="Chat", url=bgws_server.url, storage="memory", initial_reconnect_delay=0.01
    )
    logged = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "noon" in record.getMessage():
                logged.set()

    watch = Watch()
    logging.getLogger("bgws").addHandler(watch)
    try:
        with caplog.at_level(logging.DEBUG):
            async with service:
                await service.wait_for(bgws.State.CONNECTED, timeout=5)
                bgws_server.publish({"type": "chat_message", "text": "meet me at noon"})
                await asyncio.wait_for(logged.wait(), 5)
    finally:
        logging.getLogger("bgws").removeHandler(watch)
    bodies = [r for r in caplog.records if "meet me at noon" in r.getMessage()]
    assert bodies
    assert [r.levelno for r in bodies] == [logging.DEBUG] * len(bodies)


async def test_foreground_notices_in_the_log(
    bgws_server: Server, make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With foreground, the log shows each change of the notice once, through a reconnect."""
    service, notifier, _ = built(make_service, bgws_server.url, foreground=True)
    assert isinstance(notifier, LogNotifier)
    changes = Changes(service)
    with caplog.at_level(logging.INFO, logger="bgws.test.notify"):
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            bgws_server.drop()
            await changes.wait(bgws.State.CONNECTED, 2)
    notices = [r.getMessage() for r in caplog.records if r.name == "bgws.test.notify"]
    assert notices == [
        "test: connecting",
        "test: connected",
        "test: reconnecting",
        "test: connected",
        "test: stopped",
    ]


async def test_no_notices_without_foreground(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Without foreground, the handler hears no state changes."""
    recorder = Recorder()
    service, _, _ = built(make_service, bgws_server.url, recorder)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
    assert recorder.states == []


# -- the desktop backend: fallback ------------------------------------------------------------


def test_desktop_session_detection() -> None:
    """Linux needs a bus or a display; macOS and Windows are assumed to have a session."""
    assert not has_desktop_session({}, "linux")
    assert has_desktop_session({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert has_desktop_session({"DISPLAY": ":0"}, "freebsd14")
    assert has_desktop_session({}, "darwin")
    assert has_desktop_session({}, "win32")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="session detection on Linux")
async def test_desktop_without_session_falls_back_to_the_log_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No desktop session: notifications go to the log, with one warning per process."""
    for variable in SESSION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(notify, "_fallback_warned", False)
    config = fast_config("ws://127.0.0.1:9/", notifications="desktop")
    with caplog.at_level(logging.DEBUG, logger="bgws"):
        first = build_notifications(config, None)[0]
        second = build_notifications(config.replace(service_tag="other"), None)[0]
        await first.notify("Title", "body")
    assert isinstance(first, DesktopNotifier)
    assert isinstance(second, DesktopNotifier)
    assert not first.is_desktop
    assert not second.is_desktop
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "using the log" in warnings[0].getMessage()
    assert ("bgws.test.notify", "Title: body") in [(r.name, r.getMessage()) for r in caplog.records]


async def test_desktop_without_the_package_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without desktop-notifier installed, the warning says how to install it."""
    monkeypatch.setitem(sys.modules, "desktop_notifier", None)  # import fails
    monkeypatch.setattr(notify, "_fallback_warned", False)
    with caplog.at_level(logging.WARNING, logger="bgws"):
        notifier = DesktopNotifier(fast_config("ws://127.0.0.1:9/"), environ={"DISPLAY": ":0"})
    assert not notifier.is_desktop
    assert 'pip install "bgws[desktop]"' in caplog.text


# -- the desktop backend: a real D-Bus session with a notification server ----------------------


_INTROSPECTION = """<node><interface name="org.freedesktop.Notifications">
<method name="Notify"><arg name="app_name" type="s" direction="in"/>
<arg name="replaces_id" type="u" direction="in"/><arg name="app_icon" type="s" direction="in"/>
<arg name="summary" type="s" direction="in"/><arg name="body" type="s" direction="in"/>
<arg name="actions" type="as" direction="in"/><arg name="hints" type="a{sv}" direction="in"/>
<arg name="expire_timeout" type="i" direction="in"/>
<arg name="id" type="u" direction="out"/></method>
<method name="CloseNotification"><arg name="id" type="u" direction="in"/></method>
<method name="GetCapabilities"><arg name="caps" type="as" direction="out"/></method>
<method name="GetServerInformation"><arg name="name" type="s" direction="out"/>
<arg name="vendor" type="s" direction="out"/><arg name="version" type="s" direction="out"/>
<arg name="spec" type="s" direction="out"/></method>
</interface></node>"""


class FakeNotifications:
    """A freedesktop notification server (org.freedesktop.Notifications) that records calls.

    It answers the method calls of the specification on a real D-Bus connection, as a
    notification daemon such as the desktop's would; foreground notices are those whose
    summary starts with ``"test: "``.
    """

    PATH = "/org/freedesktop/Notifications"

    def __init__(self) -> None:
        self.shown: list[dict[str, Any]] = []
        self.open: dict[int, str] = {}
        self.most_notices_open = 0
        self._changed = asyncio.Event()

    def handle(self, call: Any) -> Any:
        """Answer one D-Bus message (a dbus_fast ``Message``) sent to the server's path."""
        from dbus_fast import Message, MessageType

        if call.message_type is not MessageType.METHOD_CALL or call.path != self.PATH:
            return None
        if call.member == "Introspect":
            return Message.new_method_return(call, "s", [_INTROSPECTION])
        if call.member == "GetCapabilities":
            return Message.new_method_return(call, "as", [["body"]])
        if call.member == "GetServerInformation":
            return Message.new_method_return(call, "ssss", ["bgws-test", "bgws", "1", "1.2"])
        if call.member == "CloseNotification":
            self.open.pop(call.body[0], None)
            self._changed.set()
            return Message.new_method_return(call)
        if call.member == "Notify":
            app, _, icon, summary, body, _, _, timeout = call.body
            number = len(self.shown) + 1
            self.shown.append(
                {"app": app, "icon": icon, "summary": summary, "body": body, "timeout": timeout}
            )
            self.open[number] = summary
            self.most_notices_open = max(self.most_notices_open, len(self.open_notices()))
            self._changed.set()
            return Message.new_method_return(call, "u", [number])
        return None

    def notices(self) -> list[str]:
        """The summaries of the foreground notices shown, in order."""
        return [n["summary"] for n in self.shown if n["summary"].startswith("test: ")]

    def open_notices(self) -> list[str]:
        """The summaries of the foreground notices open now."""
        return [s for s in self.open.values() if s.startswith("test: ")]

    async def wait_until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``check()`` holds after some call."""
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def session_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private D-Bus session bus (a real dbus-daemon), as DBUS_SESSION_BUS_ADDRESS."""
    pytest.importorskip("desktop_notifier")
    daemon = shutil.which("dbus-daemon")
    if daemon is None or not sys.platform.startswith("linux"):
        pytest.skip("needs dbus-daemon on Linux")
    process = subprocess.Popen(
        [daemon, "--session", "--nofork", "--print-address=1", f"--address=unix:tmpdir={tmp_path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    try:
        address = process.stdout.readline().strip()
        assert address.startswith("unix:"), "dbus-daemon printed no address"
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=5)
        process.stdout.close()


@pytest.fixture
async def notification_server(session_bus: str) -> AsyncIterator[FakeNotifications]:
    """A notification server on the private session bus."""
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_address=session_bus).connect()
    server = FakeNotifications()
    bus.add_message_handler(server.handle)
    await bus.request_name("org.freedesktop.Notifications")
    try:
        yield server
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()


async def test_desktop_notifications_and_one_current_notice(
    bgws_server: Server, make_service: ServiceFactory, notification_server: FakeNotifications
) -> None:
    """Rules reach the desktop; the foreground notice is replaced, never duplicated."""
    service, notifier, _ = built(
        make_service,
        bgws_server.url,
        notifications="desktop",
        foreground=True,
        notify_types=["chat_message"],
        app_icon_path="mail-message-new",
    )
    assert isinstance(notifier, DesktopNotifier)
    assert notifier.is_desktop
    fake = notification_server
    async with service:
        await fake.wait_until(lambda: fake.open_notices() == ["test: connected"])
        bgws_server.push({"type": "chat_message", "text": "hello"})
        bgws_server.push({"type": "typing"})
        await fake.wait_until(lambda: any(n["body"] == "hello" for n in fake.shown))
        await bgws_server.stop()
        await fake.wait_until(lambda: fake.open_notices() == ["test: reconnecting"])
        await bgws_server.start()
        await fake.wait_until(lambda: fake.open_notices() == ["test: connected"])
    assert fake.open_notices() == []  # removed at stop
    assert fake.most_notices_open == 1
    assert fake.notices()[-2:] == ["test: reconnecting", "test: connected"]
    (chat,) = [n for n in fake.shown if not n["summary"].startswith("test: ")]
    assert chat == {
        "app": "test", "icon": "mail-message-new", "summary": "test", "body": "hello",
        "timeout": -1,
    }  # fmt: skip
    notice = next(n for n in fake.shown if n["summary"] == "test: connected")
    assert (notice["app"], notice["timeout"]) == ("test", 0)  # stays until replaced


async def test_desktop_errors_never_escape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A session bus that cannot be reached: notify and notices return quietly."""
    pytest.importorskip("desktop_notifier")
    if not sys.platform.startswith("linux"):
        pytest.skip("the D-Bus backend is Linux's")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    config = fast_config("ws://127.0.0.1:9/", foreground=True)
    notifier = DesktopNotifier(config)
    assert notifier.is_desktop
    await notifier.notify("Title", "body")
    for state in (bgws.State.CONNECTING, bgws.State.CONNECTED, bgws.State.CLOSED):
        await notifier.on_state_changed(state)
