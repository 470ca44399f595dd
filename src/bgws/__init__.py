"""bgws: keep WebSocket connections alive in the background.

A program configures a service once; bgws connects, authenticates, reconnects with backoff,
detects dead links, queues what is sent while offline, and dispatches incoming messages to
handlers and plugins. See the README and ``docs/`` for the tutorial.
"""

from __future__ import annotations

from . import profiles
from ._engine.clock import Clock
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
    ConnectQuotaWait,
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
    ServiceSuspended,
    StoreError,
    StreamReset,
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

# Grouped by the module that defines each name; tests/test_exports.py lists them exactly.
__all__ = [
    # the service and the ways to run it
    "Service",  # service
    "ServiceThread",  # runner
    "start_in_thread",
    "ManagerThread",  # manager
    "ServiceManager",
    "ServiceStatus",
    "State",  # machine
    "ServiceStats",  # stats
    "StateChange",
    "create_chat_service",  # factories
    "create_custom_service",
    "create_gaming_service",
    "create_iot_service",
    "create_trading_service",
    # configuration
    "Config",  # config
    "parse_duration",
    "profiles",  # profiles (the module)
    "AckPolicy",  # policies
    "ResumePolicy",
    "Backoff",  # backoff
    # handlers, plugins and messages
    "AuthHandler",  # handlers
    "BearerAuth",
    "ErrorHandler",
    "Handler",
    "HeartbeatHandler",
    "LifecycleHandler",
    "MessageHandler",
    "NotificationHandler",
    "TemplateHeartbeat",
    "Plugin",  # plugins
    "Message",  # message
    "DesktopNotifier",  # notify
    "LogNotifier",
    # storage
    "MemoryStorage",  # storage
    "StorageBackend",
    "Store",  # _engine.store: the store seam, and its implementations
    "VolatileStore",
    "SqliteStore",  # _engine.sqlite
    # time
    "Clock",  # _engine.clock: the clock seam (bgws.testing.VirtualClock is its twin)
    # the daemon's control socket, from another process
    "ControlError",  # local
    "DaemonNotRunning",
    "LocalClient",
    "connect_local",
    "connect_local_sync",
    # errors
    "BgwsError",  # errors
    "AckTimeout",
    "AuthRejected",
    "ConfigError",
    "ConnectQuotaWait",
    "ConnectTimeout",
    "ConnectionClosed",
    "DeadLink",
    "DecodeError",
    "HandlerError",
    "HandshakeRejected",
    "InsecureCredentials",
    "InvalidTransition",
    "LinkError",
    "MessageDropped",
    "MessageError",
    "MessageExpired",
    "MessageTooBig",
    "QueueFull",
    "RequestTimeout",
    "SequenceGap",
    "ServiceClosed",
    "ServiceError",
    "ServiceSuspended",
    "StoreError",
    "StreamReset",
    # the version
    "__version__",
]
