"""The public API is exactly the intended names."""

from __future__ import annotations

import inspect

import bgws
import bgws.testing

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
    "parse_duration", "profiles", "SqliteStore", "Store", "VolatileStore",
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
