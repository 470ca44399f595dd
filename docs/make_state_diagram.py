"""Print the connection state diagram as Mermaid, generated from ``bgws.machine.TRANSITIONS``.

Usage::

    python docs/make_state_diagram.py            # print the block
    python docs/make_state_diagram.py --write    # replace it in docs/connection-lifecycle.md

The page keeps the block between ``<!-- state-diagram:start -->`` and
``<!-- state-diagram:end -->``; ``tests/test_docs.py`` fails when it differs from the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bgws.backoff import Backoff
from bgws.machine import TRANSITIONS, Machine

START = "<!-- state-diagram:start -->"
END = "<!-- state-diagram:end -->"
PAGE = Path(__file__).with_name("connection-lifecycle.md")


def render() -> str:
    """The Mermaid ``stateDiagram-v2`` block, fenced, one line per transition in table order."""
    initial = Machine(Backoff(1.0, 1.0), max_attempts=None, min_uptime=0.0).state
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {initial.name}"]
    for state, moves in TRANSITIONS.items():
        for event, target in moves.items():
            lines.append(f"    {state.name} --> {target.name}: {event.value}")
    lines += [f"    {state.name} --> [*]" for state, moves in TRANSITIONS.items() if not moves]
    lines.append("```")
    return "\n".join(lines)


def write(page: Path = PAGE) -> None:
    """Replace the block between the markers in ``page`` with :func:`render`'s output."""
    text = page.read_text(encoding="utf-8")
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{page}: markers {START} / {END} not found")
    page.write_text(f"{head}{START}\n{render()}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Print the diagram, or write it into the page with ``--write``."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        write()
    elif not args:
        print(render())
    else:
        print("usage: make_state_diagram.py [--write]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
