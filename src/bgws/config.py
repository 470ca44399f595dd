"""The validated, immutable configuration of one service.

:class:`Config` holds every option of the original design (``BackgroundWebSocketConfig``) under
a Python name, plus the options bgws adds. It is checked once, when it is built: a wrong value
raises :class:`~bgws.errors.ConfigError` naming the field, so the engine never meets one.

A config is built in Python (``Config(app_name=..., url=...)``), from a mapping
(:meth:`Config.from_mapping`), from a TOML file (:meth:`Config.from_toml`) or from a preset
(:mod:`bgws.profiles`); ``BGWS_<FIELD>`` environment variables override file values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self, get_args, get_type_hints
from urllib.parse import parse_qsl, unquote, urlsplit

from bgws import _config_names
from bgws._config_checks import (
    TOKEN,
    check_ack,
    check_bool,
    check_choice,
    check_duration,
    check_headers,
    check_int,
    check_mapping,
    check_names,
    check_path,
    check_resume,
    check_sequence,
    check_storage_keys,
    check_storage_path,
    check_str,
    check_strings,
    check_template,
    check_url,
    freeze_json,
    parse_duration,
    sensitive_strings,
    slug,
    thaw_json,
    toml_limit,
    type_name,
)
from bgws._config_longrun import Quota, Rate, check_longrun, check_offline
from bgws._presets import profile_values
from bgws._redact import (
    is_sensitive_name,
    redact_headers,
    redact_json,
    redact_url,
)
from bgws.errors import ConfigError, InsecureCredentials
from bgws.machine import SuspendedSend
from bgws.policies import AckPolicy, ResumePolicy

__all__ = [
    "AuthMode",
    "CodecName",
    "Config",
    "DEFAULT_STORAGE_KEYS",
    "NotifyBackend",
    "Overflow",
    "StorageName",
    "StorageSync",
    "TransportName",
    "parse_duration",
]

CodecName = Literal["json", "raw"]
"""How frames are turned into messages: JSON objects, or raw text/bytes."""
Overflow = Literal["raise", "drop_oldest", "wait"]
"""What ``send()`` does when the outbox holds ``max_queue_size`` messages."""
AuthMode = Literal["headers", "query", "message"]
"""Where the auth handler's credentials go: handshake headers, URL query, or a first message."""
TransportName = Literal["picows", "websockets"]
"""The WebSocket library behind the transport seam."""
StorageName = Literal["sqlite", "memory"]
"""Where the outbox, subscriptions and resume position live: a SQLite file, or memory only."""
StorageSync = Literal["normal", "full"]
"""SQLite's ``synchronous`` level (in WAL mode): survive a process crash, or a power loss too."""
NotifyBackend = Literal["log", "desktop", "none"]
"""Where notifications go when the program gives no ``notification_handler``."""

DEFAULT_STORAGE_KEYS: Mapping[str, str] = types.MappingProxyType(
    {
        "connection_data": "connection_data",
        "last_connected_at": "last_connected_at",
        "resume_position": "resume_position",
        "subscriptions": "subscriptions",
    }
)
"""The storage key names used when ``storage_keys`` does not override them."""

_NO_LANES: Mapping[str, Rate] = types.MappingProxyType({})
_SERVICE_TAG = re.compile(r"[A-Za-z0-9_.-]+")
# Path fields that a TOML file may give relative to its own folder.
_PATH_FIELDS = ("app_icon_path", "tls_ca_file", "tls_cert_file", "tls_key_file", "storage_path")


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Config:
    """The options of one service, validated and normalised when built.

    Build it with keywords (``Config(app_name="MyChat", url="wss://chat.example/ws")``), from a
    mapping or TOML file, or from a preset in :mod:`bgws.profiles`. Durations are stored as
    float seconds; strings such as ``"20s"`` are accepted as input (see :func:`parse_duration`).
    Mappings are stored read-only. ``docs/configuration.md`` describes every field.

    Raises:
        ConfigError: a value is wrong; ``field`` names it.
        InsecureCredentials: credentials would travel over ``ws://`` to a non-loopback host.
    """

    # The seed's options.
    app_name: str
    url: str
    notification_channel_id: str = "bgws"
    notification_channel_name: str = "bgws"
    app_icon_path: str | None = None
    foreground_service_notification_id: int = 1
    max_queue_size: int = 1000
    max_reconnect_attempts: int | None = None
    initial_reconnect_delay: float = 1.0
    max_reconnect_delay: float = 60.0
    heartbeat_interval: float | None = 20.0
    autostart_on_boot: bool = False
    foreground: bool = False
    storage_keys: Mapping[str, str] = field(default_factory=lambda: DEFAULT_STORAGE_KEYS)
    service_tag: str | None = None
    # Ours.
    ping_timeout: float = 10.0
    connect_timeout: float = 10.0
    min_uptime: float = 10.0
    close_timeout: float = 5.0
    max_message_size: int = 1_048_576
    headers: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    subprotocols: tuple[str, ...] = ()
    tls_verify: bool = True
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    allow_insecure_credentials: bool = False
    type_field: str = "type"
    id_field: str | None = "id"
    codec: CodecName = "json"
    inbox_size: int = 1024
    inbox_max_bytes: int = 64 * 1024 * 1024
    overflow: Overflow = "raise"
    reconnect_on_close: bool = True
    auth_mode: AuthMode = "headers"
    auth_close_codes: tuple[int, ...] = (4001, 4003)
    app_heartbeat: Mapping[str, Any] | None = None
    app_heartbeat_reply_type: str | None = None
    transport: TransportName = "picows"
    follow_redirects: bool = False
    # Durable delivery.
    storage: StorageName = "sqlite"
    storage_path: str | None = None
    storage_sync: StorageSync = "normal"
    ack: AckPolicy | None = None
    max_in_flight: int = 100
    ack_timeout: float = 10.0
    request_timeout: float = 10.0
    max_pending_requests: int = 1000
    reply_id_field: str | None = None
    resume: ResumePolicy | None = None
    priority_types: tuple[str, ...] = ()
    # Notifications.
    notifications: NotifyBackend = "log"
    notify_types: tuple[str, ...] = ()
    notify_title: str = "{app_name}"
    notify_body: str = "{text}"
    # Long outages (checked in bgws._config_longrun).
    connect_quota: Quota | None = None
    suspend_after: float | None = None
    suspended_retry: float = 30.0
    suspended_send: SuspendedSend = "queue"
    # Days-long connections (checked in bgws._config_longrun).
    max_connection_age: float | None = None
    send_rate: Rate | None = None
    send_burst: int | None = None
    lane_send_rates: Mapping[str, Rate] = field(default_factory=lambda: _NO_LANES)

    def __new__(cls, *args: Any, **options: Any) -> Self:
        """Refuse unknown and missing options with a ConfigError (as TOML does), not a TypeError."""
        _config_names.check_keywords(args, options, _FIELD_NAMES)
        return object.__new__(cls)

    def __post_init__(self) -> None:
        """Validate every field in order and store the normalised values."""
        values = self._validated()
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check_credentials()

    def _validated(self) -> dict[str, object]:
        v: dict[str, object] = {}
        v["app_name"] = check_str("app_name", self.app_name)
        v["url"] = url = check_url(self.url)
        secure = urlsplit(url).scheme.lower() == "wss"
        for name in ("notification_channel_id", "notification_channel_name"):
            v[name] = check_str(name, getattr(self, name))
        v["app_icon_path"] = check_str("app_icon_path", self.app_icon_path, optional=True)
        v["foreground_service_notification_id"] = check_int(
            "foreground_service_notification_id", self.foreground_service_notification_id, 0
        )
        v["max_queue_size"] = check_int("max_queue_size", self.max_queue_size, 1)
        if self.max_reconnect_attempts is not None:
            v["max_reconnect_attempts"] = check_int(
                "max_reconnect_attempts", self.max_reconnect_attempts, 0
            )
        initial = check_duration("initial_reconnect_delay", self.initial_reconnect_delay)
        v["initial_reconnect_delay"] = initial
        v["max_reconnect_delay"] = largest = check_duration(
            "max_reconnect_delay", self.max_reconnect_delay
        )
        if largest < initial:
            raise ConfigError(
                "max_reconnect_delay",
                f"must be at least initial_reconnect_delay ({initial:g}s), got {largest:g}s",
            )
        if self.heartbeat_interval is not None:
            v["heartbeat_interval"] = check_duration("heartbeat_interval", self.heartbeat_interval)
        for name in ("autostart_on_boot", "foreground"):
            v[name] = check_bool(name, getattr(self, name))
        v["storage_keys"] = check_storage_keys(self.storage_keys, DEFAULT_STORAGE_KEYS)
        if self.service_tag is None:
            v["service_tag"] = slug(self.app_name)
        elif not isinstance(self.service_tag, str) or not _SERVICE_TAG.fullmatch(self.service_tag):
            raise ConfigError("service_tag", "may only contain letters, digits, '_', '.' and '-'")
        for name in ("ping_timeout", "connect_timeout", "close_timeout"):
            v[name] = check_duration(name, getattr(self, name))
        v["min_uptime"] = check_duration("min_uptime", self.min_uptime, allow_zero=True)
        v["max_message_size"] = check_int("max_message_size", self.max_message_size, 1)
        v["headers"] = check_headers(self.headers)
        protocols = check_sequence("subprotocols", self.subprotocols)
        for protocol in protocols:
            if not isinstance(protocol, str) or not TOKEN.fullmatch(protocol):
                raise ConfigError("subprotocols", f"{protocol!r} is not a valid subprotocol name")
        v["subprotocols"] = protocols
        v["tls_verify"] = check_bool("tls_verify", self.tls_verify)
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            v[name] = check_path(name, getattr(self, name))
        for name in ("tls_verify", "tls_ca_file", "tls_cert_file", "tls_key_file"):
            if not secure and v[name] not in (None, True):
                raise ConfigError(name, "is a TLS option, but the URL is ws://; use wss://")
        if v["tls_key_file"] is not None and v["tls_cert_file"] is None:
            raise ConfigError("tls_key_file", "needs tls_cert_file (the key's certificate)")
        v["allow_insecure_credentials"] = check_bool(
            "allow_insecure_credentials", self.allow_insecure_credentials
        )
        v["type_field"] = check_str("type_field", self.type_field)
        v["id_field"] = check_str("id_field", self.id_field, optional=True)
        v["codec"] = check_choice("codec", self.codec, get_args(CodecName))
        v["inbox_size"] = check_int("inbox_size", self.inbox_size, 1)
        v["inbox_max_bytes"] = check_int("inbox_max_bytes", self.inbox_max_bytes, 1)
        v["overflow"] = check_choice("overflow", self.overflow, get_args(Overflow))
        v["reconnect_on_close"] = check_bool("reconnect_on_close", self.reconnect_on_close)
        v["auth_mode"] = check_choice("auth_mode", self.auth_mode, get_args(AuthMode))
        codes = check_sequence("auth_close_codes", self.auth_close_codes)
        v["auth_close_codes"] = tuple(check_int("auth_close_codes", c, 1000, 4999) for c in codes)
        if self.app_heartbeat is not None:
            check_mapping("app_heartbeat", self.app_heartbeat)
            v["app_heartbeat"] = freeze_json(self.app_heartbeat, "the message")
        v["app_heartbeat_reply_type"] = check_str(
            "app_heartbeat_reply_type", self.app_heartbeat_reply_type, optional=True
        )
        if self.app_heartbeat_reply_type is not None and self.app_heartbeat is None:
            raise ConfigError("app_heartbeat_reply_type", "needs app_heartbeat to be set")
        v["transport"] = check_choice("transport", self.transport, get_args(TransportName))
        v["follow_redirects"] = check_bool("follow_redirects", self.follow_redirects)
        v.update(self._validated_delivery())
        v.update(self._validated_notify())
        v.update(check_offline(self))
        v.update(check_longrun(self))
        return v

    def _validated_delivery(self) -> dict[str, object]:
        v: dict[str, object] = {}
        v["storage"] = check_choice("storage", self.storage, get_args(StorageName))
        v["storage_path"] = check_storage_path(self.storage_path)
        v["storage_sync"] = check_choice("storage_sync", self.storage_sync, get_args(StorageSync))
        v["ack"] = check_ack(self.ack)
        v["max_in_flight"] = check_int("max_in_flight", self.max_in_flight, 1)
        for name in ("ack_timeout", "request_timeout"):
            v[name] = check_duration(name, getattr(self, name))
        v["max_pending_requests"] = check_int("max_pending_requests", self.max_pending_requests, 1)
        v["reply_id_field"] = check_str("reply_id_field", self.reply_id_field, optional=True)
        v["resume"] = check_resume(self.resume)
        v["priority_types"] = check_strings("priority_types", self.priority_types)
        return v

    def _validated_notify(self) -> dict[str, object]:
        v: dict[str, object] = {}
        v["notifications"] = check_choice(
            "notifications", self.notifications, get_args(NotifyBackend)
        )
        v["notify_types"] = check_strings("notify_types", self.notify_types)
        v["notify_title"] = check_template("notify_title", self.notify_title)
        v["notify_body"] = check_template("notify_body", self.notify_body, allow_empty=True)
        return v

    def _check_credentials(self) -> None:
        # One rule (is_sensitive_name) decides what secret_values() lists and what is refused.
        if self.allow_insecure_credentials or self.is_secure or self.is_loopback:
            return
        where = f"ws:// to {self.host}, a host that is not loopback"
        hint = "use wss://, or set allow_insecure_credentials = true if you must"
        for name in self.headers:
            if is_sensitive_name(name):
                raise InsecureCredentials(
                    "headers", f"header {name!r} would travel in clear text over {where}; {hint}"
                )
        parts = urlsplit(self.url)
        if "@" in parts.netloc or any(
            is_sensitive_name(key) for key, _ in parse_qsl(parts.query, keep_blank_values=True)
        ):
            raise InsecureCredentials(
                "url", f"the URL's credentials would travel in clear text over {where}; {hint}"
            )
        if self.app_heartbeat is not None and any(sensitive_strings(self.app_heartbeat)):
            raise InsecureCredentials(
                "app_heartbeat",
                f"the heartbeat message's secrets would travel in clear text over {where}; {hint}",
            )

    # -- what the engine asks --

    @property
    def is_secure(self) -> bool:
        """Whether the URL is ``wss://`` (TLS)."""
        return urlsplit(self.url).scheme.lower() == "wss"

    @property
    def host(self) -> str:
        """The URL's host, lower-cased, without brackets around an IPv6 address."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The URL's port, or 443 for ``wss://`` and 80 for ``ws://`` when it gives none."""
        return urlsplit(self.url).port or (443 if self.is_secure else 80)

    @property
    def is_loopback(self) -> bool:
        """Whether the host is ``localhost``, in 127.0.0.0/8, or ``::1``."""
        host = self.host
        if host == "localhost":
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    @property
    def logger_name(self) -> str:
        """The name of this service's logger: ``bgws.<service_tag>``."""
        return f"bgws.{self.service_tag}"

    def app_heartbeat_message(self) -> dict[str, Any] | None:
        """Return a fresh, mutable copy of the application heartbeat message, or ``None``."""
        if self.app_heartbeat is None:
            return None
        message: dict[str, Any] = thaw_json(self.app_heartbeat)
        return message

    def secret_values(self) -> tuple[str, ...]:
        """Return the secret values this config holds, for :func:`bgws._redact.redact_text`.

        These are the values of credential-like headers (and the token after a scheme such as
        ``Bearer``), the URL's userinfo, sensitive query values, and sensitive string values in
        the application heartbeat.
        """
        found: list[str] = []
        for name, value in self.headers.items():
            if is_sensitive_name(name):
                found.append(value)
                scheme, _, token = value.partition(" ")
                if token.strip() and scheme.isalpha():
                    found.append(token.strip())
        parts = urlsplit(self.url)
        if "@" in parts.netloc:
            userinfo = parts.netloc.rpartition("@")[0]
            found.append(userinfo)
            found.extend(unquote(piece) for piece in userinfo.split(":", 1) if piece)
        for pairs in (parts.query, parts.fragment):
            found.extend(
                value
                for key, value in parse_qsl(pairs, keep_blank_values=True)
                if value and is_sensitive_name(key)
            )
        if self.app_heartbeat is not None:
            found.extend(sensitive_strings(self.app_heartbeat))
        return tuple(dict.fromkeys(found))

    # -- building and copying --

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, env: Mapping[str, str] | None = None) -> Self:
        """Build a config from a mapping of option names to values, then apply the environment.

        A key ``profile`` (``"chat"``, ``"gaming"``, ``"iot"``, ``"trading"``) starts from that
        preset; the mapping's other keys override it, and ``BGWS_<FIELD>`` variables override
        both.

        Args:
            data: option names (the field names) to values.
            env: the environment to read ``BGWS_*`` overrides from; ``None`` reads
                :data:`os.environ`, ``{}`` turns overrides off.

        Returns:
            The validated config.

        Raises:
            ConfigError: an unknown or missing option, an unknown profile, or a wrong value.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(None, f"expected a mapping of options, got {type_name(data)}")
        options = dict(data)
        for key in options:
            if not isinstance(key, str):
                raise ConfigError(None, f"option names must be strings, got {key!r}")
        values: dict[str, Any] = {}
        if "profile" in options:
            name = options.pop("profile")
            if not isinstance(name, str):
                raise ConfigError("profile", f"expected a profile name, got {type_name(name)}")
            values.update(profile_values(name))
        check_names(options, _FIELD_NAMES)
        values.update(options)
        values.update(_env_overrides(env))
        return cls._build(values)

    @classmethod
    def from_toml(
        cls, path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
    ) -> Self:
        """Load a config from a TOML file whose top-level keys are option names.

        Relative paths in ``app_icon_path``, ``tls_*_file`` and ``storage_path`` are taken
        relative to the file's directory, so a config file and its certificates (and its
        database) can move together. ``ack`` and ``resume`` are tables.

        Args:
            path: the TOML file.
            env: as for :meth:`from_mapping`.

        Returns:
            The validated config.

        Raises:
            ConfigError: the file is missing, unreadable or not valid TOML (``field`` is
                ``None`` and the reason names the file and line), or an option is wrong.
        """
        shown = os.fspath(path)
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigError(None, f"{shown}: no such file") from None
        except OSError as exc:
            raise ConfigError(None, f"{shown}: cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(None, f"{shown}: invalid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(None, f"{shown}: is not UTF-8 text") from None
        except (ValueError, RecursionError) as exc:  # an integer too long, nesting too deep
            raise ConfigError(None, f"{shown}: cannot be read: {toml_limit(exc)}") from None
        base = os.path.dirname(os.path.abspath(shown))
        for name in _PATH_FIELDS:
            value = data.get(name)
            if isinstance(value, str) and value and not os.path.isabs(value):
                data[name] = os.path.join(base, value)
        return cls.from_mapping(data, env=env)

    def with_env(self, env: Mapping[str, str] | None = None) -> Self:
        """Return a copy with ``BGWS_<FIELD>`` environment overrides applied.

        Args:
            env: the environment; ``None`` reads :data:`os.environ`.

        Returns:
            The new config (this one when no variable applies).

        Raises:
            ConfigError: a variable's value is wrong for its field.
        """
        overrides = _env_overrides(env)
        return self.replace(**overrides) if overrides else self

    def replace(self, **changes: Any) -> Self:
        """Return a copy with some fields changed, validated like a new config.

        ``service_tag`` is kept unless it is changed too: it names the service's logs and
        stored data, which a new ``app_name`` should not move.

        Args:
            **changes: field names to new values.

        Returns:
            The new config.

        Raises:
            ConfigError: an unknown field name or a wrong value.
        """
        check_names(changes, _FIELD_NAMES)
        return dataclasses.replace(self, **changes)

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """Return every field as plain types (dicts, lists, str, numbers, bools, ``None``).

        Args:
            redact: hide secrets (credential headers, URL userinfo and sensitive query values,
                sensitive heartbeat fields) as ``***``. Pass ``False`` only for output that
                stays private; ``Config.from_mapping(config.to_dict(redact=False))`` rebuilds an
                equal config, unless ``ack`` or ``resume`` has a function form (``match``,
                ``request``), which is shown by name and cannot be loaded back.

        Returns:
            Field names to values, in field order; ``ack`` and ``resume`` as their tables.
        """
        out: dict[str, Any] = {}
        for name, value in self._items():
            if isinstance(value, Mapping | tuple):
                value = thaw_json(value)
            elif isinstance(value, AckPolicy | ResumePolicy):
                value = value.to_dict()
            out[name] = value
        if redact:
            out["url"] = redact_url(self.url)
            out["headers"] = redact_headers(self.headers)
            if self.app_heartbeat is not None:
                out["app_heartbeat"] = redact_json(self.app_heartbeat)
        return out

    def _items(self) -> Iterator[tuple[str, object]]:
        for f in dataclasses.fields(self):
            yield f.name, getattr(self, f.name)

    @classmethod
    def _build(cls, values: Mapping[str, Any]) -> Self:
        for required in ("app_name", "url"):
            if required not in values:
                raise ConfigError(required, "is missing; this option is required")
        return cls(**values)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"Config({fields})"

    def __hash__(self) -> int:
        # Equal configs share these; hashing the read-only mappings is not possible.
        return hash((self.app_name, self.url, self.service_tag))

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # The policies travel as themselves, so a function form survives (if it pickles).
        values = {**self.to_dict(redact=False), "ack": self.ack, "resume": self.resume}
        return (_rebuild, (type(self), values))


def _rebuild(cls: type[Config], values: dict[str, Any]) -> Config:
    """Unpickle a config (its read-only mappings cannot be pickled as they are)."""
    return cls(**values)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config))
_HINTS = get_type_hints(Config)


def _env_overrides(env: Mapping[str, str] | None) -> dict[str, Any]:
    """Read ``BGWS_<FIELD>`` variables into field values; other variables are ignored."""
    return _config_names.env_overrides(os.environ if env is None else env, _HINTS)
