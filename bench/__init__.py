"""The bgws benchmark suite: ``python -m bench``. See ``docs/performance.md``."""
