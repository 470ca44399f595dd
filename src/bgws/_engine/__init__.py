"""The engine behind :class:`bgws.Service`: private, imported by bgws's own modules only.

Nothing here is public API; users import from :mod:`bgws` (and :mod:`bgws.testing`). The
modules, by what they hold:

- :mod:`.connect`: opening one link (auth, TLS, redirects) and watching its health (keepalive);
- :mod:`.inbox` and :mod:`.router`: the incoming path, from a frame to the handlers;
- :mod:`.delivery` and :mod:`.outbox`: the outgoing path, from ``send()`` to the socket, with
  acks, requests, subscriptions and resume;
- :mod:`.store`: the SQLite and in-memory stores of the outbox and the key-value data;
- :mod:`.observe`: state-change watchers behind ``wait_for()`` and ``state_changes()``.
"""
