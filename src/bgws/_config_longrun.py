"""Checks of the options for connections that run for days: rotation, send rates, the
connect quota and the suspended tier.

:class:`~bgws.config.Config` calls :func:`check_longrun` once, with itself (its raw values of
``max_connection_age``, ``send_rate``, ``send_burst`` and ``lane_send_rates``), and stores the
normalised values it returns. A rate is ``[count, per]``: at most ``count`` messages per
``per`` (a duration such as ``"1s"``), written ``[5, "1s"]`` in TOML.

It calls :func:`check_offline` too, for ``connect_quota``, ``suspend_after``,
``suspended_retry`` and ``suspended_send``. A quota is ``[count, window]``: at most ``count``
connect attempts in any ``window`` (a duration such as ``"5m"``), written ``[300, "5m"]`` in
TOML and ``BGWS_CONNECT_QUOTA=300,5m`` in the environment.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, get_args

from bgws._config_checks import (
    check_choice,
    check_count_per,
    check_duration,
    check_int,
    type_name,
)
from bgws.errors import ConfigError
from bgws.machine import SuspendedSend

if TYPE_CHECKING:
    from bgws.config import Config

__all__ = [
    "MIN_CONNECTION_AGE",
    "Quota",
    "Rate",
    "check_longrun",
    "check_offline",
    "check_quota",
    "check_rate",
]

Rate = tuple[float, float]
"""A normalised rate: ``(count, per)``, ``count`` a whole number of messages, ``per`` seconds."""

MIN_CONNECTION_AGE: Final = 0.1
"""The shortest ``max_connection_age`` (seconds): a rotation takes a handshake or two."""


def check_rate(name: str, value: object) -> Rate:
    """A rate ``[count, per]``: ``count`` >= 1 messages per ``per`` (a duration > 0).

    Raises:
        ConfigError: not a pair, a count below 1, or a duration that is not > 0.
    """
    return check_count_per(name, value, '[count, per] such as [5, "1s"]')


def check_longrun(config: Config) -> dict[str, object]:
    """Check and normalise the rotation and send-rate options of ``config``.

    The fields: ``max_connection_age`` (a duration, or ``None``: links are never rotated),
    ``send_rate`` (``[count, per]``, or ``None``: no service-wide send rate), ``send_burst``
    (how many messages may go at once after a quiet spell; default: the rate's ``count``)
    and ``lane_send_rates`` (a mapping of priority, an integer or its text in TOML, to
    ``[count, per]``).

    Args:
        config: the config being built (its raw values).

    Returns:
        The normalised values, by field name.

    Raises:
        ConfigError: a wrong value; ``field`` names the option.
    """
    max_connection_age: object = config.max_connection_age
    send_rate: object = config.send_rate
    send_burst: object = config.send_burst
    lane_send_rates: object = config.lane_send_rates
    v: dict[str, object] = {"max_connection_age": None, "send_rate": None, "send_burst": None}
    if max_connection_age is not None:
        age = check_duration("max_connection_age", max_connection_age)
        if age < MIN_CONNECTION_AGE:
            raise ConfigError(
                "max_connection_age", f"must be at least {MIN_CONNECTION_AGE:g}s, got {age:g}s"
            )
        v["max_connection_age"] = age
    if send_rate is not None:
        v["send_rate"] = check_rate("send_rate", send_rate)
    if send_burst is not None:
        if send_rate is None:
            raise ConfigError("send_burst", "needs send_rate to be set")
        v["send_burst"] = check_int("send_burst", send_burst, 1)
    if not isinstance(lane_send_rates, Mapping):
        raise ConfigError(
            "lane_send_rates",
            f"expected a table of priority to [count, per], got {type_name(lane_send_rates)}",
        )
    lanes: dict[str, Rate] = {}
    for key, rate in lane_send_rates.items():
        text = str(key).strip()
        if isinstance(key, bool) or not text.lstrip("+-").isdigit():
            raise ConfigError("lane_send_rates", f"{key!r} is not a priority (an integer)")
        lanes[str(int(text))] = check_rate("lane_send_rates", rate)
    v["lane_send_rates"] = types.MappingProxyType(lanes)
    return v


Quota = tuple[float, float]
"""A normalised connect quota: ``(count, window)``, ``count`` a whole number, ``window`` seconds."""


def check_quota(name: str, value: object) -> Quota:
    """A quota ``[count, window]``: ``count`` >= 1 connects per ``window`` (a duration > 0).

    Raises:
        ConfigError: not a pair, a count below 1, or a window that is not > 0.
    """
    return check_count_per(name, value, '[count, window] such as [300, "5m"]')


def check_offline(config: Config) -> dict[str, object]:
    """Check and normalise the connect quota and the suspended tier of ``config``.

    The fields: ``connect_quota`` (``[count, window]``, or ``None``: no quota),
    ``suspend_after`` (a duration offline after which the service is ``SUSPENDED``, or
    ``None``: never), ``suspended_retry`` (the delay between attempts while ``SUSPENDED``)
    and ``suspended_send`` (``"queue"`` or ``"fail"``).

    Args:
        config: the config being built (its raw values).

    Returns:
        The normalised values, by field name.

    Raises:
        ConfigError: a wrong value; ``field`` names the option.
    """
    connect_quota, suspend_after = config.connect_quota, config.suspend_after
    v: dict[str, object] = {"connect_quota": None, "suspend_after": None}
    if connect_quota is not None:
        v["connect_quota"] = check_quota("connect_quota", connect_quota)
    if suspend_after is not None:
        v["suspend_after"] = check_duration("suspend_after", suspend_after)
    v["suspended_retry"] = check_duration("suspended_retry", config.suspended_retry)
    v["suspended_send"] = check_choice(
        "suspended_send", config.suspended_send, get_args(SuspendedSend)
    )
    return v
