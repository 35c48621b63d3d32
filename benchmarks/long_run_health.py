"""Long-run health: many tiny trials in one process must not leak memory, file descriptors, threads or TFF workers.

Runs ``--trials`` (50) trials one after another in this process, as one sweep worker does, on the embedded digits
data. Learning rates vary every trial (a built process is reused) and the structure varies too (encoder, bits,
model width: a new process is built, and the oldest cached one is dropped), in a seeded random order so reuse and
rebuilds mix. After each trial it records RSS, open file descriptors (/proc/self/fd), running ``worker_binary``
children and threads. Writes ``benchmarks/results/long_run_health.json`` and prints the headline last: RSS growth
after warm-up, peak RSS of one trial, fds and workers at start and end.

    nice -n 10 uv run python benchmarks/long_run_health.py [--trials 50] [--warmup 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import fl_sweeps.quiet  # noqa: F401  (before TF)

RESULTS = Path(__file__).resolve().parent / "results" / "long_run_health.json"
TINY = [
    "data.num_clients=6",
    "training.rounds=2",
    "training.clients_per_round=3",
    "training.local_epochs=1",
    "training.batch_size=32",
]
# Six structures, more than the cache of built processes holds (fl_sweeps.workbench.MAX_BUILT), so some trials
# reuse a built process and others rebuild and evict one.
SMALL_CNN = ["model.filters=[4,8]", "model.dense_units=16"]
STRUCTURES = [
    ["aggregate_encoder=none", *SMALL_CNN],
    ["aggregate_encoder=uniform", "aggregate_encoder.bits=8", "aggregate_encoder.threshold=100", *SMALL_CNN],
    ["aggregate_encoder=uniform", "aggregate_encoder.bits=4", "aggregate_encoder.threshold=100", *SMALL_CNN],
    ["aggregate_encoder=hadamard", "aggregate_encoder.bits=8", "aggregate_encoder.threshold=100", *SMALL_CNN],
    ["broadcast_encoder=uniform", "broadcast_encoder.threshold=100", "model.filters=[8,8]", "model.dense_units=16"],
    ["aggregate_encoder=none", "model=mlp", "model.hidden_units=[32]"],
]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-x", "worker_binary"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def _worker_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:  # exited meanwhile
            continue
        total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    return total / 1024


def sample() -> dict[str, float]:
    """This process's RSS and peak RSS (MiB), open fds, TFF worker children (and their RSS) and threads, now."""
    workers = _worker_pids()
    return {
        "rss_mib": _status("VmRSS") / 1024,
        "peak_rss_mib": _status("VmHWM") / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "workers": len(workers),
        "worker_rss_mib": _worker_rss_mib(workers),
        "threads": _status("Threads"),
        "python_threads": threading.active_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10, help="trials before RSS growth is measured")
    parser.add_argument("--window", type=int, default=30, help="trials after warm-up for issue 8's growth figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from fl_sweeps import tff_runtime
    from fl_sweeps.cli import config_dir
    from fl_sweeps.experiment import WORKBENCH, run_trial
    from fl_sweeps.schema import register_configs

    register_configs()
    rng = np.random.default_rng(args.seed)
    records = []
    start = sample()
    with (
        tempfile.TemporaryDirectory(prefix="fl-health-") as tmp,
        # A snapshot of conf/ as of now: the schemas are imported once; YAML edited meanwhile must not mismatch them.
        initialize_config_dir(config_dir=str(shutil.copytree(config_dir(), Path(tmp) / "conf")), version_base="1.3"),
    ):
        tracking_uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        try:
            for number in range(args.trials):
                structure = int(rng.integers(len(STRUCTURES)))
                lr = float(np.exp(rng.uniform(np.log(0.02), np.log(0.5))))
                overrides = [*TINY, *STRUCTURES[structure], f"client_optimizer.lr={lr}"]
                cfg = compose(config_name="config", overrides=[*overrides, f"mlflow.tracking_uri={tracking_uri}"])
                built_before = set(map(id, WORKBENCH.built.values()))
                started = time.perf_counter()
                result = run_trial(cfg, show_progress=False)
                record = {
                    "trial": number,
                    "structure": structure,
                    "built": any(id(t) not in built_before for t in WORKBENCH.built.values()),
                    "client_lr": lr,
                    "seconds": time.perf_counter() - started,
                    "eval_accuracy": result.eval_accuracy,
                    **sample(),
                }
                records.append(record)
                print(
                    f"trial {number:2d} structure {structure} {'built' if record['built'] else 'reuse'} "
                    f"{record['seconds']:5.1f} s  RSS {record['rss_mib']:7.1f} (worker {record['worker_rss_mib']:6.1f})"
                    f" MiB  fds {record['fds']:3d}  workers {record['workers']}  threads {record['threads']}",
                    flush=True,
                )
        finally:
            tff_runtime.stop_worker()
    end = sample()
    warm = records[args.warmup - 1]["rss_mib"]
    window_end = records[min(len(records), args.warmup + args.window) - 1]["rss_mib"]
    last = records[-1]["rss_mib"]
    summary = {
        "trials": len(records),
        "warmup_trials": args.warmup,
        "rss_after_warmup_mib": warm,
        "rss_end_mib": last,
        "rss_growth_after_warmup": last / warm - 1,
        f"rss_growth_{args.window}_trials_after_warmup": window_end / warm - 1,
        "peak_rss_first_trial_mib": records[0]["peak_rss_mib"],
        "peak_rss_mib": end["peak_rss_mib"],
        "worker_rss_after_warmup_mib": records[args.warmup - 1]["worker_rss_mib"],
        "worker_rss_end_mib": records[-1]["worker_rss_mib"],
        "fds_start": start["fds"],
        "fds_after_first_trial": records[0]["fds"],
        "fds_end": records[-1]["fds"],
        "fds_max": max(r["fds"] for r in records),
        "workers_max": max(r["workers"] for r in records),
        "workers_after_stop": end["workers"],
        "threads_after_first_trial": records[0]["threads"],
        "threads_end": records[-1]["threads"],
        "threads_max": max(r["threads"] for r in records),
        "builds": sum(r["built"] for r in records),
        "reuses": sum(not r["built"] for r in records),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"summary": summary, "trials": records}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(
        f"RSS growth after {args.warmup} warm-up trials: {summary['rss_growth_after_warmup']:+.1%} over "
        f"{len(records) - args.warmup} trials ({warm:.0f} -> {last:.0f} MiB; "
        f"{summary[f'rss_growth_{args.window}_trials_after_warmup']:+.1%} over {args.window}); peak RSS of one "
        f"trial {records[0]['peak_rss_mib']:.0f} MiB; fds {records[0]['fds']} -> {records[-1]['fds']} "
        f"(max {summary['fds_max']}); TFF workers max {summary['workers_max']}, {end['workers']} after stop; "
        f"threads {records[0]['threads']} -> {records[-1]['threads']}"
    )


if __name__ == "__main__":
    main()
