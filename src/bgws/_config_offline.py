"""Checks of the options for long outages: the connect quota and the suspended tier.

:class:`~bgws.config.Config` calls :func:`check_offline` once, with the raw values of
``connect_quota``, ``suspend_after``, ``suspended_retry`` and ``suspended_send``, and stores
the normalised values it returns. A quota is ``[count, window]``: at most ``count`` connect
attempts in any ``window`` (a duration such as ``"5m"``), written ``[300, "5m"]`` in TOML and
``BGWS_CONNECT_QUOTA=300,5m`` in the environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from bgws._config_checks import check_choice, check_duration, check_int, type_name
from bgws.errors import ConfigError
from bgws.machine import SuspendedSend

if TYPE_CHECKING:
    from bgws.config import Config

__all__ = ["Quota", "check_offline", "check_quota"]

Quota = tuple[float, float]
"""A normalised connect quota: ``(count, window)``, ``count`` a whole number, ``window`` seconds."""


def check_quota(name: str, value: object) -> Quota:
    """A quota ``[count, window]``: ``count`` >= 1 connects per ``window`` (a duration > 0).

    Args:
        name: the option, named in the error.
        value: a two-item list or tuple; the count may be an integer or its text.

    Raises:
        ConfigError: not a pair, a count below 1, or a window that is not > 0.
    """
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(
            name, f'expected [count, window] such as [300, "5m"], got {type_name(value)} {value!r}'
        )
    count, window = value
    if isinstance(count, str) and count.strip().lstrip("+").isdigit():
        count = int(count)
    return (check_int(name, count, 1), check_duration(name, window))


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
