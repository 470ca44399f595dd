"""Hooks of the docs site (``hooks:`` in mkdocs.yml), run by ``make docs``.

The changelog page (``docs/changelog.md``) is replaced by the repository's ``CHANGELOG.md``,
whose links are written relative to the repository's root (``docs/performance.md``): on the
site they are made relative to ``docs/``, so ``--strict`` checks them like any other link.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["on_page_markdown"]

ROOT = Path(__file__).resolve().parent.parent
_DOCS_LINK = re.compile(r"\]\(docs/")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """The changelog page's Markdown is ``CHANGELOG.md``; other pages are left as they are.

    Args:
        markdown: the page's Markdown.
        page: the page (its ``file.src_uri`` names it).
        config: the site's config (unused).
        files: the site's files (unused).
    """
    if page.file.src_uri != "changelog.md":
        return markdown
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return _DOCS_LINK.sub("](", text)
