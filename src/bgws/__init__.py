"""bgws: keep WebSocket connections alive in the background.

A program configures a service once; bgws connects, authenticates, reconnects with backoff,
detects dead links, queues what is sent while offline, and dispatches incoming messages to
handlers and plugins. See the README and ``docs/`` for the tutorial.
"""

from __future__ import annotations

from . import profiles
from ._engine.sqlite import SqliteStore
from ._engine.store import Store, VolatileStore
from .backoff import Backoff
from .config import Config, parse_duration
from .errors import (
    AckTimeout,
    AuthRejected,
    BgwsError,
    ConfigError,
    ConnectionClosed,
    ConnectTimeout,
    DeadLink,
    DecodeError,
    HandlerError,
    HandshakeRejected,
    InsecureCredentials,
    InvalidTransition,
    LinkError,
    MessageDropped,
    MessageError,
    MessageExpired,
    MessageTooBig,
    QueueFull,
    RequestTimeout,
    SequenceGap,
    ServiceClosed,
    ServiceError,
    StoreError,
)
from .factories import (
    create_chat_service,
    create_custom_service,
    create_gaming_service,
    create_iot_service,
    create_trading_service,
)
from .handlers import (
    AuthHandler,
    BearerAuth,
    ErrorHandler,
    Handler,
    HeartbeatHandler,
    LifecycleHandler,
    MessageHandler,
    NotificationHandler,
    TemplateHeartbeat,
)
from .local import ControlError, DaemonNotRunning, LocalClient, connect_local, connect_local_sync
from .machine import State
from .manager import ManagerThread, ServiceManager, ServiceStatus
from .message import Message
from .notify import DesktopNotifier, LogNotifier
from .plugins import Plugin
from .policies import AckPolicy, ResumePolicy
from .runner import ServiceThread, start_in_thread
from .service import Service
from .stats import ServiceStats, StateChange
from .storage import MemoryStorage, StorageBackend

__version__ = "0.1.0"

__all__ = [
    "AckPolicy",
    "AckTimeout",
    "AuthHandler",
    "AuthRejected",
    "Backoff",
    "BearerAuth",
    "BgwsError",
    "Config",
    "ConfigError",
    "ConnectTimeout",
    "ConnectionClosed",
    "ControlError",
    "DaemonNotRunning",
    "DeadLink",
    "DecodeError",
    "DesktopNotifier",
    "ErrorHandler",
    "Handler",
    "HandlerError",
    "HandshakeRejected",
    "HeartbeatHandler",
    "InsecureCredentials",
    "InvalidTransition",
    "LifecycleHandler",
    "LinkError",
    "LocalClient",
    "LogNotifier",
    "ManagerThread",
    "MemoryStorage",
    "Message",
    "MessageDropped",
    "MessageError",
    "MessageExpired",
    "MessageHandler",
    "MessageTooBig",
    "NotificationHandler",
    "Plugin",
    "QueueFull",
    "RequestTimeout",
    "ResumePolicy",
    "SequenceGap",
    "Service",
    "ServiceClosed",
    "ServiceError",
    "ServiceManager",
    "ServiceStats",
    "ServiceStatus",
    "ServiceThread",
    "State",
    "StateChange",
    "SqliteStore",
    "StorageBackend",
    "Store",
    "StoreError",
    "TemplateHeartbeat",
    "VolatileStore",
    "__version__",
    "create_chat_service",
    "create_custom_service",
    "create_gaming_service",
    "create_iot_service",
    "connect_local",
    "connect_local_sync",
    "create_trading_service",
    "parse_duration",
    "profiles",
    "start_in_thread",
]
