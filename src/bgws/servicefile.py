"""Service files: the TOML that ``bgws run`` reads, turned into services.

A service file holds one table per service, under ``[services.<name>]``::

    [services.chat]
    profile = "chat"                              # a preset (see bgws.profiles)
    url = "wss://chat.example/ws"
    storage_path = "chat.sqlite3"                 # relative to this file
    handler = "myapp.handlers:ChatHandler"        # a bgws.MessageHandler
    plugins = ["typing-indicator", "myapp.plugins:Audit"]

    [services.chat.bridge]                        # optional: bridge to NATS JetStream
    nats = "nats://127.0.0.1:4222"

    [services.prices]
    profile = "trading"
    url = "wss://md.example/ws"

A table's keys are the :class:`~bgws.Config` fields plus ``profile``, ``handler``,
``plugins`` and ``bridge`` (a :class:`bgws.bridge.NatsBridge`; docs/scaling-out.md).
``app_name`` defaults to the table's name. ``handler`` is an import path
``"module:attribute"`` naming a :class:`~bgws.MessageHandler` subclass (instantiated with no
arguments), a ready instance, or a factory function that returns one. Each entry of
``plugins`` is such an import path to a :class:`~bgws.Plugin`, or the name of an entry point
in the group ``bgws.plugins`` (how installed packages offer plugins). ``BGWS_<FIELD>``
environment variables override the file's values in every service, as they do for
:meth:`bgws.Config.from_toml`.

An optional ``[fleet]`` table makes ``bgws run`` one member of a fleet of daemons that share
the file's services through NATS JetStream (see :mod:`bgws.fleet_config` and :mod:`bgws.fleet`).

Everything is checked, and every handler and plugin imported, before anything starts: a wrong
value is a :class:`~bgws.ConfigError` whose field is ``services.<name>.<key>``.

:func:`load` puts the file's folder first on :data:`sys.path` (as Python does for a script's
folder), so a handler module kept beside the file imports the same under ``bgws run``,
``python -m bgws run`` and ``bgws install``, whatever the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from ._config_checks import toml_limit
from .bridge import BridgeSettings, NatsBridge
from .bridge._settings import load_table
from .config import _PATH_FIELDS, Config
from .errors import ConfigError
from .fleet import FleetManager, fresh_factory
from .fleet_config import FleetConfig, load_fleet
from .handlers import MessageHandler
from .manager import ServiceManager
from .plugins import Plugin
from .service import Service

__all__ = [
    "ENTRY_POINT_GROUP",
    "ServiceFile",
    "ServiceSpec",
    "find_entry_point",
    "load",
    "load_mapping",
    "resolve",
]

ENTRY_POINT_GROUP = "bgws.plugins"
"""The entry-point group where installed packages offer plugins, by name."""

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_OWN_KEYS = ("handler", "plugins", "bridge")
_FIELDS = frozenset(f.name for f in dataclasses.fields(Config))
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One ``[services.<name>]`` table, checked and resolved.

    Attributes:
        name: the table's name.
        config: the validated configuration.
        handler: the message handler, if the table names one.
        plugins: the plugins, in the order listed.
        bridge: the ``bridge`` table's settings (a new bridge for each built service).
    """

    name: str
    config: Config
    handler: MessageHandler | None = None
    plugins: tuple[Plugin, ...] = ()
    bridge: BridgeSettings | None = None

    def build(self) -> Service:
        """A new, unstarted :class:`~bgws.Service` for this table."""
        plugins = (*self.plugins, *self.new_bridge())
        return Service(self.config, message_handler=self.handler, plugins=plugins)

    def new_bridge(self) -> tuple[Plugin, ...]:
        """A new bridge from the ``bridge`` table (none without one): one per built service."""
        return () if self.bridge is None else (NatsBridge.from_settings(self.bridge),)


@dataclass(frozen=True, slots=True)
class ServiceFile:
    """A whole service file: its services by name, in the file's order.

    Attributes:
        path: the file it was read from (``None`` for :func:`load_mapping`).
        services: the services, by name.
        fleet: the ``[fleet]`` table, when the file makes ``bgws run`` a fleet member.
    """

    path: Path | None
    services: Mapping[str, ServiceSpec]
    fleet: FleetConfig | None = None

    def only(self, names: list[str]) -> ServiceFile:
        """The same file with only the services ``names``, in that order.

        Raises:
            ConfigError: a name is not in the file (field ``services``).
        """
        for name in names:
            if name not in self.services:
                known = ", ".join(self.services)
                raise ConfigError("services", f"no service named {name!r} (the file has {known})")
        return ServiceFile(self.path, {name: self.services[name] for name in names}, self.fleet)

    def build_manager(self) -> ServiceManager:
        """A :class:`~bgws.ServiceManager` holding a new service per table.

        With a ``[fleet]`` table, a :class:`~bgws.fleet.FleetManager` that runs only the
        services whose lease this daemon holds.

        Raises:
            ConfigError: two services would share one store file
                (``services.<name>.storage_path``).
        """
        if self.fleet is not None:
            made = {
                n: fresh_factory(s.config, s.handler, s.plugins, s.new_bridge)
                for n, s in self.services.items()
            }
            return FleetManager(self.fleet, made)
        manager = ServiceManager()
        for name, spec in self.services.items():
            try:
                manager.add(name, spec.build())
            except ConfigError as exc:
                raise _scoped(exc, name) from None
        return manager


def load(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> ServiceFile:
    """Read and check a service file; import its handlers and plugins.

    Relative paths (``storage_path``, ``tls_*_file``, ``app_icon_path``) are taken relative
    to the file's folder, and that folder goes first on :data:`sys.path` (once), so modules
    beside the file can be named as handlers and plugins.

    Args:
        path: the TOML file.
        env: where ``BGWS_<FIELD>`` overrides are read (``None``: :data:`os.environ`; ``{}``:
            none).

    Returns:
        The checked file.

    Raises:
        ConfigError: the file is missing, unreadable or not TOML (``field`` is ``None``, the
            reason names the file), or a value is wrong (``field`` is
            ``services.<name>.<key>``).
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(None, f"{shown}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(None, f"{shown}: is a directory, not a service file") from None
    except OSError as exc:
        raise ConfigError(None, f"{shown}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(None, f"{shown}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(None, f"{shown}: is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:  # an integer too long, nesting too deep
        raise ConfigError(None, f"{shown}: cannot be read: {toml_limit(exc)}") from None
    base = Path(shown).absolute().parent
    _importable(base)
    checked = load_mapping(data, base_dir=base, env=env)
    return ServiceFile(Path(shown).absolute(), checked.services, checked.fleet)


def _importable(folder: Path) -> None:
    """Put ``folder`` first on :data:`sys.path` unless it is there already."""
    entry = os.fspath(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()


def load_mapping(
    data: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServiceFile:
    """Check the contents of a service file, already parsed.

    Args:
        data: the parsed TOML.
        base_dir: the folder relative paths are relative to (``None``: left as they are).
        env: as for :func:`load`.

    Returns:
        The checked file (its ``path`` is ``None``).

    Raises:
        ConfigError: a key or value is wrong; ``field`` names it.
    """
    for key in data:
        if key not in ("services", "fleet"):
            raise ConfigError(
                str(key), "unknown top-level key; services go in [services.<name>] tables"
            )
    fleet = load_fleet(data["fleet"]) if "fleet" in data else None
    services = data.get("services")
    if services is None or services == {}:
        raise ConfigError("services", "no service: add a [services.<name>] table")
    if not isinstance(services, Mapping):
        raise ConfigError("services", "must be a table of [services.<name>] tables")
    specs: dict[str, ServiceSpec] = {}
    for name, table in services.items():
        specs[name] = _load_service(name, table, base_dir, env)
    return ServiceFile(None, specs, fleet)


def _load_service(
    name: Any,
    table: Any,
    base_dir: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
) -> ServiceSpec:
    where = f"services.{name}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(where, "is not a service name: use A-Z a-z 0-9 _ . -")
    if not isinstance(table, Mapping):
        raise ConfigError(where, f"must be a table, got {_type_name(table)}")
    for key in table:
        close = difflib.get_close_matches(str(key), _OWN_KEYS, n=1, cutoff=0.8)
        if key not in _OWN_KEYS and key not in _FIELDS and close:
            raise ConfigError(f"{where}.{key}", f"unknown option; did you mean {close[0]!r}?")
    options = {key: value for key, value in table.items() if key not in _OWN_KEYS}
    options.setdefault("app_name", name)
    if base_dir is not None:
        for key in _PATH_FIELDS:
            value = options.get(key)
            if isinstance(value, str) and value and not os.path.isabs(value):
                options[key] = os.path.join(os.fspath(base_dir), value)
    try:
        config = Config.from_mapping(options, env=env)
    except ConfigError as exc:
        raise _scoped(exc, name) from None
    handler = None
    if "handler" in table:
        handler = resolve(table["handler"], MessageHandler, f"{where}.handler")
    plugins: list[Plugin] = []
    if "plugins" in table:
        listed = table["plugins"]
        if not isinstance(listed, list):
            raise ConfigError(
                f"{where}.plugins", f"expected a list of plugin names, got {_type_name(listed)}"
            )
        for entry in listed:
            plugins.append(_load_plugin(entry, f"{where}.plugins"))
    bridge = load_table(table["bridge"], f"{where}.bridge") if "bridge" in table else None
    return ServiceSpec(name, config, handler, tuple(plugins), bridge)


def _load_plugin(entry: Any, where: str) -> Plugin:
    if isinstance(entry, str) and ":" in entry:
        return resolve(entry, Plugin, where)
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(
            where, f"expected a plugin name or 'module:attribute', got {_type_name(entry)}"
        )
    point = find_entry_point(entry)
    if point is None:
        installed = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
        known = f" (installed: {', '.join(installed)})" if installed else " (none is installed)"
        hint = "; an import path is written 'module:attribute'" if "." in entry else ""
        raise ConfigError(
            where,
            f"no plugin named {entry!r} in the entry-point group {ENTRY_POINT_GROUP}{known}{hint}",
        )
    try:
        target = point.load()
    except Exception as exc:
        raise ConfigError(
            where,
            f"plugin {entry!r} (entry point {point.value}) cannot be loaded: "
            f"{type(exc).__name__}: {exc}",
        ) from exc
    return _instantiate(target, Plugin, where, f"plugin {entry!r} ({point.value})")


def find_entry_point(name: str, group: str = ENTRY_POINT_GROUP) -> metadata.EntryPoint | None:
    """The installed entry point ``name`` of ``group``, or ``None``.

    When several installed packages offer the same name, the first one found wins.
    """
    for point in metadata.entry_points(group=group, name=name):
        return point
    return None


def resolve(spec: Any, kind: type[_T], where: str) -> _T:
    """Import ``"module:attribute"`` and make a ``kind`` out of it.

    The attribute may be dotted (``"module:Class.factory"``). What it names may be an instance
    of ``kind`` (used as it is), a subclass of ``kind`` (instantiated with no arguments) or
    another callable (called with no arguments; it must return an instance of ``kind``).

    Args:
        spec: the import path.
        kind: the class the result must be an instance of.
        where: the field named in errors.

    Returns:
        The instance.

    Raises:
        ConfigError: the path is malformed, the module cannot be imported, the attribute is
            missing, or what it names does not make a ``kind``.
    """
    if not isinstance(spec, str):
        raise ConfigError(where, f"expected an import path 'module:attribute', got {spec!r}")
    module_name, colon, attribute = spec.strip().partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(where, f"{spec!r} is not an import path; write 'module:attribute'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(where, f"cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:
        raise ConfigError(
            where, f"importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    walked = module_name
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(where, f"{walked!r} has no attribute {part!r}") from None
        walked = f"{module_name}:{part}" if walked == module_name else f"{walked}.{part}"
    return _instantiate(target, kind, where, spec)


def _instantiate(target: Any, kind: type[_T], where: str, shown: str) -> _T:
    """Use ``target`` if it is a ``kind``; else call it (a class or a factory) with no args."""
    wanted = f"bgws.{kind.__name__}"
    if isinstance(target, kind):
        return target
    if isinstance(target, type) and not issubclass(target, kind):
        raise ConfigError(where, f"{shown} is a class, but not a {wanted} subclass")
    if not callable(target):
        raise ConfigError(
            where, f"{shown} is a {_type_name(target)}, not a {wanted}, a class or a factory"
        )
    try:
        made = target()
    except Exception as exc:
        raise ConfigError(where, f"{shown}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, kind):
        raise ConfigError(where, f"{shown}() returned a {_type_name(made)}, not a {wanted}")
    return made


def _scoped(exc: ConfigError, name: str) -> ConfigError:
    """The same error, its field named as ``services.<name>.<field>``."""
    field = f"services.{name}" + (f".{exc.field}" if exc.field else "")
    scoped = type(exc)(field, exc.reason)
    scoped.__cause__ = exc.__cause__
    return scoped


def _type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
