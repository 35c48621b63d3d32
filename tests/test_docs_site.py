"""The documentation site (mkdocs.yml, docs/) builds with ``--strict``, and the README stays a short front page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250


def test_site_builds_with_no_warning(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a nav entry without its page, or a page left out of the
    nav is a warning, and strict turns any warning into a failed build."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
        + ["--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's notice about its successor, not about our pages
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    # The Benchmarks page is the root's BENCHMARKS.md, with the figures it links beside it.
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert "Test suite" in benchmarks
    figures = re.findall(r'<img [^>]*src="([^"]+)"', benchmarks)
    assert figures and all((site / "benchmarks" / figure).is_file() for figure in figures)


def test_readme_is_a_front_page_of_at_most_250_lines():
    """The reference lives in docs/; the README keeps the project, its two commands, the tour and the links."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    for command in ("uv run fl-sweep --multirun", "uv run pytest", 'uv run pytest -m "not slow"'):
        assert command in readme
    for page in sorted(set((ROOT / "docs").glob("*.md")) - {ROOT / "docs" / "index.md"}):  # index: the site's home
        assert f"(docs/{page.name})" in readme, f"README links to no docs/{page.name}"
