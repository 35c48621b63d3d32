"""MkDocs hook: the site's Benchmarks page is the repository's own ``BENCHMARKS.md``, with the figures it shows.

``BENCHMARKS.md`` stays at the root, where the benchmark scripts and their readers expect it; the site reads it from
there instead of keeping a copy. Its figures are linked relative to the root (``benchmarks/results/...``), so each
linked file joins the site at that same path and the links resolve as they do on GitHub. A link to a file that does
not exist is left as it is, and ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "BENCHMARKS.md"
PAGE = "benchmarks.md"
# The target of a Markdown link or image: ](path) or ](path "title"), without a scheme or an anchor.
LINK_TARGET = re.compile(r"\]\((?![a-z]+:|#)([^)\s#]+)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add ``BENCHMARKS.md`` as ``benchmarks.md`` and every root-relative file it links to."""
    files.append(File.generated(config, PAGE, abs_src_path=str(SOURCE)))
    for target in sorted(set(LINK_TARGET.findall(SOURCE.read_text(encoding="utf-8")))):
        path = ROOT / target
        if path.is_file() and files.get_file_from_path(target) is None:
            files.append(File.generated(config, target, abs_src_path=str(path)))
    return files
