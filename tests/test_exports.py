"""The public API is exactly the intended names."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import bgws
import bgws.testing

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "AckPolicy", "AckTimeout", "MessageExpired", "RequestTimeout", "ResumePolicy",
    "SequenceGap", "StoreError", "ManagerThread", "ServiceManager", "ServiceStatus",
    "ServiceThread", "start_in_thread", "DesktopNotifier", "LogNotifier",
    "ControlError", "DaemonNotRunning", "LocalClient", "connect_local", "connect_local_sync",
    "AuthHandler", "AuthRejected", "Backoff", "BearerAuth", "BgwsError", "Config",
    "ConfigError", "ConnectTimeout", "ConnectionClosed", "DeadLink", "DecodeError",
    "ErrorHandler", "Handler", "HandlerError", "HandshakeRejected", "HeartbeatHandler",
    "InsecureCredentials", "InvalidTransition", "LifecycleHandler", "LinkError",
    "MemoryStorage", "Message", "MessageDropped", "MessageError", "MessageHandler",
    "MessageTooBig", "NotificationHandler", "Plugin", "QueueFull", "Service", "ServiceClosed",
    "ServiceError", "ServiceStats", "State", "StateChange", "StorageBackend",
    "TemplateHeartbeat", "__version__", "create_chat_service", "create_custom_service",
    "create_gaming_service", "create_iot_service", "create_trading_service",
    "parse_duration", "profiles", "SqliteStore", "Store", "VolatileStore", "StreamReset",
    "Clock", "ConnectQuotaWait", "ServiceSuspended",
}  # fmt: skip


def test_exported_names() -> None:
    """bgws.__all__ lists exactly the public names, and each exists."""
    assert set(bgws.__all__) == EXPECTED
    for name in bgws.__all__:
        assert hasattr(bgws, name), name


def test_public_names_have_docs() -> None:
    """Every exported class and function has a docstring."""
    for name in bgws.__all__:
        obj = getattr(bgws, name)
        if isinstance(obj, type) or inspect.isfunction(obj):
            assert obj.__doc__, name


def test_testing_kit_exports() -> None:
    """The testing kit exports its server and records."""
    assert "Server" in bgws.testing.__all__
    for name in bgws.testing.__all__:
        assert hasattr(bgws.testing, name), name


def test_errors_share_one_root() -> None:
    """Every exported exception derives from BgwsError."""
    for name in bgws.__all__:
        obj = getattr(bgws, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, bgws.BgwsError), name
    assert issubclass(bgws.ConfigError, ValueError)


HOSTILE_KIT = {
    "Answer", "Frames", "HostileConnection", "HostileServer", "Opcode", "ReceivedFrame",
    "Script", "Steps", "UpgradeRequest", "accept_key", "frame",
    "RULES", "ConformanceReport", "Rule", "TransportFactory", "check_transport",
}  # fmt: skip


def test_testing_kit_exports_hostile_server() -> None:
    """The testing kit exports the hostile server, its frame builders and check_transport."""
    assert set(bgws.testing.__all__) >= HOSTILE_KIT
    for name in HOSTILE_KIT:
        obj = getattr(bgws.testing, name)
        if isinstance(obj, type) or inspect.isfunction(obj):
            assert obj.__doc__, name


TESTING_EXPECTED = {
    "DEFAULT_OVERSIZED_SIZE", "DEFAULT_TIMEOUT", "RULES", "AckFunction", "AckReply", "Answer",
    "ConformanceReport", "ConnectHook", "Connection", "ConnectionReport", "Feed", "Frames",
    "HandshakeHook", "Handshake", "HostileConnection", "HostileServer", "MalformedKind",
    "MemoryPeer", "MemoryTransport", "Message", "MessageHook", "Opcode", "ReceivedFrame",
    "ReceivedMessage", "Reply", "Rule", "Script", "Server", "Steps", "TransportFactory",
    "UpgradeRequest", "accept_key", "check_transport", "frame", "VirtualClock",
}  # fmt: skip


def test_testing_kit_exports_exactly_the_intended_names() -> None:
    """bgws.testing.__all__ lists exactly the kit's public names, MemoryTransport included."""
    assert set(bgws.testing.__all__) == TESTING_EXPECTED


# A private module on a bgws path (``bgws._engine``, ``bgws.transport._picows``), or a private
# name imported from bgws (``from bgws.service import _call``).
_PRIVATE_PATH = re.compile(r"\bbgws(?:\.\w+)*\._\w+")
_ONE_LINE_IMPORT = re.compile(r"^\s*from\s+bgws(?:\.\w+)*\s+import\s+([\w ,]+)$", re.M)
_CODE_BLOCK = re.compile(r"^```(?:python|py|pycon)?[ \t]*\n(.*?)^```", re.M | re.S)


def private_uses(code: str) -> list[str]:
    """The private bgws names that one snippet of code imports or reaches."""
    found = [m.group(0) for m in _PRIVATE_PATH.finditer(code)]
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a fragment of a page: read its one-line imports
        names = [n for m in _ONE_LINE_IMPORT.finditer(code) for n in m.group(1).split(",")]
    else:
        names = [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bgws")
            for alias in node.names
        ]
    names = [name.split(" as ")[0].strip() for name in names]
    return found + [n for n in names if n.startswith("_") and not n.startswith("__")]


def _user_code() -> dict[str, list[str]]:
    """Every snippet users copy: examples, docs scripts, and the code blocks of docs pages."""
    code = {
        str(p.relative_to(ROOT)): [p.read_text(encoding="utf-8")]
        for pattern in ("examples/*.py", "docs/*.py")
        for p in ROOT.glob(pattern)
    }
    for page in ROOT.glob("docs/*.md"):
        code[str(page.relative_to(ROOT))] = _CODE_BLOCK.findall(page.read_text(encoding="utf-8"))
    return code


def test_docs_and_examples_import_no_private_name() -> None:
    """Code in docs/*.md, docs/*.py and examples/*.py uses only public bgws names."""
    code = _user_code()
    assert "examples/chat.py" in code
    assert code["docs/tutorial.md"]
    bad = {
        where: [u for block in blocks for u in private_uses(block)]
        for where, blocks in code.items()
    }
    assert {where: uses for where, uses in bad.items() if uses} == {}


def test_the_private_name_check_sees_private_names() -> None:
    """The checker flags private modules and names, and lets public ones pass."""
    code = (
        "import bgws._engine.inbox\nfrom bgws.service import _call, Service\n"
        "from bgws import (\n    Config,\n    _secret as s,\n)\nx = bgws.transport._picows\n"
        "from bgws.testing import Server\nimport bgws\n"
    )
    assert private_uses("from bgws.service import _call, Service\nif x:\n") == ["_call"]
    assert sorted(private_uses(code)) == [
        "_call", "_secret", "bgws._engine", "bgws.transport._picows"
    ]  # fmt: skip
