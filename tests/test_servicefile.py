"""Tests for bgws.servicefile: service tables, profiles, import paths and entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws import servicefile
from bgws.servicefile import load, load_mapping

MODULE = "bgws_servicefile_fixture"
SOURCE = """
import bgws


class ChatHandler(bgws.MessageHandler):
    pass


class Audit(bgws.Plugin):
    plugin_name = "audit"


class Broken(bgws.MessageHandler):
    def __init__(self):
        raise RuntimeError("no database")


class NotAHandler:
    pass


def make_handler():
    return ChatHandler()


def make_nothing():
    return 42


READY = ChatHandler()
NUMBER = 3
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of handlers and plugins on sys.path, forgotten afterwards."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    yield MODULE
    sys.modules.pop(MODULE, None)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(textwrap.dedent(text))
    return path


def one(data: dict[str, Any], **table: Any) -> dict[str, Any]:
    """A service file with one service ``chat`` holding ``table`` (and a URL)."""
    return {"services": {"chat": {"url": "ws://127.0.0.1:1/", **table}}, **data}


def error_of(data: dict[str, Any]) -> bgws.ConfigError:
    with pytest.raises(bgws.ConfigError) as caught:
        load_mapping(data, env={})
    return caught.value


def test_services_in_file_order_with_profiles(tmp_path: Path) -> None:
    """Each table becomes a service: a profile applies, the table's keys override it."""
    path = write(
        tmp_path,
        """
        [services.prices]
        profile = "trading"
        url = "ws://127.0.0.1:1/"
        max_queue_size = 7

        [services.chat]
        profile = "chat"
        url = "ws://127.0.0.1:2/"
        """,
    )
    loaded = load(path, env={})
    assert list(loaded.services) == ["prices", "chat"]
    prices = loaded.services["prices"].config
    assert (
        prices.heartbeat_interval == bgws.profiles.profile_values("trading")["heartbeat_interval"]
    )
    assert prices.max_queue_size == 7
    assert loaded.services["chat"].config.foreground is True
    assert loaded.path == path.absolute()


def test_app_name_defaults_to_the_table_name(tmp_path: Path) -> None:
    """Without app_name a service is named after its table (and so is its store)."""
    loaded = load_mapping(one({}), env={})
    config = loaded.services["chat"].config
    assert config.app_name == "chat"
    assert config.service_tag == "chat"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    """storage_path given relative is taken relative to the file's folder, not the cwd."""
    path = write(
        tmp_path,
        """
        [services.chat]
        url = "ws://127.0.0.1:1/"
        storage_path = "data/chat.sqlite3"
        """,
    )
    config = load(path, env={}).services["chat"].config
    assert config.storage_path == str(tmp_path / "data" / "chat.sqlite3")


def test_environment_overrides_every_service() -> None:
    """BGWS_<FIELD> variables override the file, as for Config.from_toml."""
    loaded = load_mapping(one({}, max_queue_size=5), env={"BGWS_MAX_QUEUE_SIZE": "9"})
    assert loaded.services["chat"].config.max_queue_size == 9


def test_unknown_key_is_named_with_its_service() -> None:
    """A misspelt option is refused, its field named services.<name>.<key>, with a hint."""
    error = error_of(one({}, heartbeat_intervall="5s"))
    assert error.field == "services.chat.heartbeat_intervall"
    assert "did you mean 'heartbeat_interval'" in error.reason
    error = error_of(one({}, handlers="m:H"))
    assert error.field == "services.chat.handlers"
    assert "did you mean 'handler'" in error.reason


def test_wrong_value_is_named_with_its_service() -> None:
    """A wrong value of a Config field names services.<name>.<field>."""
    error = error_of(one({}, max_queue_size=0))
    assert error.field == "services.chat.max_queue_size"
    assert str(error).startswith("services.chat.max_queue_size: ")


def test_unknown_profile_is_named_with_its_service() -> None:
    """An unknown profile is refused as services.<name>.profile."""
    assert error_of(one({}, profile="chaat")).field == "services.chat.profile"


def test_unknown_top_level_key() -> None:
    """A top-level key other than services is refused, by its name."""
    error = error_of(one({"url": "ws://x/"}))
    assert error.field == "url"
    assert "[services.<name>]" in error.reason


@pytest.mark.parametrize("data", [{}, {"services": {}}], ids=["missing", "empty"])
def test_a_file_needs_a_service(data: dict[str, Any]) -> None:
    """A file without any [services.<name>] table is refused."""
    assert error_of(data).field == "services"


def test_bad_service_name_and_non_table() -> None:
    """Service names are A-Z a-z 0-9 _ . -, and each service is a table."""
    assert error_of({"services": {"a b": {"url": "ws://h/"}}}).field == "services.a b"
    assert "must be a table" in error_of({"services": {"chat": 3}}).reason


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    """Broken TOML is a ConfigError without a field, naming the file and the problem."""
    path = write(tmp_path, "[services.chat\nurl = 1\n")
    with pytest.raises(bgws.ConfigError) as caught:
        load(path, env={})
    assert caught.value.field is None
    assert str(path) in caught.value.reason
    assert "invalid TOML" in caught.value.reason


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is one clear ConfigError."""
    with pytest.raises(bgws.ConfigError, match="no such file"):
        load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [("ChatHandler", "class"), ("make_handler", "factory"), ("READY", "instance")],
)
def test_handler_from_class_factory_or_instance(module: str, attribute: str, expected: str) -> None:
    """A handler path may name a subclass, a factory or a ready instance."""
    spec = load_mapping(one({}, handler=f"{module}:{attribute}"), env={}).services["chat"]
    mod = sys.modules[module]
    assert isinstance(spec.handler, mod.ChatHandler)
    if expected == "instance":
        assert spec.handler is mod.READY
    service = spec.build()
    assert service.config is spec.config


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_bgws:Handler", "cannot import 'no_such_module_bgws'"),
        ("{module}:Missing", "has no attribute 'Missing'"),
        ("{module}:NotAHandler", "is a class, but not a bgws.MessageHandler subclass"),
        ("{module}:Broken", "raised RuntimeError: no database"),
        ("{module}:make_nothing", "returned a int, not a bgws.MessageHandler"),
        ("{module}:NUMBER", "is a int, not a bgws.MessageHandler"),
        ("{module}.ChatHandler", "is not an import path; write 'module:attribute'"),
    ],
)
def test_handler_errors_are_clear(module: str, path: str, message: str) -> None:
    """Every way an import path can be wrong is a ConfigError on services.<name>.handler."""
    error = error_of(one({}, handler=path.format(module=module)))
    assert error.field == "services.chat.handler"
    assert message in error.reason


def test_plugins_from_import_paths(module: str) -> None:
    """Plugins named by import path are instantiated, in the order listed."""
    spec = load_mapping(one({}, plugins=[f"{module}:Audit", f"{module}:Audit"]), env={})
    plugins = spec.services["chat"].plugins
    assert [p.name for p in plugins] == ["audit", "audit"]
    assert plugins[0] is not plugins[1]


def test_plugins_must_be_a_list() -> None:
    """plugins is a list of names."""
    assert error_of(one({}, plugins="audit")).field == "services.chat.plugins"


@pytest.fixture
def installed_plugin(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution on sys.path offering the entry point ``audit`` in bgws.plugins."""
    info = tmp_path / "dist" / "bgws_fake_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bgws-fake-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[bgws.plugins]\naudit = {module}:Audit\nbroken = {module}:Missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "dist"))
    return "audit"


def test_plugin_from_an_entry_point(installed_plugin: str) -> None:
    """A plain name is looked up in the bgws.plugins entry-point group of installed packages."""
    point = servicefile.find_entry_point(installed_plugin)
    assert point is not None
    assert point.group == servicefile.ENTRY_POINT_GROUP
    spec = load_mapping(one({}, plugins=[installed_plugin]), env={}).services["chat"]
    assert [p.name for p in spec.plugins] == ["audit"]


def test_unknown_entry_point_lists_the_installed_ones(installed_plugin: str) -> None:
    """An unknown plugin name says which names are installed."""
    error = error_of(one({}, plugins=["audti"]))
    assert error.field == "services.chat.plugins"
    assert "no plugin named 'audti'" in error.reason
    assert "installed: audit, broken" in error.reason


def test_entry_point_that_cannot_load(installed_plugin: str) -> None:
    """An entry point whose target is missing is a ConfigError naming it."""
    error = error_of(one({}, plugins=["broken"]))
    assert "plugin 'broken'" in error.reason
    assert "cannot be loaded" in error.reason


def test_entry_point_lookup_can_be_replaced(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup is one function, find_entry_point, which plugin lookups go through."""
    asked: list[str] = []

    def fake(name: str, group: str = servicefile.ENTRY_POINT_GROUP) -> Any:
        asked.append(name)
        return None

    monkeypatch.setattr(servicefile, "find_entry_point", fake)
    error_of(one({}, plugins=["typing-indicator"]))
    assert asked == ["typing-indicator"]


def test_shared_store_file_is_named_with_its_service(tmp_path: Path) -> None:
    """Two services on one SQLite file are refused when the manager is built."""
    store = str(tmp_path / "one.sqlite3")
    data = {
        "services": {
            "a": {"url": "ws://127.0.0.1:1/", "storage_path": store},
            "b": {"url": "ws://127.0.0.1:2/", "storage_path": store},
        }
    }
    loaded = load_mapping(data, env={})
    with pytest.raises(bgws.ConfigError) as caught:
        loaded.build_manager()
    assert caught.value.field == "services.b.storage_path"


def test_only_some_services() -> None:
    """only() keeps the named services, and refuses a name the file lacks."""
    data = {"services": {"a": {"url": "ws://h:1/"}, "b": {"url": "ws://h:2/"}}}
    loaded = load_mapping(data, env={})
    assert list(loaded.only(["b"]).services) == ["b"]
    with pytest.raises(bgws.ConfigError, match="no service named 'c'"):
        loaded.only(["c"])


@pytest.mark.parametrize(
    "command",
    [
        ["run", "{file}", "--check"],
        ["install", "{file}", "--platform", "linux", "--dry-run", "--target-dir", "{units}"],
    ],
    ids=["run", "install"],
)
def test_handler_beside_the_file_imports_under_the_bgws_script(
    tmp_path: Path, command: list[str]
) -> None:
    """The bgws script (run, install), started elsewhere, imports a module beside the file."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "beside_handlers.py").write_text(
        "import bgws\n\nclass Chat(bgws.MessageHandler):\n    pass\n"
    )
    toml = folder / "services.toml"
    toml.write_text(
        '[services.chat]\nurl = "ws://127.0.0.1:1/"\nhandler = "beside_handlers:Chat"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = Path(sys.executable).parent / "bgws"
    argv = [a.format(file=toml, units=tmp_path / "units") for a in command]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(script), *argv],
        cwd=elsewhere,
        env={**env, "HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot import" not in done.stderr
