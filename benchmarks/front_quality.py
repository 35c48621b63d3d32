"""Issue 20: front quality per CPU-hour, fl-sweeps' default sweep against a peer written without it.

For each sweep seed, runs (a) the peer, ``benchmarks/peer_sweep.py`` (stock hydra-optuna-sweeper, NSGA-II,
``build_weighted_fed_avg`` built for every trial, no pruning, no reuse) in its own venv, and (b) ``fl-sweep
--multirun`` with its defaults, on the same search space (``conf/sweep/default.yaml``'s params, mapped to the peer's
keys), the same training settings and the same trial budget. While each runs, the CPU time of its whole process tree
(TFF's worker included) is sampled; at each trial's end the hypervolume of the front of the trials finished so far
is computed against one reference point: accuracy 0.1 (chance on 10 classes) and twice the total bits of an
uncompressed trial, bits on a log10 axis (``analysis.pareto.hypervolume``). Writes ``hypervolume.csv`` (one row per
finished trial), ``trials.csv`` (every trial's point, parameters and state; a pruned trial's accuracy at its last
round), ``summary.json`` (final hypervolumes, the time fl-sweeps took to reach the peer's final
hypervolume, the wall and CPU time ratios) and ``hypervolume.png`` (hypervolume against wall and CPU time)::

    uv run python benchmarks/front_quality.py --peer-python /tmp/peer-venv/bin/python --seeds 0 1 2
    uv run python benchmarks/front_quality.py --peer-python /tmp/peer-venv/bin/python --tiny --seeds 0   # smoke

Creating the peer's venv: see ``benchmarks/peer_sweep.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from omegaconf import OmegaConf

from analysis.pareto import hypervolume
from fl_sweeps.sweep.pareto_pruner import PLANNED_BITS_ATTR

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "benchmarks" / "peer_sweep.py"
FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")
PEER_KEYS = {  # fl-sweeps key -> the peer's
    "client_optimizer.lr": "client_lr",
    "server_optimizer.lr": "server_lr",
    "aggregate_encoder": "aggregate",
    "aggregate_encoder.bits": "aggregate_bits",
    "aggregate_encoder.threshold": "aggregate_threshold",
    "broadcast_encoder": "broadcast",
    "broadcast_encoder.bits": "broadcast_bits",
    "broadcast_encoder.threshold": "broadcast_threshold",
}
# debug=tiny's settings, for the smoke run.
TINY = {
    "rounds": 2,
    "clients": 6,
    "clients_per_round": 3,
    "local_epochs": 1,
    "batch_size": 32,
    "filters": [4, 8],
    "dense_units": 16,
}
ACCURACY_REFERENCE = 0.1


def settings(tiny: bool) -> dict:
    """The training settings both sweeps use: fl-sweeps' composed defaults (or debug=tiny's)."""
    if tiny:
        return dict(TINY)
    config = OmegaConf.load(ROOT / "conf" / "config.yaml")
    model = OmegaConf.load(ROOT / "conf" / "model" / "cnn.yaml")
    data = OmegaConf.load(ROOT / "conf" / "data" / "digits.yaml")
    t = config.training
    return {
        "rounds": t.rounds,
        "clients": data.num_clients,
        "clients_per_round": t.clients_per_round,
        "local_epochs": t.local_epochs,
        "batch_size": t.batch_size,
        "filters": list(model.filters),
        "dense_units": model.dense_units,
    }


def uncompressed_bits(s: dict) -> float:
    """Total bits of an uncompressed trial of the digits CNN (both directions, float32, plus the client weight)."""
    params, channels, size = 0, 1, 8
    for n in s["filters"]:
        params += 25 * channels * n + n
        channels, size = n, (size + 1) // 2
    flat = size * size * channels
    params += flat * s["dense_units"] + s["dense_units"] + s["dense_units"] * 10 + 10
    return float((2 * 32 * params + 32) * s["clients_per_round"] * s["rounds"])


class CpuMeter:
    """Samples the CPU seconds of a process and all its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.root, self.interval, self.samples = psutil.Process(pid), interval, [(time.time(), 0.0)]
        self._seen: dict[int, float] = {}
        self.descendants: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            self.descendants.update(process.pid for process in processes[1:])
            for process in processes:
                try:
                    times = process.cpu_times()
                    self._seen[process.pid] = times.user + times.system
                except psutil.NoSuchProcess:
                    pass  # its last sample stays counted
            self.samples.append((time.time(), sum(self._seen.values())))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_at(self, moment: float) -> float:
        """CPU seconds used by ``moment`` (the last sample before it)."""
        return max([cpu for when, cpu in self.samples if when <= moment] or [0.0])


def run(args: list[str], cwd: Path) -> tuple[float, CpuMeter]:
    """Run a sweep; return its start time and its CPU samples."""
    start = time.time()
    with open(cwd / "out.log", "w") as out:
        process = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        meter = CpuMeter(process.pid)
        code = process.wait()
    meter.stop()
    for pid in meter.descendants:  # a peer killed before its atexit handler ran leaves TFF's worker_binary: stop it
        try:
            psutil.Process(pid).terminate()
        except psutil.NoSuchProcess:
            pass
    if code != 0:
        raise RuntimeError(f"{args[:3]} failed ({code}); see {cwd / 'out.log'}")
    return start, meter


def peer_trials(seed: int, n_trials: int, s: dict, space: dict, peer_python: str, work: Path) -> pd.DataFrame:
    results = work / "peer.jsonl"
    args = [
        peer_python,
        str(PEER),
        "--multirun",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.direction=[maximize,minimize]",
        f"hydra.sweeper.sampler.seed={seed}",
        f"seed={seed}",
        f"results={results}",
        *(f"{key}={json.dumps(value) if isinstance(value, list) else value}" for key, value in s.items()),
        *(f"{PEER_KEYS[key]}={value}" for key, value in space.items()),
    ]
    start, meter = run(args, work)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    return _timed(
        pd.DataFrame(
            {
                "eval_accuracy": [r["accuracy"] for r in rows],
                "total_bits": [r["bits"] for r in rows],
                "end": [r["end"] for r in rows],
                "state": "COMPLETE",
                "params": [" ".join(f"{k}={r[k]}" for k in PEER_KEYS.values() if k in r) for r in rows],
            }
        ),
        start,
        meter,
    )


def fl_sweeps_trials(seed: int, n_trials: int, tiny: bool, work: Path) -> pd.DataFrame:
    import optuna

    args = [
        FL_SWEEP,
        "--multirun",
        f"seed={seed}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage=sqlite:///{work / 'optuna.db'}",
        f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        *(["debug=tiny"] if tiny else []),
    ]
    start, meter = run(args, work)
    study = optuna.load_study(study_name="digits-default", storage=f"sqlite:///{work / 'optuna.db'}")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    return _timed(
        pd.DataFrame(
            {  # a pruned trial: its accuracy at the round it stopped, its planned bits (not on the front)
                "eval_accuracy": [t.values[0] if t.values else t.intermediate_values.get(t.last_step) for t in done],
                "total_bits": [t.values[1] if t.values else t.user_attrs.get(PLANNED_BITS_ATTR) for t in done],
                "end": [t.datetime_complete.timestamp() for t in done],
                "state": [t.state.name for t in done],
                "params": [" ".join(f"{k}={v}" for k, v in sorted(t.params.items())) for t in done],
            }
        ),
        start,
        meter,
    )


def _timed(trials: pd.DataFrame, start: float, meter: CpuMeter) -> pd.DataFrame:
    trials = trials.sort_values("end", ignore_index=True)
    trials["wall_s"] = trials["end"] - start
    trials["cpu_s"] = [meter.cpu_at(end) for end in trials["end"]]
    return trials


def hypervolume_curve(trials: pd.DataFrame, reference: tuple[float, float]) -> pd.DataFrame:
    """The hypervolume of the completed trials so far, at the start and at each completed trial's end."""
    trials = trials[trials["state"] == "COMPLETE"].reset_index(drop=True)
    curve = trials[["wall_s", "cpu_s"]].copy()
    curve["hypervolume"] = [hypervolume(trials.iloc[: i + 1], reference) for i in range(len(trials))]
    start = pd.DataFrame({"wall_s": [0.0], "cpu_s": [0.0], "hypervolume": [0.0]})  # the sweep's start: no front
    return pd.concat([start, curve], ignore_index=True)


def time_to_reach(curve: pd.DataFrame, target: float, column: str) -> float | None:
    reached = curve[curve["hypervolume"] >= target - 1e-12]
    return float(reached[column].iloc[0]) if len(reached) else None


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    colors = {"peer": "tab:red", "fl-sweeps": "tab:blue"}
    for ax, column, label in ((axes[0], "wall_s", "wall time (s)"), (axes[1], "cpu_s", "CPU time (s)")):
        for (variant, seed), group in table.groupby(["variant", "seed"]):
            ax.step(
                group[column],
                group["hypervolume"],
                where="post",
                color=colors[variant],
                alpha=0.8,
                label=f"{variant}" if seed == table["seed"].min() else None,
            )
        ax.set_xlabel(label)
        ax.set_ylabel("hypervolume (accuracy x decades of bits)")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle("Front quality against time: fl-sweeps defaults vs a stock hydra-optuna-sweeper peer")
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="python of the venv holding hydra-optuna-sweeper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, default=None, help="default: fl-sweeps' default sweep's n_trials")
    parser.add_argument("--tiny", action="store_true", help="debug=tiny trials and 3 trials: a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "front_quality")
    args = parser.parse_args()
    sweep = OmegaConf.load(ROOT / "conf" / "sweep" / "default.yaml").hydra.sweeper
    n_trials = args.n_trials or (3 if args.tiny else sweep.n_trials)
    space = {key: value for key, value in sweep.params.items()}
    s = settings(args.tiny)
    reference = (ACCURACY_REFERENCE, 2 * uncompressed_bits(s))
    args.out.mkdir(parents=True, exist_ok=True)
    points: list[pd.DataFrame] = []
    curves, summary = (
        [],
        {
            "reference": {"accuracy": reference[0], "bits": reference[1]},
            "n_trials": n_trials,
            "settings": s,
            "seeds": {},
        },
    )
    for seed in args.seeds:
        finals = {}
        for variant in ("peer", "fl-sweeps"):
            with tempfile.TemporaryDirectory(prefix=f"front-{variant}-") as work:
                if variant == "peer":
                    trials = peer_trials(seed, n_trials, s, space, args.peer_python, Path(work))
                else:
                    trials = fl_sweeps_trials(seed, n_trials, args.tiny, Path(work))
            points.append(trials.assign(variant=variant, seed=seed))
            curve = hypervolume_curve(trials, reference).assign(variant=variant, seed=seed)
            curves.append(curve)
            finals[variant] = curve
            print(
                f"seed {seed} {variant}: final hypervolume {curve['hypervolume'].iloc[-1]:.4f} after "
                f"{curve['wall_s'].iloc[-1]:.0f} s wall, {curve['cpu_s'].iloc[-1]:.0f} s CPU",
                flush=True,
            )
        peer, ours = finals["peer"], finals["fl-sweeps"]
        target = float(peer["hypervolume"].iloc[-1])
        summary["seeds"][seed] = {
            "peer_final_hypervolume": target,
            "fl_sweeps_final_hypervolume": float(ours["hypervolume"].iloc[-1]),
            "peer_wall_s": float(peer["wall_s"].iloc[-1]),
            "peer_cpu_s": float(peer["cpu_s"].iloc[-1]),
            "fl_sweeps_wall_s": float(ours["wall_s"].iloc[-1]),
            "fl_sweeps_cpu_s": float(ours["cpu_s"].iloc[-1]),
            "fl_sweeps_wall_s_to_peer_final": time_to_reach(ours, target, "wall_s"),
            "fl_sweeps_cpu_s_to_peer_final": time_to_reach(ours, target, "cpu_s"),
            "wall_ratio_peer_over_fl_sweeps": float(peer["wall_s"].iloc[-1] / ours["wall_s"].iloc[-1]),
        }
    table = pd.concat(curves, ignore_index=True)
    table.to_csv(args.out / "hypervolume.csv", index=False)
    pd.concat(points, ignore_index=True).to_csv(args.out / "trials.csv", index=False)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(table, args.out / "hypervolume.png")
    print(json.dumps(summary["seeds"], indent=2))


if __name__ == "__main__":
    main()
