"""The report as one self-contained HTML file: ``summary.md`` rendered, with interactive figures in place of its
PNGs. plotly's JavaScript is embedded once, so the file works offline, in a browser or in MLflow's artifact view."""

from __future__ import annotations

import html
from collections.abc import Sequence

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; } td { text-align: right; } code, pre { background: #f6f6f6; }
pre { padding: 0.6em; overflow-x: auto; }
"""
FIGURES_HEADING = "\n## Figures"


def report_html(summary_markdown: str, figures: Sequence[object], *, title: str) -> str:
    """An HTML page of ``summary_markdown`` with ``figures`` (plotly figures) in place of its Figures section.

    Args:
        summary_markdown: The report's Markdown; its ``## Figures`` section (PNG links) is replaced by the figures.
        figures: plotly figures, shown in order.
        title: The page title.
    """
    import markdown

    before, _, after = summary_markdown.partition(FIGURES_HEADING)
    rest = after.split("\n## ", 1)[1] if "\n## " in after else ""
    body = [markdown.markdown(before, extensions=["tables", "fenced_code"]), "<h2>Figures</h2>"]
    for number, figure in enumerate(figures):
        body.append(figure.to_html(full_html=False, include_plotlyjs=number == 0))  # the JS once, inline
    if rest:
        body.append(markdown.markdown("## " + rest, extensions=["tables", "fenced_code"]))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
