"""Screenshots of MLflow's UI after a real small sweep, for the README and docs/results.md (not in the tests).

Runs a small sweep on the embedded digits into a temporary folder, starts ``mlflow ui`` on 127.0.0.1 against its
store, takes two screenshots with headless Chromium (Debian's package: ``apt-get install chromium``) and writes
them under ``docs/``: ``mlflow_runs.png`` (the experiment's runs table) and ``mlflow_accuracy_by_kbit.png`` (MLflow's
chart of ``eval/accuracy_by_kbit``: accuracy against cumulative kbit for the sweep's trials). Every process it
starts is stopped before it returns, however it ends::

    uv run python docs/screenshots.py [--trials 6] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

DOCS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
METRIC = "eval/accuracy_by_kbit"
WINDOW = "1500,950"


def run_sweep(folder: Path, trials: int) -> None:
    """A small real sweep into ``folder``'s MLflow and Optuna stores: the default model, data and rounds (trials
    reach the accuracies a researcher sees in the default sweep, about 0.9-0.97), every tensor compressed."""
    args = [
        str(BIN / "fl-sweep"),
        "--multirun",
        # Thresholds 0: every tensor is compressed, so the trials differ in bits.
        "hydra.sweeper.params={client_optimizer.lr: 'tag(log, interval(0.05, 0.5))', "
        "aggregate_encoder: 'choice(none, uniform, hadamard)', aggregate_encoder.bits: 'choice(1, 2, 4, 8)', "
        "aggregate_encoder.threshold: 'choice(0)', broadcast_encoder: 'choice(none, uniform)', "
        "broadcast_encoder.bits: 'choice(4, 8)', broadcast_encoder.threshold: 'choice(0)'}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.study_name=screenshots",
        "hydra/sweeper/pruner=none",
    ]
    subprocess.run(args, cwd=folder, check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_ui(store: str, port: int) -> Iterator[str]:
    """``mlflow ui`` on 127.0.0.1:``port`` in its own process group, stopped (the whole group) on exit."""
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow ui did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def screenshot(browser: str, url: str, path: Path, profile: Path) -> None:
    """One headless Chromium screenshot of ``url`` (JavaScript given time to draw) into ``path``."""
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW}",
        "--virtual-time-budget=20000",
        f"--screenshot={path}",
        url,
    ]
    browser_process = subprocess.Popen(
        args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if browser_process.wait(timeout=180) != 0:
            raise RuntimeError(f"chromium failed on {url}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # its helper processes too (the same process group)
            os.killpg(browser_process.pid, signal.SIGKILL)
        browser_process.wait()


def metric_page(url: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's metric page of ``METRIC`` for ``run_ids`` (x axis: the metric's step, here cumulative kbit)."""
    query = {
        "runs": json.dumps(run_ids),
        "metric": quote(json.dumps(METRIC)),
        "experiments": json.dumps([experiment_id]),
        "plot_metric_keys": quote(json.dumps([METRIC])),
        "plot_layout": "{}",
        "x_axis": "step",
        "y_axis_scale": "linear",
        "line_smoothness": "1",
        "show_point": "true",
        "deselected_curves": "[]",
        "last_linear_y_axis_range": "[]",
    }
    return f"{url}/#/metric/{quote(METRIC, safe='')}?" + "&".join(f"{k}={v}" for k, v in query.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6, help="trials of the sweep (default 6)")
    parser.add_argument("--keep", type=Path, help="run the sweep in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("screenshots: no chromium on PATH (Debian: apt-get install chromium)")
    from fl_sweeps.mlflow_store import quiet_client

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch) / "sweep"
        folder.mkdir(parents=True, exist_ok=True)
        store = f"sqlite:///{folder / 'mlflow.db'}"
        if not (folder / "mlflow.db").exists():
            run_sweep(folder, args.trials)
        client = quiet_client(store)  # without the store's schema-check chatter
        experiment_id = client.get_experiment_by_name("fl-sweeps").experiment_id
        runs = client.search_runs([experiment_id], "tags.trial_state = 'complete'")
        with mlflow_ui(store, free_port()) as url:
            profile = Path(scratch) / "chromium"
            table = f"{url}/#/experiments/{experiment_id}/runs?" + "&".join(
                f"{key}={quote(value)}"
                for key, value in {
                    "searchFilter": "tags.trial_state = 'complete'",  # the trials, not collapsed under the sweep
                    "orderByKey": "metrics.`final/eval_accuracy`",
                    "orderByAsc": "false",
                }.items()
            )
            screenshot(browser, table, DOCS / "mlflow_runs.png", profile)
            page = metric_page(url, experiment_id, [run.info.run_id for run in runs])
            screenshot(browser, page, DOCS / "mlflow_accuracy_by_kbit.png", profile)
    print(f"screenshots: wrote {DOCS / 'mlflow_runs.png'} and {DOCS / 'mlflow_accuracy_by_kbit.png'}")


if __name__ == "__main__":
    main()
