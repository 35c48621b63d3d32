"""Fixed cost per trial: import, build and first round, paid naively per trial against inside a sweep with reuse.

Trials that share structure (the default digits trial with two rounds; only learning rates differ), three ways:

- ``naive``: each trial is its own ``fl-sweep`` process (Python start, TF/TFF import, worker start, MLflow,
  build, first round, evaluation), one after another on one MLflow store.
- ``sweep-rebuild``: one ``fl-sweep --multirun sweep=shared_structure`` process, rebuilding the TFF process every
  trial (``reuse_built_process=false``).
- ``sweep-reuse``: the same sweep as shipped: the built process is reused and only hyperparameters change.

Per trial it reports the wall time (naive: the process; sweeps: the interval between consecutive trials' MLflow
run starts, so sweep start-up is not counted; also the sweep's wall time / trials, start-up included) and its
fixed cost: that time minus the trial's rounds, each counted at the steady round time (MLflow: time between the
round-1 and round-2 metrics, training and evaluation). Median and spread over trials. Results:
``results/trial_fixed_cost.json``; the fixed cost of a reused trial is printed last.

    uv run python benchmarks/trial_fixed_cost.py [--naive 3] [--trials 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")
RESULTS = Path(__file__).resolve().parent / "results" / "trial_fixed_cost.json"
ROUNDS = 2
TRIAL = [f"training.rounds={ROUNDS}"]
TARGET_S = 1.0


def run(args: list[str], cwd: str) -> float:
    """Wall seconds of one ``fl-sweep`` command; exits with its stderr if it fails."""
    started = time.perf_counter()
    result = subprocess.run([FL_SWEEP, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"fl-sweep {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def trial_times(store: Path) -> list[dict[str, float]]:
    """Per finished trial run in ``store``, by start time: start (s) and its steady round time (s)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("fl-sweeps")
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=1000)
        if "optuna.trial_number" in r.data.tags or "trial_state" in r.data.tags
    ]
    rows = []
    for r in sorted(runs, key=lambda r: r.info.start_time):
        stamps = {m.step: m.timestamp for m in client.get_metric_history(r.info.run_id, "train/loss")}
        if len(stamps) < ROUNDS:
            continue
        rows.append({"start_s": r.info.start_time / 1000, "round_s": (stamps[2] - stamps[1]) / 1000})
    return rows


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def sweep(extra: list[str], trials: int) -> dict[str, Any]:
    """One sweep in a fresh directory: wall time, per-trial intervals and their non-training part."""
    with tempfile.TemporaryDirectory(prefix="fl-fixed-cost-") as tmp:
        wall = run(["--multirun", "sweep=shared_structure", f"hydra.sweeper.n_trials={trials}", *TRIAL, *extra], tmp)
        rows = trial_times(Path(tmp) / "mlflow.db")
    intervals = [b["start_s"] - a["start_s"] for a, b in zip(rows, rows[1:], strict=False)]
    fixed = [iv - ROUNDS * a["round_s"] for iv, a in zip(intervals, rows, strict=False)]
    return {
        "wall_s": wall,
        "trials": len(rows),
        "amortized_s": wall / len(rows),
        "interval_s": spread(intervals),
        "round_s": spread([r["round_s"] for r in rows]),
        "fixed_s": spread(fixed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive", type=int, default=3, help="naive single-trial processes")
    parser.add_argument("--trials", type=int, default=12, help="trials per sweep")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fl-fixed-cost-naive-") as tmp:
        naive_walls = []
        for i in range(args.naive):
            naive_walls.append(run([*TRIAL, f"client_optimizer.lr={0.05 + 0.01 * i}"], tmp))
            print(f"naive trial {i + 1}/{args.naive}: {naive_walls[-1]:.1f} s", flush=True)
        naive_rows = trial_times(Path(tmp) / "mlflow.db")
    naive_round = [r["round_s"] for r in naive_rows]
    naive = {
        "process_s": spread(naive_walls),
        "round_s": spread(naive_round),
        "fixed_s": spread([w - ROUNDS * r for w, r in zip(naive_walls, naive_round, strict=True)]),
    }
    print(f"naive: {naive['process_s']['median']:.1f} s per trial", flush=True)
    rebuild = sweep(["reuse_built_process=false"], args.trials)
    print(f"sweep-rebuild: {rebuild['wall_s']:.1f} s for {rebuild['trials']} trials", flush=True)
    reuse = sweep([], args.trials)
    print(f"sweep-reuse: {reuse['wall_s']:.1f} s for {reuse['trials']} trials", flush=True)

    result = {
        "setting": f"default digits trial, training.rounds={ROUNDS}; sweeps vary only the learning rates",
        "naive": naive,
        "sweep-rebuild": rebuild,
        "sweep-reuse": reuse,
        "target_fixed_s": TARGET_S,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"naive: {naive['process_s']['median']:.2f} s/trial (fixed {naive['fixed_s']['median']:.2f} s, "
        f"round {naive['round_s']['median']:.2f} s)"
    )
    for name, s in (("sweep-rebuild", rebuild), ("sweep-reuse", reuse)):
        print(
            f"{name}: {s['amortized_s']:.2f} s/trial amortized with start-up; between trials "
            f"{s['interval_s']['median']:.2f} s (min {s['interval_s']['min']:.2f}, max {s['interval_s']['max']:.2f}), "
            f"of which fixed {s['fixed_s']['median']:.2f} s, round {s['round_s']['median']:.2f} s"
        )
    print(
        f"fixed cost per trial, naive {naive['fixed_s']['median']:.2f} s -> sweep with reuse "
        f"{reuse['fixed_s']['median']:.2f} s (target <= {TARGET_S:.1f} s): "
        f"{naive['fixed_s']['median'] / reuse['fixed_s']['median']:.1f}x less"
    )


if __name__ == "__main__":
    main()
