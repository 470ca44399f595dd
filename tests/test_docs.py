"""The docs stay true: the state diagram matches the table, and the code examples run."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LIFECYCLE = DOCS / "connection-lifecycle.md"
TUTORIAL = DOCS / "tutorial.md"
README = ROOT / "README.md"

# A fenced block, optionally preceded by a marker line: <!-- runnable --> or <!-- output -->.
BLOCK = re.compile(
    r"^(?:<!-- (?P<mark>runnable|output) -->\n)?```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


def blocks(path: Path) -> list[tuple[str | None, str, str]]:
    """Every fenced block of a Markdown file as ``(marker, language, body)``."""
    text = path.read_text(encoding="utf-8")
    return [(m["mark"], m["lang"], m["body"]) for m in BLOCK.finditer(text)]


def python_blocks(path: Path) -> list[str]:
    """The bodies of the ``python`` blocks of a Markdown file."""
    return [body for _, lang, body in blocks(path) if lang == "python"]


def runnable_blocks(path: Path) -> list[tuple[str, str | None]]:
    """Each block marked runnable, with the output block that follows it, if any."""
    found = blocks(path)
    runs = []
    for i, (mark, lang, body) in enumerate(found):
        if mark == "runnable":
            assert lang == "python", f"a runnable block in {path.name} is not python"
            after = found[i + 1] if i + 1 < len(found) else None
            expected = after[2] if after is not None and after[0] == "output" else None
            runs.append((body, expected))
    return runs


def load_diagram_script() -> ModuleType:
    """Import docs/make_state_diagram.py by its path."""
    spec = importlib.util.spec_from_file_location(
        "make_state_diagram", DOCS / "make_state_diagram.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_state_diagram_is_current() -> None:
    """The diagram in connection-lifecycle.md is what make_state_diagram.py prints now."""
    script = load_diagram_script()
    text = LIFECYCLE.read_text(encoding="utf-8")
    start, end = text.index(script.START), text.index(script.END)
    pasted = text[start + len(script.START) : end].strip()
    assert pasted == script.render().strip(), "run: python docs/make_state_diagram.py --write"


def test_state_diagram_covers_every_transition() -> None:
    """The generated diagram has one edge per entry of TRANSITIONS."""
    from bgws.machine import TRANSITIONS

    rendered = load_diagram_script().render()
    for state, moves in TRANSITIONS.items():
        for event, target in moves.items():
            assert f"{state.name} --> {target.name}: {event.value}" in rendered


@pytest.mark.parametrize("page", [TUTORIAL, README], ids=lambda p: p.name)
def test_python_blocks_compile(page: Path) -> None:
    """Every Python block of the tutorial and the README compiles."""
    sources = python_blocks(page)
    assert sources, f"{page.name} has no python blocks"
    for n, source in enumerate(sources, 1):
        compile(source, f"{page.name}:block{n}", "exec")


@pytest.mark.parametrize(
    "page", [DOCS / "handlers-and-plugins.md", LIFECYCLE], ids=lambda p: p.name
)
def test_python_snippets_compile(page: Path) -> None:
    """The Python snippets of the topic pages are valid syntax (top-level await allowed)."""
    for n, source in enumerate(python_blocks(page), 1):
        compile(source, f"{page.name}:block{n}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_readme_has_the_first_program() -> None:
    """The README's first program uses the factory, a handler, async with, send and wait_for."""
    program = next(s for s in python_blocks(README) if "create_chat_service" in s)
    for part in ("@service.on(", "async with service:", "await service.send(", "wait_for("):
        assert part in program


RUNNABLE = runnable_blocks(TUTORIAL)


def test_tutorial_has_runnable_blocks() -> None:
    """The tutorial marks its complete programs as runnable."""
    assert len(RUNNABLE) >= 5


@pytest.mark.parametrize(
    ("source", "expected"), RUNNABLE, ids=[f"program{n}" for n in range(1, len(RUNNABLE) + 1)]
)
def test_tutorial_block_runs(source: str, expected: str | None, tmp_path: Path) -> None:
    """A runnable tutorial program exits cleanly and prints exactly the output shown."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}  # stores go to a fresh folder
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", source],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    for sign in ("Traceback", "Exception ignored", "never retrieved", "Warning:"):
        assert sign not in result.stderr, result.stderr
    if expected is not None:
        assert result.stdout == expected


# A test named on a guarantees page: `file.py::test_name` (a parametrization may follow).
TEST_REF = re.compile(r"`(?:tests/)?((?:\w+/)*test_\w+\.py)::(test_\w+)(?:\[[^\]]*\])?`")


@pytest.mark.parametrize(
    "page", ["guarantees.md", "delivery.md", "scaling-out.md", "running-for-weeks.md"]
)
def test_guarantees_name_tests_that_exist(page: str) -> None:
    """Every test a guarantees page names is a test function in that file."""
    text = (DOCS / page).read_text(encoding="utf-8")
    refs = TEST_REF.findall(text)
    assert refs or page != "guarantees.md", "the guarantees page names no test"
    missing = []
    for file, name in refs:
        path = ROOT / "tests" / file
        if not path.exists():
            missing.append(f"{file} (no such file)")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in defined:
            missing.append(f"{file}::{name}")
    assert not missing, f"{page} names tests that do not exist: {missing}"
