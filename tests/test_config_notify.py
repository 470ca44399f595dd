"""Tests for bgws.config's notification options: backend, message types and templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bgws.config import Config
from bgws.errors import ConfigError

URL = "wss://example.com/ws"


def make(**changes: Any) -> Config:
    """Build a config with the two required options filled in."""
    return Config(app_name="app", url=URL, **changes)


# The new fields' wrong values; test_config.py runs them with the other fields' cases.
NOTIFY_BAD_VALUES: list[tuple[str, Any]] = [
    ("notifications", "toast"),
    ("notifications", None),
    ("notifications", True),
    ("notify_types", "chat_message"),
    ("notify_types", [""]),
    ("notify_types", ["a", "a"]),
    ("notify_types", [1]),
    ("notify_title", ""),
    ("notify_title", None),
    ("notify_title", "{text"),
    ("notify_title", "text}"),
    ("notify_title", "{}"),
    ("notify_title", "{0}"),
    ("notify_body", 1),
    ("notify_body", "{user.name}"),
    ("notify_body", "{items[0]}"),
    ("notify_body", "{ text }"),
    ("notify_body", "{text!x}"),
    ("notify_body", "{price:{width}}"),
    ("notify_body", "{access_token}"),
    ("notify_body", "{password}"),
]

# One BGWS_<FIELD> text per new field and the value it gives; test_config.py runs them too.
NOTIFY_ENV_SAMPLES: dict[str, tuple[str, Any]] = {
    "notifications": ("desktop", "desktop"),
    "notify_types": ("chat_message, mention", ("chat_message", "mention")),
    "notify_title": ("{app_name}: {sender}", "{app_name}: {sender}"),
    "notify_body": ("", ""),
}


def test_notify_defaults() -> None:
    """By default: the log backend, no rules, title {app_name}, body {text}."""
    config = make()
    assert config.notifications == "log"
    assert config.notify_types == ()
    assert (config.notify_title, config.notify_body) == ("{app_name}", "{text}")


@pytest.mark.parametrize(("name", "value"), NOTIFY_BAD_VALUES)
def test_bad_notify_value_names_the_field(name: str, value: Any) -> None:
    """A wrong backend, type list or template raises ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        make(**{name: value})
    assert info.value.field == name
    assert info.value.reason


@pytest.mark.parametrize(
    "template",
    [
        "{app_name}",
        "{type}: {text}",
        "{sender} ({room})",
        "{price:>10.2f}",
        "{text!r}",
        "{{literal}} braces",
        "no placeholders at all",
        "{author}",  # 'auth' inside a word is not a credential
    ],
)
def test_good_templates_are_kept_as_given(template: str) -> None:
    """Valid templates are accepted and stored unchanged."""
    config = make(notify_title=template, notify_body=template)
    assert (config.notify_title, config.notify_body) == (template, template)


def test_template_errors_say_what_is_wrong() -> None:
    """The reasons name the placeholder and the rule it breaks."""
    with pytest.raises(ConfigError, match="not a valid template"):
        make(notify_title="{text")
    with pytest.raises(ConfigError, match=r"\{user.name\}: only top-level fields"):
        make(notify_body="{user.name}")
    with pytest.raises(ConfigError, match=r"\{token\} looks like a secret"):
        make(notify_body="{token}")


def test_empty_body_is_allowed_but_not_an_empty_title() -> None:
    """A title-only notification has an empty body; a title cannot be blank."""
    assert make(notify_body="").notify_body == ""
    with pytest.raises(ConfigError) as info:
        make(notify_title="   ")
    assert info.value.field == "notify_title"


def test_notify_types_become_a_tuple() -> None:
    """A list of types is stored as a tuple."""
    assert make(notify_types=["chat_message", "mention"]).notify_types == (
        "chat_message",
        "mention",
    )


def test_notify_options_from_toml(tmp_path: Path) -> None:
    """A TOML file sets the notification options by their names."""
    path = tmp_path / "service.toml"
    path.write_text(
        'app_name = "MyChat"\nurl = "wss://chat.example/ws"\nnotifications = "desktop"\n'
        'notify_types = ["chat_message"]\nnotify_title = "{app_name}: {sender}"\n'
        'notify_body = "{text}"\n'
    )
    config = Config.from_toml(path, env={})
    assert config.notifications == "desktop"
    assert config.notify_types == ("chat_message",)
    assert config.notify_title == "{app_name}: {sender}"


def test_notify_env_overrides() -> None:
    """BGWS_NOTIFY_* variables set the new fields, parsed per their type."""
    env = {f"BGWS_{name.upper()}": raw for name, (raw, _) in NOTIFY_ENV_SAMPLES.items()}
    config = Config.from_mapping({"app_name": "a", "url": URL}, env=env)
    for name, (_, expected) in NOTIFY_ENV_SAMPLES.items():
        assert getattr(config, name) == expected, name


def test_bad_template_from_env_names_the_variable() -> None:
    """A broken template from the environment is refused, naming the field and the text."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"app_name": "a", "url": URL}, env={"BGWS_NOTIFY_BODY": "{text"})
    assert info.value.field == "notify_body"
    assert "'{text'" in info.value.reason


def test_notify_options_round_trip_through_to_dict() -> None:
    """to_dict gives plain values that from_mapping loads back into an equal config."""
    config = make(notifications="none", notify_types=["x"], notify_body="{a} {b}")
    plain = config.to_dict(redact=False)
    assert plain["notify_types"] == ["x"]
    assert Config.from_mapping(plain, env={}) == config


def test_docs_describe_the_notify_options() -> None:
    """docs/configuration.md has a row for each notification option, linking the guide."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for name in NOTIFY_ENV_SAMPLES:
        assert f"| `{name}` |" in text, name
    assert "notifications.md" in text
