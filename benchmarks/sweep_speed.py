"""Sweep wall time: the default sweep run naively against fl-sweeps' defaults, side by side in one run.

Naive: every trial rebuilds its TFF process from nothing (``reuse_built_process=false``) and runs to the last round
(pruner off), one job at a time. Defaults: ``uv run fl-sweep --multirun`` as shipped (built processes and their
parts reused, the Pareto pruner). Also: the defaults with the accuracy-only median pruner, and with two parallel
joblib jobs. All run the same study settings (trials, seed, search space) in fresh directories, so each pays the
same start-up; the variants alternate so machine noise hits all alike. Wall and CPU seconds (the sweep with its TFF
worker) are both reported: CPU seconds suffer less from other load on the machine. Prints naive/defaults last.

    uv run python benchmarks/sweep_speed.py [--repeats 3] [--trials N] [--variants naive,defaults]
    uv run python benchmarks/sweep_speed.py --baseline ../base --variants defaults   # against another checkout
    uv run python benchmarks/sweep_speed.py --baseline ../base --variants "as before" --repeats 3
    uv run python benchmarks/sweep_speed.py --baseline ../base --variants "same trials" --repeats 3

``--baseline DIR`` adds the variant ``baseline``: the default sweep of the checkout in DIR (another commit, with its
own ``uv sync``-ed ``.venv``), run alternately with this checkout's, and prints baseline/this last (for the variant
"same trials" or "as before" if one runs, else "defaults"; "same trials" runs the same overrides in the baseline's
spelling), in wall, CPU and wall seconds per round the trials reported, since the two
sweeps' samplers need not draw the same trials.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")
RESULTS = Path(__file__).resolve().parent / "results" / "sweep_speed.json"
DEFAULT_SWEEP = Path(__file__).resolve().parents[1] / "conf" / "sweep" / "default.yaml"
# One configuration for every trial of the default sweep's search space (a plain value overrides a searched key).
SAME_TRIAL = [
    "client_optimizer.lr=0.1",
    "server_optimizer.lr=1.0",
    "aggregate_encoder=uniform",
    "aggregate_encoder.bits=4",
    "aggregate_encoder.threshold=1000",
    "broadcast_encoder=uniform",
    "broadcast_encoder.bits=8",
    "broadcast_encoder.threshold=1000",
]
VARIANTS = {
    "naive": ["reuse_built_process=false", "hydra/sweeper/pruner=none"],
    "median pruner": [
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=4",
        "hydra.sweeper.pruner.n_warmup_steps=5",
    ],
    "defaults+2jobs": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"],
    "defaults": [],
    # The default sweep set up as 9b8add6's was (no reference trials or centralized job, its pruner settings and
    # search space), to compare the structure alone against that commit with --baseline.
    "as before": [
        "hydra.sweeper.reference_trials=false",
        "hydra.sweeper.centralized_reference=false",
        "hydra.sweeper.pruner.n_warmup_steps=3",
        "hydra.sweeper.pruner.min_gap=0.02",
        "aggregate_encoder.bits=choice(1,2,4,8)",
        "broadcast_encoder.bits=choice(4,8,12)",
    ],
    # Every trial the same configuration and run to the end (no sampling, no pruning, no reference trials, no model
    # logged): the same work in both checkouts, so the comparison with --baseline measures the structure alone.
    "same trials": [
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.reference_trials=false",
        "hydra.sweeper.centralized_reference=false",
        "mlflow.log_model=false",
        *SAME_TRIAL,
    ],
}
# The baseline's spelling of the same variant (9b8add6: the pruner is ``hydra.sweeper.pruner.type``).
BASELINE_VARIANTS = {"same trials": ["hydra.sweeper.pruner.type=none", *SAME_TRIAL]}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def default_sweep_trials() -> int:
    """The trials of the default sweep as shipped (``conf/sweep/default.yaml``)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(DEFAULT_SWEEP).hydra.sweeper.n_trials)


def run_sweep(extra: list[str], trials: int, fl_sweep: str = FL_SWEEP) -> tuple[float, float, int, int]:
    """Wall seconds and CPU seconds (the sweep with its TFF worker and joblib workers) of one sweep in a fresh
    directory, how many trials it completed or pruned, and how many rounds its trials reported in all (Optuna's
    intermediate values). CPU seconds suffer less from other load on the machine. ``fl_sweep``: the command to run
    (another checkout's, for ``--baseline``)."""
    with tempfile.TemporaryDirectory(prefix="fl-sweep-bench-") as tmp:
        args = [fl_sweep, "--multirun", f"hydra.sweeper.n_trials={trials}", *extra]
        cpu_before = _children_cpu_seconds()
        started = time.perf_counter()
        result = subprocess.run(args, cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        cpu = _children_cpu_seconds() - cpu_before
        if result.returncode != 0:
            raise SystemExit(f"sweep failed ({' '.join(extra) or 'defaults'}):\n{result.stderr[-3000:]}")
        done = sum(1 for line in result.stdout.splitlines() if line.startswith("[fl-sweep]") and "trials done" in line)
        return seconds, cpu, done, _rounds_reported(Path(tmp) / "optuna.db")


def _rounds_reported(optuna_db: Path) -> int:
    """Rounds reported to Optuna by all trials of the study in ``optuna_db`` (0 if there is none)."""
    import sqlite3

    if not optuna_db.exists():
        return 0
    with sqlite3.connect(optuna_db) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM trial_intermediate_values").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="sweeps per variant (alternating)")
    parser.add_argument("--trials", type=int, help="trials per sweep (default: the default sweep's n_trials)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--baseline", type=Path, help="another checkout whose default sweep runs as 'baseline'")
    args = parser.parse_args()
    if args.trials is None:
        args.trials = default_sweep_trials()
    names = args.variants.split(",")
    commands = {name: FL_SWEEP for name in names}
    if args.baseline is not None:
        names.append("baseline")
        commands["baseline"] = str(args.baseline.resolve() / ".venv" / "bin" / "fl-sweep")
        VARIANTS["baseline"] = next((BASELINE_VARIANTS[n] for n in names if n in BASELINE_VARIANTS), [])
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names:
            seconds, cpu, done, rounds = run_sweep(VARIANTS[name], args.trials, commands[name])
            runs[name].append({"wall_s": seconds, "cpu_s": cpu, "trials_done": done, "rounds": rounds})
            print(
                f"repeat {repeat + 1}/{args.repeats} {name:>14}: {seconds:7.1f} s wall, {cpu:7.1f} s CPU "
                f"({done} trials done, {rounds} rounds)",
                flush=True,
            )
    summary = {name: _summary(r) for name, r in runs.items()}
    reference = "naive" if "naive" in summary else None
    ratios = {
        name: {k: summary[reference][k]["median"] / s[k]["median"] for k in ("wall_s", "cpu_s")}
        for name, s in summary.items()
        if reference is not None and name != reference
    }
    baseline_over = {}
    compared = next((name for name in ("same trials", "as before", "defaults") if name in summary), None)
    if "baseline" in summary and compared is not None:
        baseline_over = {
            k: summary["baseline"][k]["median"] / summary[compared][k]["median"]
            for k in ("wall_s", "cpu_s", "per_round")
        }
    results = RESULTS.with_name("sweep_speed_baseline.json") if args.baseline else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {
                "trials": args.trials,
                "variants": summary,
                "naive_over": ratios,
                "baseline_over": {"compared": compared, **baseline_over},
            },
            indent=2,
        )
        + "\n"
    )
    for name, s in summary.items():
        wall, cpu = s["wall_s"], s["cpu_s"]
        print(
            f"{name:>14}: wall median {wall['median']:.1f} s (min {wall['min']:.1f}, max {wall['max']:.1f}), "
            f"CPU median {cpu['median']:.1f} s (min {cpu['min']:.1f}, max {cpu['max']:.1f})"
        )
    for name, r in sorted(ratios.items(), key=lambda item: item[0] == "defaults"):
        print(f"sweep speed-up naive/{name}: {r['wall_s']:.2f}x wall, {r['cpu_s']:.2f}x CPU")
    if baseline_over:
        print(
            f"baseline/{compared}: {baseline_over['wall_s']:.2f}x wall, {baseline_over['cpu_s']:.2f}x CPU, "
            f"{baseline_over['per_round']:.2f}x wall per round reported (above 1: this checkout is faster)"
        )


def _summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each measure over repeated runs (``per_round``: wall seconds per round reported)."""
    for run in runs:
        run["per_round"] = run["wall_s"] / max(run["rounds"], 1)
    return {
        key: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
        for key in ("wall_s", "cpu_s", "per_round", "rounds")
        for v in [[run[key] for run in runs]]
    }


if __name__ == "__main__":
    main()
