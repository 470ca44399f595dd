"""Tests for bgws.config's durable-delivery options: storage, acks, requests, resume, priority."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from bgws.config import DEFAULT_STORAGE_KEYS, Config
from bgws.errors import ConfigError
from bgws.message import Message
from bgws.policies import AckPolicy, ResumePolicy

URL = "wss://example.com/ws"


def make(**changes: Any) -> Config:
    """Build a config with the two required options filled in."""
    return Config(app_name="app", url=URL, **changes)


def ack_match(message: Message) -> Any:
    """A module-level ack matcher (so a config holding it can be pickled)."""
    return message.get("acked")


# The new fields' wrong values; test_config.py runs them with the other fields' cases.
DELIVERY_BAD_VALUES: list[tuple[str, Any]] = [
    ("storage", "postgres"),
    ("storage", None),
    ("storage", "SQLite"),
    ("storage_path", ""),
    ("storage_path", "   "),
    ("storage_path", 1),
    ("storage_path", Path("x.db")),
    ("storage_path", "a\0b.db"),
    ("storage_path", ":memory:"),
    ("storage_sync", "off"),
    ("storage_sync", "extra"),
    ("storage_sync", True),
    ("ack", "ack"),
    ("ack", True),
    ("ack", ["ack"]),
    ("ack", ResumePolicy()),
    ("ack", {"typ": "ack"}),
    ("ack", {"message_type": "ack", "extra": 1}),
    ("ack", {1: "x"}),
    ("ack", {"match": "mod:func"}),
    ("ack", {"id_field": ""}),
    ("ack", {"id_field": 5}),
    ("ack", {"message_type": 5}),
    ("max_in_flight", 0),
    ("max_in_flight", True),
    ("max_in_flight", 1.0),
    ("max_in_flight", "10"),
    ("max_in_flight", None),
    ("ack_timeout", 0),
    ("ack_timeout", "0s"),
    ("ack_timeout", -1),
    ("ack_timeout", False),
    ("ack_timeout", None),
    ("request_timeout", 0),
    ("request_timeout", "soon"),
    ("request_timeout", True),
    ("request_timeout", None),
    ("max_pending_requests", 0),
    ("max_pending_requests", False),
    ("max_pending_requests", 2.5),
    ("reply_id_field", ""),
    ("reply_id_field", 1),
    ("resume", "seq"),
    ("resume", AckPolicy()),
    ("resume", {"seq": "n"}),
    ("resume", {"request": "mod:func"}),
    ("resume", {"seq_field": ""}),
    ("resume", {"position_field": None}),
    ("resume", {"request_type": 3}),
    ("priority_types", "fill"),
    ("priority_types", None),
    ("priority_types", ["fill", "fill"]),
    ("priority_types", [""]),
    ("priority_types", ["  "]),
    ("priority_types", [1]),
]

# The new fields' BGWS_<FIELD> samples; test_config.py sets them with every other field.
DELIVERY_ENV_SAMPLES: dict[str, tuple[str, Any]] = {
    "storage": ("memory", "memory"),
    "storage_path": ("/var/lib/app/bgws.db", "/var/lib/app/bgws.db"),
    "storage_sync": ("full", "full"),
    "ack": ('{"message_type": "ok"}', AckPolicy(message_type="ok")),
    "max_in_flight": ("5", 5),
    "ack_timeout": ("500ms", 0.5),
    "request_timeout": ("2s", 2.0),
    "max_pending_requests": ("10", 10),
    "reply_id_field": ("reply_to", "reply_to"),
    "resume": ('{"seq_field": "n"}', ResumePolicy(seq_field="n")),
    "priority_types": ("order_update, fill", ("order_update", "fill")),
}


# -- defaults --


def test_delivery_defaults() -> None:
    """Without delivery options: SQLite at the default file, no acks, no resume."""
    config = make()
    assert config.storage == "sqlite"
    assert config.storage_path is None
    assert config.storage_sync == "normal"
    assert config.ack is None
    assert config.max_in_flight == 100
    assert config.ack_timeout == 10.0
    assert config.request_timeout == 10.0
    assert config.max_pending_requests == 1000
    assert config.reply_id_field is None
    assert config.resume is None
    assert config.priority_types == ()


def test_default_storage_keys_name_subscriptions() -> None:
    """The default storage keys include the resume position and the subscriptions."""
    assert DEFAULT_STORAGE_KEYS["resume_position"] == "resume_position"
    assert DEFAULT_STORAGE_KEYS["subscriptions"] == "subscriptions"
    assert make().storage_keys["subscriptions"] == "subscriptions"


# -- valid values --


def test_delivery_values_accepted() -> None:
    """Valid delivery options are stored normalised."""
    config = make(
        storage="memory",
        storage_sync="full",
        max_in_flight=1,
        ack_timeout="250ms",
        request_timeout=3,
        max_pending_requests=1,
        reply_id_field="re",
        priority_types=["order_update", "fill"],
    )
    assert (config.storage, config.storage_sync) == ("memory", "full")
    assert (config.max_in_flight, config.max_pending_requests) == (1, 1)
    assert (config.ack_timeout, config.request_timeout) == (0.25, 3.0)
    assert isinstance(config.request_timeout, float)
    assert config.reply_id_field == "re"
    assert config.priority_types == ("order_update", "fill")


def test_storage_path_need_not_exist(tmp_path: Path) -> None:
    """storage_path may name a file, and a folder, that do not exist yet; nothing is created."""
    path = tmp_path / "not" / "yet" / "bgws.db"
    assert make(storage_path=str(path)).storage_path == str(path)
    assert not (tmp_path / "not").exists()


def test_storage_path_existing_file_and_directory(tmp_path: Path) -> None:
    """An existing file is fine; a directory is refused naming storage_path."""
    existing = tmp_path / "bgws.db"
    existing.write_bytes(b"")
    assert make(storage_path=str(existing)).storage_path == str(existing)
    with pytest.raises(ConfigError, match="directory") as info:
        make(storage_path=str(tmp_path))
    assert info.value.field == "storage_path"


def test_id_fields_may_both_be_none() -> None:
    """reply_id_field and id_field may both be None (request() complains at call time)."""
    config = make(id_field=None, reply_id_field=None)
    assert (config.id_field, config.reply_id_field) == (None, None)


# -- ack and resume policies --


def test_policy_instances_kept_as_is() -> None:
    """AckPolicy and ResumePolicy instances, function forms included, are stored unchanged."""
    ack = AckPolicy(match=ack_match)
    resume = ResumePolicy(seq_field="n", request=lambda seq: {"from": seq})
    config = make(ack=ack, resume=resume)
    assert config.ack is ack
    assert config.resume is resume


def test_ack_from_table() -> None:
    """An ack table builds an AckPolicy; missing keys take AckPolicy's defaults."""
    assert make(ack={}).ack == AckPolicy()
    assert make(ack={"id_field": "ref"}).ack == AckPolicy(message_type="ack", id_field="ref")
    config = make(ack={"message_type": "ok", "id_field": "ref"})
    assert config.ack == AckPolicy(message_type="ok", id_field="ref")


def test_ack_empty_message_type_means_any() -> None:
    """message_type = "" (or None) in a table turns the type filter off."""
    assert make(ack={"message_type": ""}).ack == AckPolicy(message_type=None)
    assert make(ack={"message_type": None}).ack == AckPolicy(message_type=None)


def test_resume_from_table() -> None:
    """A resume table builds a ResumePolicy; missing keys take its defaults."""
    assert make(resume={}).resume == ResumePolicy()
    table = {"seq_field": "n", "request_type": "replay", "position_field": "from"}
    assert make(resume=table).resume == ResumePolicy(
        seq_field="n", request_type="replay", position_field="from"
    )


def test_unknown_table_key_suggests() -> None:
    """An unknown key in a policy table names the field and suggests the key meant."""
    with pytest.raises(ConfigError, match="did you mean 'id_field'") as info:
        make(ack={"idfield": "ref"})
    assert info.value.field == "ack"
    with pytest.raises(ConfigError, match="did you mean 'seq_field'") as info:
        make(resume={"seq_fild": "n"})
    assert info.value.field == "resume"


def test_policy_value_error_becomes_config_error() -> None:
    """A ValueError from a policy becomes a ConfigError with the policy's reason."""
    with pytest.raises(ConfigError) as info:
        make(ack={"id_field": ""})
    assert (info.value.field, info.value.reason) == ("ack", "id_field must be a non-empty string")
    with pytest.raises(ConfigError) as info:
        make(resume={"request_type": ""})
    assert info.value.field == "resume"
    assert info.value.reason == "request_type must be a non-empty string"


def test_function_form_cannot_come_from_a_table() -> None:
    """A table cannot give match or request; the reason says to build the policy in Python."""
    with pytest.raises(ConfigError, match=r"AckPolicy\(match=\.\.\.\)"):
        make(ack={"match": "module:func"})
    with pytest.raises(ConfigError, match=r"ResumePolicy\(request=\.\.\.\)"):
        make(resume={"request": "module:func"})


# -- TOML, to_dict, repr, pickle --

TOML = """
app_name = "Feed"
url = "wss://feed.example/ws"
storage = "sqlite"
storage_path = "data/feed.db"
storage_sync = "full"
max_in_flight = 10
ack_timeout = "5s"
request_timeout = "1500ms"
max_pending_requests = 50
reply_id_field = "reply_to"
priority_types = ["order_update", "fill"]

[ack]
message_type = "ack"
id_field = "ref"

[resume]
seq_field = "seq"
request_type = "replay"
position_field = "from"
"""


def test_from_toml_delivery(tmp_path: Path) -> None:
    """A TOML file sets every delivery option; storage_path is relative to the file."""
    path = tmp_path / "feed.toml"
    path.write_text(TOML)
    config = Config.from_toml(path, env={})
    assert config.storage_path == str(tmp_path / "data" / "feed.db")
    assert not (tmp_path / "data").exists()
    assert config.storage_sync == "full"
    assert (config.max_in_flight, config.max_pending_requests) == (10, 50)
    assert (config.ack_timeout, config.request_timeout) == (5.0, 1.5)
    assert config.reply_id_field == "reply_to"
    assert config.priority_types == ("order_update", "fill")
    assert config.ack == AckPolicy(message_type="ack", id_field="ref")
    assert config.resume == ResumePolicy(
        seq_field="seq", request_type="replay", position_field="from"
    )


def test_from_toml_absolute_storage_path_kept(tmp_path: Path) -> None:
    """An absolute storage_path in a TOML file is kept as given."""
    path = tmp_path / "feed.toml"
    target = tmp_path / "elsewhere" / "x.db"
    path.write_text(f'app_name = "a"\nurl = "wss://x/"\nstorage_path = "{target}"\n')
    assert Config.from_toml(path, env={}).storage_path == str(target)


def test_from_toml_ack_table_unknown_key(tmp_path: Path) -> None:
    """An unknown key in a TOML [ack] table is a ConfigError naming ack."""
    path = tmp_path / "feed.toml"
    path.write_text('app_name = "a"\nurl = "wss://x/"\n[ack]\ntype = "ack"\n')
    with pytest.raises(ConfigError, match="unknown key 'type'") as info:
        Config.from_toml(path, env={})
    assert info.value.field == "ack"


def test_from_toml_ack_without_type_filter(tmp_path: Path) -> None:
    """message_type = "" in a TOML [ack] table means any message type may carry acks."""
    path = tmp_path / "feed.toml"
    path.write_text('app_name = "a"\nurl = "wss://x/"\n[ack]\nmessage_type = ""\n')
    assert Config.from_toml(path, env={}).ack == AckPolicy(message_type=None)


def test_to_dict_shows_policy_tables(tmp_path: Path) -> None:
    """to_dict gives ack and resume as plain tables and priority_types as a list."""
    path = tmp_path / "feed.toml"
    path.write_text(TOML)
    out = Config.from_toml(path, env={}).to_dict()
    assert out["ack"] == {"message_type": "ack", "id_field": "ref"}
    assert out["resume"] == {"seq_field": "seq", "request_type": "replay", "position_field": "from"}
    assert out["priority_types"] == ["order_update", "fill"]
    assert out["storage_sync"] == "full"
    assert make().to_dict()["ack"] is None


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ack": AckPolicy(message_type=None, id_field="ref"), "resume": ResumePolicy()},
        {"ack": {"message_type": "ok"}, "resume": {"seq_field": "n"}, "storage": "memory"},
        {"priority_types": ("a", "b"), "storage_path": "/tmp/bgws-x.db", "storage_sync": "full"},
    ],
)
def test_to_dict_round_trips_delivery(changes: dict[str, Any]) -> None:
    """from_mapping(to_dict(redact=False)) rebuilds an equal config, policies included."""
    config = make(**changes)
    assert Config.from_mapping(config.to_dict(redact=False), env={}) == config


def test_toml_tables_round_trip(tmp_path: Path) -> None:
    """A config loaded from TOML tables survives to_dict(redact=False) and from_mapping."""
    path = tmp_path / "feed.toml"
    path.write_text(TOML)
    config = Config.from_toml(path, env={})
    assert Config.from_mapping(config.to_dict(redact=False), env={}) == config


def test_repr_shows_policies() -> None:
    """repr shows the delivery options, with policies as their tables."""
    text = repr(make(ack=AckPolicy(), resume=ResumePolicy(), priority_types=("fill",)))
    assert "ack={'message_type': 'ack', 'id_field': 'id'}" in text
    assert "resume={'seq_field': 'seq', 'request_type': 'resume', 'position_field': 'after'}" in (
        text
    )
    assert "priority_types=['fill']" in text
    assert "storage='sqlite'" in text


def test_pickle_keeps_function_form_policies() -> None:
    """Pickling keeps the policy objects themselves, so a function form survives."""
    config = make(ack=AckPolicy(match=ack_match), resume=ResumePolicy())
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    assert copy.ack is not None
    assert copy.ack.match is ack_match


def test_replace_keeps_policies() -> None:
    """replace keeps the policy objects and validates new ones."""
    ack = AckPolicy(match=ack_match)
    config = make(ack=ack).replace(max_in_flight=3)
    assert config.ack is ack
    assert config.replace(resume={"seq_field": "n"}).resume == ResumePolicy(seq_field="n")
    with pytest.raises(ConfigError) as info:
        config.replace(ack={"nope": 1})
    assert info.value.field == "ack"


# -- environment --


def test_env_overrides_delivery() -> None:
    """BGWS_ variables set each delivery option, policies from a JSON object."""
    env = {f"BGWS_{name.upper()}": raw for name, (raw, _) in DELIVERY_ENV_SAMPLES.items()}
    config = Config.from_mapping({"app_name": "a", "url": URL}, env=env)
    for name, (_, expected) in DELIVERY_ENV_SAMPLES.items():
        assert getattr(config, name) == expected, name


def test_env_examples_from_the_docs() -> None:
    """BGWS_ACK, BGWS_STORAGE and BGWS_PRIORITY_TYPES as the docs show them."""
    env = {
        "BGWS_ACK": '{"message_type":"ok"}',
        "BGWS_STORAGE": "memory",
        "BGWS_PRIORITY_TYPES": "a,b",
    }
    config = Config.from_mapping({"app_name": "a", "url": URL}, env=env)
    assert config.ack == AckPolicy(message_type="ok", id_field="id")
    assert config.storage == "memory"
    assert config.priority_types == ("a", "b")


def test_env_turns_policies_off_or_to_defaults() -> None:
    """Empty text or none turns a policy off; {} gives the policy's defaults."""
    data = {"app_name": "a", "url": URL, "ack": {"id_field": "ref"}, "resume": {}}
    off = Config.from_mapping(data, env={"BGWS_ACK": "", "BGWS_RESUME": "none"})
    assert (off.ack, off.resume) == (None, None)
    defaults = Config.from_mapping(data, env={"BGWS_ACK": "{}"})
    assert defaults.ack == AckPolicy()
    assert make().with_env({"BGWS_STORAGE_PATH": ""}).storage_path is None


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("BGWS_ACK", "ack", "ack"),
        ("BGWS_ACK", '["ack"]', "ack"),
        ("BGWS_ACK", '{"typ": "ack"}', "ack"),
        ("BGWS_ACK", '{"id_field": ""}', "ack"),
        ("BGWS_RESUME", "{bad", "resume"),
        ("BGWS_RESUME", '{"seq_field": 1}', "resume"),
        ("BGWS_STORAGE", "disk", "storage"),
        ("BGWS_STORAGE_SYNC", "off", "storage_sync"),
        ("BGWS_MAX_IN_FLIGHT", "0", "max_in_flight"),
        ("BGWS_MAX_IN_FLIGHT", "many", "max_in_flight"),
        ("BGWS_ACK_TIMEOUT", "0", "ack_timeout"),
        ("BGWS_REQUEST_TIMEOUT", "later", "request_timeout"),
        ("BGWS_MAX_PENDING_REQUESTS", "1.5", "max_pending_requests"),
    ],
)
def test_env_bad_delivery_value(variable: str, value: str, field: str) -> None:
    """A bad delivery variable is a ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"app_name": "a", "url": URL}, env={variable: value})
    assert info.value.field == field


def test_docs_delivery_toml_example_loads(tmp_path: Path) -> None:
    """The durable-delivery TOML example in docs/configuration.md is a valid config."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    blocks = docs.read_text().split("```toml\n")[1:]
    example = next(block.split("```", 1)[0] for block in blocks if "[ack]" in block)
    path = tmp_path / "feed.toml"
    path.write_text(f'app_name = "Feed"\nurl = "wss://feed.example/ws"\n{example}')
    config = Config.from_toml(path, env={})
    assert config.storage_path == str(tmp_path / "data" / "feed.db")
    assert config.ack == AckPolicy(message_type="ack", id_field="ref")
    assert config.resume == ResumePolicy()
