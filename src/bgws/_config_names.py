"""Option names a caller got wrong: keywords of ``Config(...)`` and ``BGWS_*`` variables.

:class:`bgws.Config` is a frozen dataclass, whose generated ``__init__`` answers an unknown
keyword with a bare ``TypeError``. Its ``__new__`` calls :func:`check_keywords` first, so a
misspelt keyword gets the same :class:`~bgws.ConfigError` as a misspelt TOML key or factory
argument (``app_nme: unknown option; did you mean 'app_name'?``).

An environment variable is not refused: the environment is shared with other programs, and
``BGWS_SOCKET`` and friends are not config fields. But a ``BGWS_*`` variable whose name is
close to a field's variable (``BGWS_HEARTBEAT_INTERVALL``) is almost surely a typo that would
otherwise be ignored without a word: :func:`warn_misspelt_env` logs one WARNING per such
variable and process, on the ``bgws.config`` logger, naming the variable it resembles.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ._config_checks import check_names, parse_env
from .errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "REQUIRED",
    "check_keywords",
    "env_overrides",
    "misspelt_env",
    "warn_misspelt_env",
]

ENV_PREFIX: Final = "BGWS_"
"""The prefix of the environment variables that override config fields."""

REQUIRED: Final = ("app_name", "url")
"""The options every config needs."""

# How close (difflib's ratio) a variable's name must be to a field's to count as its typo.
# 0.85 catches one letter doubled, dropped or swapped in a name of eight letters or more,
# and keeps unrelated variables (BGWS_SOCKET, BGWS_STORAGE, BGWS_INSTALL_DIR) quiet.
_CUTOFF: Final = 0.85

_log = logging.getLogger("bgws.config")
_warned: set[str] = set()


def check_keywords(
    args: tuple[Any, ...], options: Mapping[str, Any], fields: Iterable[str]
) -> None:
    """Refuse what ``Config(...)`` cannot take, with the message TOML and the factories give.

    Args:
        args: the positional arguments (a config takes none).
        options: the keyword arguments.
        fields: the config's field names.

    Raises:
        TypeError: a positional argument (a mistake in the program, not in a value).
        ConfigError: an unknown option (``field`` is its name, the reason suggests the closest
            one) or a missing required option.
    """
    if args:
        raise TypeError("Config takes keyword options only: Config(app_name=..., url=..., ...)")
    check_names(options, tuple(fields))
    for required in REQUIRED:
        if required not in options:
            raise ConfigError(required, "is missing; this option is required")


def misspelt_env(source: Mapping[str, str], fields: Iterable[str]) -> dict[str, str]:
    """The ``BGWS_*`` variables in ``source`` that look like a misspelt field variable.

    Args:
        source: the environment.
        fields: the config's field names.

    Returns:
        Each suspicious variable mapped to the field variable it resembles.
    """
    known = [ENV_PREFIX + name.upper() for name in fields]
    wanted = set(known)
    found: dict[str, str] = {}
    for variable in source:
        if not variable.startswith(ENV_PREFIX) or variable in wanted:
            continue
        close = difflib.get_close_matches(variable, known, n=1, cutoff=_CUTOFF)
        if close:
            found[variable] = close[0]
    return found


def warn_misspelt_env(source: Mapping[str, str], fields: Iterable[str]) -> None:
    """Log a WARNING for each misspelt-looking ``BGWS_*`` variable, once per process.

    Args:
        source: the environment.
        fields: the config's field names.
    """
    for variable, meant in misspelt_env(source, fields).items():
        if variable not in _warned:
            _warned.add(variable)
            _log.warning("ignoring %s: not a bgws option; did you mean %s?", variable, meant)


def env_overrides(source: Mapping[str, str], hints: Mapping[str, Any]) -> dict[str, Any]:
    """Read ``BGWS_<FIELD>`` variables into field values; other variables are ignored.

    Args:
        source: the environment.
        hints: each field's type, by field name (what a variable's text is parsed as).

    Returns:
        The values of the fields that have a variable, by field name.

    Raises:
        ConfigError: a variable's text is not a valid value; ``field`` names the option.
    """
    warn_misspelt_env(source, hints)
    overrides: dict[str, Any] = {}
    for name, hint in hints.items():
        variable = ENV_PREFIX + name.upper()
        raw = source.get(variable)
        if raw is not None:
            try:
                overrides[name] = parse_env(hint, raw)
            except ConfigError as exc:
                raise ConfigError(name, f"from {variable}: {exc.reason}") from None
    return overrides
