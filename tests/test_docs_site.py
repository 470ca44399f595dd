"""The docs site covers the whole API: a reference entry for every public name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bgws
import bgws.testing

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
DIRECTIVE = re.compile(r"^::: (\S+)$", re.MULTILINE)


def documented() -> set[str]:
    """Every object named by a ``:::`` directive in docs/reference."""
    names: set[str] = set()
    for page in REFERENCE.glob("*.md"):
        names.update(DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    return names


@pytest.mark.parametrize(
    ("module", "names"),
    [("bgws", bgws.__all__), ("bgws.testing", bgws.testing.__all__)],
)
def test_every_public_name_has_a_reference_entry(module: str, names: list[str]) -> None:
    """Each name of bgws.__all__ and bgws.testing.__all__ is rendered by a ::: directive."""
    missing = sorted(name for name in names if f"{module}.{name}" not in documented())
    assert missing == []


def test_reference_pages_are_in_the_nav() -> None:
    """mkdocs.yml lists every reference page (so --strict sees none omitted)."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in REFERENCE.glob("*.md"):
        assert f"reference/{page.name}" in config
