"""Bridges from a service to a distributed engine: NATS JetStream (``pip install 'bgws[nats]'``).

:class:`NatsBridge` is a plugin: incoming WebSocket messages are published to JetStream,
deduplicated by a message id made from their resume sequence or id; commands consumed from a
durable JetStream consumer go into the service's durable outbox. See ``docs/scaling-out.md``.

Importing this package does not import nats-py; a service with a bridge does, when it starts.
"""

from __future__ import annotations

from ._publish import BridgeError
from ._settings import BridgeSettings
from .nats import NatsBridge

__all__ = ["BridgeError", "BridgeSettings", "NatsBridge"]
