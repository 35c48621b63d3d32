"""Sweep wall time: the default sweep run naively against fl-sweeps' defaults, side by side in one run.

Naive: every trial rebuilds its TFF process from nothing (``reuse_built_process=false``) and runs to the last round
(pruner off), one job at a time. Defaults: ``uv run fl-sweep --multirun`` as shipped (built processes and their
parts reused, the Pareto pruner). Also: the defaults with the accuracy-only median pruner, and with two parallel
joblib jobs. All run the same study settings (trials, seed, search space) in fresh directories, so each pays the
same start-up; the variants alternate so machine noise hits all alike. Wall and CPU seconds (the sweep with its TFF
worker) are both reported: CPU seconds suffer less from other load on the machine. Prints naive/defaults last.

    uv run python benchmarks/sweep_speed.py [--repeats 3] [--trials N] [--variants naive,defaults]
    uv run python benchmarks/sweep_speed.py --baseline ../base --variants defaults   # against another checkout

``--baseline DIR`` adds the variant ``baseline``: the default sweep of the checkout in DIR (another commit, with its
own ``uv sync``-ed ``.venv``), run alternately with this checkout's, and prints this/baseline last.
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
VARIANTS = {
    "naive": ["reuse_built_process=false", "hydra/sweeper/pruner=none"],
    "median pruner": [
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=4",
        "hydra.sweeper.pruner.n_warmup_steps=5",
    ],
    "defaults+2jobs": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"],
    "defaults": [],
}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def default_sweep_trials() -> int:
    """The trials of the default sweep as shipped (``conf/sweep/default.yaml``)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(DEFAULT_SWEEP).hydra.sweeper.n_trials)


def run_sweep(extra: list[str], trials: int, fl_sweep: str = FL_SWEEP) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (the sweep with its TFF worker and joblib workers) of one sweep in a fresh
    directory, and how many trials it completed or pruned. CPU seconds suffer less from other load on the machine.
    ``fl_sweep``: the command to run (another checkout's, for ``--baseline``)."""
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
        return seconds, cpu, done


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
        VARIANTS["baseline"] = []
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names:
            seconds, cpu, done = run_sweep(VARIANTS[name], args.trials, commands[name])
            runs[name].append({"wall_s": seconds, "cpu_s": cpu, "trials_done": done})
            print(
                f"repeat {repeat + 1}/{args.repeats} {name:>14}: {seconds:7.1f} s wall, {cpu:7.1f} s CPU "
                f"({done} trials done)",
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
    if "baseline" in summary and "defaults" in summary:
        baseline_over = {
            k: summary["baseline"][k]["median"] / summary["defaults"][k]["median"] for k in ("wall_s", "cpu_s")
        }
    results = RESULTS.with_name("sweep_speed_baseline.json") if args.baseline else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {"trials": args.trials, "variants": summary, "naive_over": ratios, "baseline_over_defaults": baseline_over},
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
            f"baseline/defaults: {baseline_over['wall_s']:.2f}x wall, {baseline_over['cpu_s']:.2f}x CPU "
            "(above 1: this checkout is faster)"
        )


def _summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each measure over repeated runs."""
    return {
        key: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
        for key in ("wall_s", "cpu_s")
        for v in [[run[key] for run in runs]]
    }


if __name__ == "__main__":
    main()
