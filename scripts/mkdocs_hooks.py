"""MkDocs hook: a page's link to a repository file outside docs/ (a spec, a benchmark) must name a file that
exists, or the build fails; on the site, which holds only docs/, such a link becomes its text."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s#]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs = Path(config["docs_dir"]).resolve()
    here = (docs / page.file.src_uri).parent

    def outside(match: re.Match) -> str:
        target = match.group(2)
        if ":" in target:  # a URL
            return match.group(0)
        path = (here / target).resolve()
        if path.is_relative_to(docs):
            return match.group(0)  # MkDocs itself checks links between pages
        if not path.exists():
            raise PluginError(f"{page.file.src_uri}: the link to {target} names no file of the repository")
        return match.group(1)

    return LINK.sub(outside, markdown)
