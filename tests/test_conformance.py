"""The transport conformance suite, run on both bundled transports (see docs/testing-kit.md)."""

from __future__ import annotations

import pytest

from bgws.errors import BgwsError, LinkError
from bgws.testing import RULES, check_transport
from bgws.transport import ConnectRequest, Link, Sink, Transport
from bgws.transport._picows import PicowsTransport
from bgws.transport._websockets import WebsocketsTransport

pytest.importorskip("websockets")

FACTORIES = {"picows": PicowsTransport, "websockets": WebsocketsTransport}


@pytest.mark.parametrize("name", sorted(FACTORIES))
async def test_bundled_transports_keep_every_rule(name: str) -> None:
    """picows and websockets pass every rule of check_transport."""
    report = await check_transport(FACTORIES[name], timeout=2.0)
    assert report.passed == tuple(rule.name for rule in RULES)
    assert report.skipped == ()


class _Leaky:
    """A sink wrapper that hands the engine a non-UTF-8 text message when the link closes."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.on_data = sink.on_data
        self.on_read_done = sink.on_read_done
        self.on_pong = sink.on_pong
        self.on_problem = sink.on_problem

    def on_closed(self, error: LinkError) -> None:
        self._sink.on_data(b"\xff", False, True)
        self._sink.on_closed(error)


class _LeakyTransport:
    """A broken transport: picows, but it delivers a frame after failing the link."""

    async def connect(self, request: ConnectRequest, sink: Sink) -> Link:
        return await PicowsTransport().connect(request, _Leaky(sink))


async def test_failed_rule_is_named() -> None:
    """A transport that breaks a rule fails the suite with that rule's name and promise."""
    broken: Transport = _LeakyTransport()
    with pytest.raises(AssertionError, match=r"rule 'invalid-utf8' \(a text frame .* 1007\)"):
        await check_transport(lambda: broken, rules=["invalid-utf8"], timeout=2.0)


async def test_rule_subset_and_unknown_rules() -> None:
    """rules= runs only the named rules; an unknown name is a ValueError."""
    report = await check_transport(PicowsTransport, rules=["ping"], timeout=2.0)
    assert report.passed == ("ping",)
    assert len(report.skipped) == len(RULES) - 1
    with pytest.raises(ValueError, match="no-such-rule"):
        await check_transport(PicowsTransport, rules=["no-such-rule"])


def test_rules_have_unique_names_and_promises() -> None:
    """Every rule has a unique name and a promise in words."""
    names = [rule.name for rule in RULES]
    assert len(set(names)) == len(names)
    assert all(rule.promise for rule in RULES)
    assert issubclass(LinkError, BgwsError)


def test_every_rule_is_documented() -> None:
    """docs/testing-kit.md lists every rule with its promise."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "testing-kit.md").read_text()
    for rule in RULES:
        assert f"| `{rule.name}` | {rule.promise[0].upper()}{rule.promise[1:]}. |" in text
