"""Run the benchmark suite: ``python -m bench`` (or ``make bench``); ``--help`` for the flags.

bgws and raw picows are always measured. The peers (aiohttp, websockets, websocket-client),
uvloop and matplotlib (for the chart) are bench-only and optional: install them with
``pip install -r bench/requirements.txt`` (``.venv/bin/pip`` in a checkout); a missing one is
skipped with a note.
"""

from bench.cli import main

raise SystemExit(main())
