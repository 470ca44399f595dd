"""Hide secrets before anything reaches a repr, a log line or a status report.

Two kinds of help live here:

- *by name*: :func:`is_sensitive_name` decides whether a header, query parameter or JSON key
  probably carries a secret (``Authorization``, ``X-Api-Key``, ``access_token``...), and
  :func:`redact_headers`, :func:`redact_url` and :func:`redact_json` hide the values of such
  names;
- *by value*: :func:`redact_text` replaces every known secret value wherever it appears in a
  piece of text (an exception message, a close reason, a frame echoed in a log line).

One rule decides what is a secret: the same :func:`is_sensitive_name` that hides a value in a
log line also refuses to send it in clear text over plain ``ws://`` to a host that is not
loopback (see :class:`bgws.Config`). Guessing by name errs on the side of hiding: a false
positive costs a ``***`` in a log line (or asks for ``wss://``), a false negative leaks a
credential.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "is_sensitive_name",
    "redact_headers",
    "redact_json",
    "redact_text",
    "redact_url",
]

REDACTED = "***"
"""What a hidden value is shown as."""

# Substrings of a normalised name (lower case, without "-", "_", "." and spaces) that mark it as
# probably secret. Broad on purpose: a false positive costs a "***" (or a refusal over plain
# ws://, which the config can lift), a false negative leaks a credential.
_SENSITIVE_PARTS = (
    "token",
    "secret",
    "passw",
    "pwd",
    "key",
    "auth",
    "signature",
    "session",
    "cookie",
    "credential",
    "jwt",
    "bearer",
    "private",
)
# Short names that are secrets on their own but too short to match as substrings.
_SENSITIVE_EXACT = frozenset({"sig", "code", "pass", "sid"})

# Ordinary words that contain a sensitive part, taken out before the parts are looked for:
# "author" (but not "authorization" / "authorisation"), "keyword", "keyboard", "monkey".
_ORDINARY_WORDS = re.compile(r"author(?!i[sz])|keyword|keyboard|monkey")

_MIN_SECRET_LENGTH = 4
_NORMALISE = re.compile(r"[-_.\s]+")


def _normalise(name: str) -> str:
    return _NORMALISE.sub("", name.lower())


def is_sensitive_name(name: str) -> bool:
    """Tell whether a header, query parameter or key name probably carries a secret.

    This is the one rule for secrets: what it matches is hidden in logs, reprs and status,
    listed by :meth:`bgws.Config.secret_values`, and refused over plain ``ws://`` to a host
    that is not loopback.

    Args:
        name: the name, in any case; ``-``, ``_`` and ``.`` are ignored, so ``X-Api-Key``,
            ``api_key`` and ``apiKey`` are treated alike.

    Returns:
        ``True`` for names such as ``Authorization``, ``Cookie``, ``access_token``,
        ``X-Api-Key``, ``password``, ``signature``, ``session_id``; ``False`` for ordinary
        words that merely contain such a part (``author``, ``keyword``).
    """
    normalised = _normalise(name)
    if normalised in _SENSITIVE_EXACT:
        return True
    normalised = _ORDINARY_WORDS.sub(" ", normalised)
    return any(part in normalised for part in _SENSITIVE_PARTS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy headers, hiding the values of those whose names look secret.

    Args:
        headers: header names to values.

    Returns:
        A new dict with the same names, in the same order; sensitive values are ``***``.
    """
    return {name: REDACTED if is_sensitive_name(name) else value for name, value in headers.items()}


def _redact_pairs(text: str) -> str:
    """Hide the values of sensitive ``name=value`` pairs in a query string or fragment."""
    if "=" not in text:
        return text
    parts = []
    for pair in text.split("&"):
        name, sep, value = pair.partition("=")
        if sep and value and is_sensitive_name(unquote_plus(name)):
            pair = f"{name}={REDACTED}"
        parts.append(pair)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """Hide the credentials in a URL: its userinfo and its sensitive query values.

    ``wss://user:pw@host/ws?room=1&token=abc`` becomes ``wss://***@host/ws?room=1&token=***``.
    Everything else is kept exactly as given. A string that cannot be parsed as a URL is
    replaced whole, since it cannot be told what part of it is secret.

    Args:
        url: the URL.

    Returns:
        The URL with its secrets shown as ``***``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = _redact_pairs(parts.query)
    fragment = _redact_pairs(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_json(value: Any) -> Any:
    """Copy a JSON-like value, hiding the values of mapping keys whose names look secret.

    Mappings become dicts and sequences (other than strings and bytes) become lists, at any
    depth, so the result is made of plain types.

    Args:
        value: a JSON-like value (mappings, lists, tuples, scalars).

    Returns:
        A plain copy with sensitive values shown as ``***``.
    """
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_sensitive_name(key) else redact_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_json(item) for item in value]
    return value


def redact_text(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every known secret value in a text by ``***``.

    Secrets shorter than 4 characters are left alone: hiding every ``1`` or ``ab`` in a text
    would make it unreadable while protecting nothing worth protecting.

    Args:
        text: the text to clean, such as a log message or an exception's message.
        secrets: the secret values to hide; ``None`` and short values are skipped.

    Returns:
        The text with each secret replaced.
    """
    # Longest first, so a secret that contains another is hidden whole.
    known = sorted(
        {s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
    )
    for secret in known:
        text = text.replace(secret, REDACTED)
    return text
