"""Tests for bgws._redact: hiding secrets by name and by value."""

from __future__ import annotations

import pytest

from bgws._redact import (
    REDACTED,
    is_sensitive_name,
    redact_headers,
    redact_json,
    redact_text,
    redact_url,
)


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Api-Key",
        "api_key",
        "apiKey",
        "access_token",
        "X-Auth-Token",
        "client_secret",
        "password",
        "passwd",
        "Signature",
        "X-Amz-Signature",
        "sig",
        "session_id",
        "jwt",
        "private_key",
        "credentials",
    ],
)
def test_sensitive_names(name: str) -> None:
    """Names that usually carry secrets are recognised, in any case and separator style."""
    assert is_sensitive_name(name)


@pytest.mark.parametrize(
    "name", ["room", "User-Agent", "Accept", "type", "id", "channel", "page", "lang"]
)
def test_ordinary_names(name: str) -> None:
    """Ordinary names are not mistaken for secrets."""
    assert not is_sensitive_name(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Authorization", True),
        ("Proxy-Authorization", True),
        ("Authorisation", True),
        ("cookie", True),
        ("X-Auth", True),
        ("X-Auth-Token", True),
        ("X-API-Key", True),
        ("X-Access-Key", True),
        ("X-Signature", True),
        ("X-Session-Id", True),
        ("session", True),
        ("auth", True),
        ("key", True),
        ("api_key", True),
        ("X-Client-Secret", True),
        ("password", True),
        ("User-Agent", False),
        ("X-Request-Id", False),
        ("monkey", False),
        ("author", False),
        ("Author-Name", False),
        ("keyword", False),
    ],
)
def test_one_rule_for_secrets(name: str, expected: bool) -> None:
    """The one predicate matches every secret-looking name and spares words that contain one."""
    assert is_sensitive_name(name) is expected


def test_redact_headers_hides_only_sensitive_values() -> None:
    """Sensitive header values become *** while others and the order are kept."""
    headers = {"User-Agent": "bgws", "Authorization": "Bearer abc", "X-Api-Key": "k1"}
    assert redact_headers(headers) == {
        "User-Agent": "bgws",
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
    }
    assert list(redact_headers(headers)) == list(headers)
    assert headers["Authorization"] == "Bearer abc"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://example.com/ws", "wss://example.com/ws"),
        ("wss://example.com/ws?room=1", "wss://example.com/ws?room=1"),
        ("wss://example.com/ws?token=abc&room=1", "wss://example.com/ws?token=***&room=1"),
        ("wss://example.com/?room=1&api_key=xyz", "wss://example.com/?room=1&api_key=***"),
        ("wss://user:pw@example.com:8443/ws", "wss://***@example.com:8443/ws"),
        ("wss://tok@example.com/", "wss://***@example.com/"),
        ("wss://example.com/?access%5Ftoken=abc", "wss://example.com/?access%5Ftoken=***"),
        ("wss://example.com/?token=", "wss://example.com/?token="),
        (
            "https://example.com/cb#access_token=abc&x=1",
            "https://example.com/cb#access_token=***&x=1",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """Userinfo and sensitive query values are hidden; the rest is kept as given."""
    assert redact_url(url) == expected


def test_redact_url_unparsable_is_hidden_whole() -> None:
    """A string that cannot be parsed as a URL is replaced entirely."""
    assert redact_url("wss://[::1/?token=abc") == REDACTED


def test_redact_json_hides_nested_sensitive_keys() -> None:
    """Sensitive keys are hidden at any depth and the result is plain dicts and lists."""
    value = {"type": "ping", "auth": {"token": "t"}, "items": ({"password": "p", "n": 1},)}
    assert redact_json(value) == {
        "type": "ping",
        "auth": REDACTED,
        "items": [{"password": REDACTED, "n": 1}],
    }


def test_redact_text_replaces_known_secrets() -> None:
    """Every occurrence of a known secret is replaced."""
    text = "connect failed: Bearer s3cr3t-token rejected (s3cr3t-token)"
    assert redact_text(text, ["s3cr3t-token"]) == "connect failed: Bearer *** rejected (***)"


def test_redact_text_skips_short_and_empty_secrets() -> None:
    """Secrets shorter than four characters, empty strings and None are ignored."""
    assert redact_text("a 1 abc", ["a", "1", "abc", "", None]) == "a 1 abc"


def test_redact_text_longest_first() -> None:
    """A secret containing another is hidden whole, not partly."""
    assert redact_text("key=abcd1234", ["abcd", "abcd1234"]) == "key=***"
