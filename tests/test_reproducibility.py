"""Same seed, same settings, same numbers: on fresh processes, each with its own TFF worker running its clients at once.

docs/how-it-works.md, Reproducibility: oneDNN's kernels are on by default (issue 17); TF_ENABLE_ONEDNN_OPTS=0: Eigen.
Each trial runs in its own ``fl-sweep`` process (its own worker, thread pools and scheduling); the two of a pair run
at the same time, so they compete for the cores as parallel trials do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")
METRICS = ("train/loss", "train/accuracy", "eval/loss", "eval/accuracy")
# Every client of the tiny data set trains in each round, all at once in the worker.
ALL_CLIENTS_AT_ONCE = ["training.clients_per_round=6", "aggregate_encoder.threshold=100"]


def _start(folder: Path, onednn: str, seed: int) -> subprocess.Popen:
    folder.mkdir()
    args = [
        FL_SWEEP,
        f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
        "hydra.run.dir=hydra",
        *TINY,
        *ALL_CLIENTS_AT_ONCE,
        f"seed={seed}",
    ]
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    return subprocess.Popen(args, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _numbers(folder: Path) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id])
    return {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        for key in METRICS
    }


def _run_together(folder: Path, onednn: str, seeds: list[int]) -> list[dict[str, list[tuple[int, float]]]]:
    folder.mkdir(exist_ok=True)
    folders = [folder / f"trial{i}" for i in range(len(seeds))]
    processes = [_start(folder, onednn, seed) for folder, seed in zip(folders, seeds, strict=True)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
    return [_numbers(folder) for folder in folders]


@pytest.fixture(scope="module")
def seed_7_pairs(tmp_path_factory) -> dict[str, list[dict[str, list[tuple[int, float]]]]]:
    """Per kernel choice ("1" oneDNN, "0" Eigen), the numbers of two fresh processes run at once with seed 7."""
    return {onednn: _run_together(tmp_path_factory.mktemp(f"onednn{onednn}"), onednn, [7, 7]) for onednn in "10"}


@pytest.mark.parametrize("onednn", ["1", "0"], ids=["onednn-default", "eigen"])
def test_same_seed_same_numbers_in_fresh_processes(seed_7_pairs, onednn):
    first, second = seed_7_pairs[onednn]
    assert all(len(first[key]) > 0 for key in METRICS)
    assert first == second


def test_kernel_choice_changes_only_round_off(seed_7_pairs):
    """oneDNN's and Eigen's kernels sum in another order: the same seed gives other last digits, not another run."""
    fast, eigen = seed_7_pairs["1"][0], seed_7_pairs["0"][0]
    for key in ("train/loss", "eval/loss"):
        assert [step for step, _ in fast[key]] == [step for step, _ in eigen[key]]
        assert [value for _, value in fast[key]] == pytest.approx([value for _, value in eigen[key]], rel=1e-3)
