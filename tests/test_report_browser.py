"""The sweep's report.html opened in a real browser: headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright, which never downloads a browser of its own) draws every figure with data and logs no error, for a sweep
without repeats and one with ``hydra.sweeper.repeats=2``.

Generic on purpose: it counts whatever figures (Plotly graphs) and images the page holds, so the report can gain or
lose figures without this test changing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlflow  # noqa: F401 - imported before the in-process sweeps, see below
import pytest
from cli_inprocess import fl_sweep
from conftest import TINY_LINEAR

pytestmark = pytest.mark.slow
# MLflow sets up its loggers on import, on the sys.stderr of that moment: first imported inside ``fl_sweep`` (whose
# stderr is a buffer of the run) it would keep that buffer, and pytest's own capture of stderr fails when the
# session ends ("lost sys.stderr"). Imported here, with the module, it writes to the session's stderr.

CHROMIUM = Path("/usr/bin/chromium")
# A space with an uncompressed option (so the sweep has its reference trials) and threshold 0 (so the linear
# model's tensors are compressed and the trials differ in bits).
SPACE = (
    "hydra.sweeper.params={aggregate_encoder: 'choice(none, uniform)', aggregate_encoder.bits: 'choice(2, 8)', "
    "aggregate_encoder.threshold: 'choice(0)', client_optimizer.lr: 'tag(log, interval(0.05, 0.5))'}"
)
SWEEPS = {"no repeats": [], "repeats": ["hydra.sweeper.repeats=2"]}

# Per figure on the page: whether Plotly drew it, its traces' finite data points, and the marks drawn in its SVG
# (every Plotly trace is drawn under a ``g.trace``: lines, markers and bars as paths, heatmaps as images).
FIGURES_JS = """() => Array.from(document.querySelectorAll('.plotly-graph-div, .js-plotly-plot')).map((graph, i) => {
    const finiteValue = (v) => v !== null && v !== '' && Number.isFinite(Number(v));
    const finite = (values) => (values ? Array.from(values).filter(finiteValue).length : 0);
    const traces = (graph._fullData || []).filter((trace) => trace.visible === true).map((trace) => ({
        name: String(trace.name ?? ''),
        points: trace.y !== undefined || trace.x !== undefined
            ? Math.min(...[trace.x, trace.y].filter((values) => values !== undefined).map(finite))
            : Math.max(finite(trace.z), finite(trace.values)),
    }));
    const marks = Array.from(graph.querySelectorAll('g.trace path, g.trace image'))
        .filter((mark) => mark.tagName === 'image' || (mark.getAttribute('d') || '').length > 0).length;
    const title = graph.layout && graph.layout.title;
    return {
        index: i,
        title: String((title && (title.text ?? title)) || graph.id),
        plotted: graph.classList.contains('js-plotly-plot'),
        traces: traces,
        marks: marks,
    };
})"""
IMAGES_JS = """() => Array.from(document.images).map((image) => ({
    src: (image.getAttribute('src') || '').slice(0, 80), loaded: image.complete && image.naturalWidth > 0,
}))"""


@dataclass(frozen=True)
class PageLook:
    """What the browser saw: each figure and image, and every error the page logged or raised."""

    figures: list[dict]
    images: list[dict]
    errors: list[str]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium, or a skip that says how to get it (before any sweep runs)."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install chromium; .ci/run does)")
    return CHROMIUM


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny sweeps into one pair of stores, one with repeats: the report.html each sweep wrote at its end."""
    root = tmp_path_factory.mktemp("report_browser")
    written = {}
    for name, overrides in SWEEPS.items():
        study = name.replace(" ", "-")
        result = fl_sweep(
            root,
            "--multirun",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"hydra.sweeper.storage=sqlite:///{root / 'optuna.db'}",
            f"hydra.sweeper.study_name={study}",
            "hydra.sweeper.n_trials=3",
            "hydra/sweeper/pruner=none",
            SPACE,
            *TINY_LINEAR,
            *overrides,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        written[name] = root / "multirun" / study / "report" / "report.html"
    return written


def look_at(report: Path, chromium: Path) -> PageLook:
    """Open ``report`` in headless ``chromium``, wait until the page has loaded, and read what it drew."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            page.on("requestfailed", lambda request: errors.append(f"failed to load {request.url[:120]}"))
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_load_state("networkidle")
            return PageLook(figures=page.evaluate(FIGURES_JS), images=page.evaluate(IMAGES_JS), errors=errors)
        finally:
            browser.close()


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_figure_of_the_report_is_drawn_with_data_and_the_page_logs_no_error(chromium, reports, sweep):
    report = reports[sweep]
    assert report.is_file(), f"the sweep wrote no {report}"
    look = look_at(report, chromium)
    assert look.errors == []
    assert look.figures, "the report holds no figure"
    for figure in look.figures:
        where = f"figure {figure['index']} ({figure['title']})"
        assert figure["plotted"], f"{where}: Plotly did not draw it"
        assert any(trace["points"] > 0 for trace in figure["traces"]), f"{where}: no trace has data: {figure['traces']}"
        assert figure["marks"] > 0, f"{where}: nothing drawn on its axes"
    assert all(image["loaded"] for image in look.images), look.images
