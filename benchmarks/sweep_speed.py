"""Sweep wall time: the default sweep run naively against fl-sweeps' defaults, side by side in one run.

Naive: every trial rebuilds its TFF process (``reuse_built_process=false``) and runs to the last round (pruner
off), one job at a time. Defaults: ``uv run fl-sweep --multirun`` as shipped (built processes reused when the
structure repeats, successive-halving pruning); also the defaults with two parallel joblib jobs. All run the
same study settings (trials, seed, search space) in fresh directories; the runs alternate so machine noise hits
all alike. Prints the ratio naive/defaults last.

    uv run python benchmarks/sweep_speed.py [--repeats 1] [--trials 12]
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

FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")
RESULTS = Path(__file__).resolve().parent / "results" / "sweep_speed.json"
VARIANTS = {
    "naive": ["reuse_built_process=false", "hydra.sweeper.pruner.type=none"],
    "defaults": [],
    "defaults+2jobs": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"],
}


def run_sweep(extra: list[str], trials: int) -> tuple[float, int]:
    """Wall seconds of one sweep in a fresh directory, and how many trials it completed or pruned."""
    with tempfile.TemporaryDirectory(prefix="fl-sweep-bench-") as tmp:
        args = [FL_SWEEP, "--multirun", f"hydra.sweeper.n_trials={trials}", *extra]
        started = time.perf_counter()
        result = subprocess.run(args, cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"sweep failed ({' '.join(extra) or 'defaults'}):\n{result.stderr[-3000:]}")
        done = sum(1 for line in result.stdout.splitlines() if line.startswith("[fl-sweep]") and "trials done" in line)
        return seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="sweeps per variant (alternating)")
    parser.add_argument("--trials", type=int, default=12, help="trials per sweep (the default sweep has 12)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, extra in VARIANTS.items():
            seconds, batches = run_sweep(extra, args.trials)
            times[name].append(seconds)
            print(f"repeat {repeat + 1}/{args.repeats} {name:>8}: {seconds:7.1f} s ({batches} batches)", flush=True)
    summary = {
        name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "runs": t}
        for name, t in times.items()
    }
    ratio = summary["naive"]["median_s"] / summary["defaults"]["median_s"]
    parallel_ratio = summary["naive"]["median_s"] / summary["defaults+2jobs"]["median_s"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"trials": args.trials, **summary, "ratio": ratio, "parallel_ratio": parallel_ratio}, indent=2)
        + "\n"
    )
    for name, s in summary.items():
        print(f"{name:>8}: median {s['median_s']:.1f} s (min {s['min_s']:.1f}, max {s['max_s']:.1f})")
    print(f"sweep speed-up naive/(defaults, 2 parallel jobs): {parallel_ratio:.2f}x")
    print(f"sweep speed-up naive/defaults: {ratio:.2f}x")


if __name__ == "__main__":
    main()
