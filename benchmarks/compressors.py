"""Every compressor option on the FedAvg paper's pathological non-IID MNIST: bits a round, accuracy after a fixed
number of rounds, and the CPU cost of encoding (issue 18).

The CNN on MNIST split into label-sorted shards (2 per client, 100 clients, 10 a round). Each option found in
``conf/aggregate_encoder/`` runs on the aggregation with its default settings (broadcast uncompressed; ``float``
once for each of its formats, ``SETTING_ROWS``), and each option allowed on the broadcast also runs in both
directions. ``count_sketch`` (aggregation only) runs at its defaults too: one 5 x 20000 float32 sketch of the CNN's
1.66 M values above 20000, about 1.9 bits a value (``--options count_sketch`` runs it alone, beside ``none``).
Every row is trained from the same seed for
``--rounds`` rounds and reports:

- bits a round (both directions, and the aggregation alone), measured from the messages, and the ratio to ``none``;
- the test accuracy after the last round;
- CPU seconds a round (this process and its TFF worker, from ``/proc``) and the difference to ``none``: the cost of
  encoding and decoding, since everything else is the same (``none`` is run once before, unrecorded: a fresh TFF
  worker's first rounds cost more).

Rows are appended to ``results/compressors.jsonl`` as they finish; the table goes to ``results/compressors.md``.
``--smoke`` runs a tiny version on the embedded digits with every tensor encoded (seconds a row) to check the
script.

    uv run python benchmarks/compressors.py [--rounds 50] [--data-path DIR] [--options none,topk,...] [--smoke]
        [--overrides "training.local_epochs=1 training.batch_size=50"]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from fl_run import DEFAULT_DATA, RESULTS, build, compose, settings

from fl_sweeps.errors import ConfigError

MNIST = ["data=mnist", "data.partition=shards", "data.num_clients=100", "model=cnn", "training.clients_per_round=10"]
SMOKE = ["data.num_clients=6", "training.clients_per_round=3", "model.filters=[4,8]", "model.dense_units=16"]


def options(group: str = "aggregate_encoder") -> list[str]:
    """Every option of ``group`` in ``conf/``."""
    from fl_sweeps.cli import config_dir

    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


# Options with more rows than their default settings: row name -> the option's settings in that row.
SETTING_ROWS = {
    "float": {f"float {fmt}": [f"format={fmt}"] for fmt in ("float16", "bfloat16", "float8_e4m3", "float8_e5m2")},
}


def variants(names: list[str], threshold: int | None = None) -> dict[str, list[str]]:
    """Row label → overrides: each option on the aggregation, and in both directions where allowed (``threshold``:
    the options' threshold, None for their default); an option of ``SETTING_ROWS`` once for each of its settings."""
    rows = {}
    broadcast_options = options("broadcast_encoder")
    for name in names:
        for row, keys in SETTING_ROWS.get(name, {name: []}).items():
            aggregate = [f"aggregate_encoder={name}", *(f"aggregate_encoder.{k}" for k in keys)]
            rows[f"{row} (aggregation)"] = ["broadcast_encoder=none", *aggregate]
            if name != "none" and name in broadcast_options:
                broadcast = [f"broadcast_encoder={name}", *(f"broadcast_encoder.{k}" for k in keys)]
                rows[f"{row} (both)"] = [*broadcast, *aggregate]
    if threshold is not None:
        for overrides in rows.values():
            chosen = [o.split("=")[0] for o in overrides if "." not in o.split("=")[0] and not o.endswith("=none")]
            overrides += [f"{group}.threshold={threshold}" for group in chosen]
    return rows


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its TFF worker (user + system)."""
    from fl_sweeps import tff_runtime

    total = time.process_time()
    pid = tff_runtime.worker_pid()
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def run_row(label: str, overrides: list[str]) -> dict[str, Any]:
    """Build and train one row; the CPU of the rounds only (not the build)."""
    cfg = compose(overrides)
    trial = build(cfg)
    started = cpu_seconds()
    records = list(trial.run(settings(cfg)))
    cpu = cpu_seconds() - started
    last = records[-1]
    return {
        "label": label,
        "overrides": overrides,
        "rounds": last.round,
        "bits_per_round": last.cumulative_bits / last.round,
        "aggregate_bits_per_round": sum(r.aggregate_bits for r in records) / last.round,
        "accuracy": last.eval_accuracy,
        "cpu_s_per_round": cpu / last.round,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table, ratios against ``none (aggregation)``."""
    base = next(r for r in rows if r["label"] == "none (aggregation)")
    lines = [
        "| option | bits a round | ratio to none | aggregation bits a round | accuracy | CPU s a round "
        "| CPU s over none |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['bits_per_round'] / 1e6:.2f} M | {base['bits_per_round'] / r['bits_per_round']:.1f}x "
            f"| {r['aggregate_bits_per_round'] / 1e6:.3f} M | {r['accuracy']:.4f} | {r['cpu_s_per_round']:.2f} "
            f"| {r['cpu_s_per_round'] - base['cpu_s_per_round']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--data-path", type=Path, default=DEFAULT_DATA / "mnist")
    parser.add_argument("--options", help="comma-separated subset of the options (none is always run)")
    parser.add_argument("--threshold", type=int, help="the options' threshold (default: each option's, 20000)")
    parser.add_argument("--smoke", action="store_true", help="tiny run on the embedded digits, every tensor encoded")
    parser.add_argument("--out", type=Path, default=RESULTS / "compressors.jsonl")
    parser.add_argument("--overrides", default="", help="more overrides for every row (space-separated)")
    args = parser.parse_args()

    names = args.options.split(",") if args.options else options()
    names = ["none", *(n for n in names if n != "none")]
    base = SMOKE if args.smoke else [*MNIST, f"data.path={args.data_path}"]
    base = [*base, f"training.rounds={args.rounds}", "eval.every=1000", *args.overrides.split()]  # eval at the end
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    threshold = 0 if args.smoke and args.threshold is None else args.threshold
    rows_to_run = variants(names, threshold)
    run_row("warm-up", [*base, *rows_to_run["none (aggregation)"]])  # the TFF worker's first rounds cost more CPU
    for label, overrides in rows_to_run.items():
        try:
            row = run_row(label, [*base, *overrides])
        except ConfigError as error:  # e.g. a sparsifier on the broadcast of weights: not a valid row
            print(f"{label}: skipped: {error}", flush=True)
            continue
        rows.append(row)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{label}: {row['bits_per_round'] / 1e6:.2f} Mbit a round, accuracy {row['accuracy']:.4f}, "
            f"{row['cpu_s_per_round']:.2f} CPU s a round",
            flush=True,
        )
    markdown = args.out.with_suffix(".md")
    markdown.write_text(table(rows))
    print(table(rows))
    from fl_sweeps import experiment, tff_runtime

    experiment.release_built()  # TF functions freed before the interpreter's teardown (noise at exit otherwise)
    tff_runtime.stop_worker()


if __name__ == "__main__":
    main()
