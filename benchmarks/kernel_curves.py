"""Accuracy curves with oneDNN's kernels (fl-sweeps' default since issue 17) against Eigen's (the path before it).

Run once per kernel choice; TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` when it loads, so each is its own process:

    TF_ENABLE_ONEDNN_OPTS=1 uv run python benchmarks/kernel_curves.py --label onednn
    TF_ENABLE_ONEDNN_OPTS=0 uv run python benchmarks/kernel_curves.py --label eigen

Setting: MNIST IID over 100 clients, 10 clients a round, the FedAvg CNN, B=20, E=1, client SGD 0.05, evaluation on
the 10,000 test images every 5 rounds; seeds 0, 1, 2. Rows go to ``results/kernel_curves.jsonl``; a kernel choice
changes nothing in distribution when its curves lie within the seed-to-seed spread of the other's.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from fl_run import DEFAULT_DATA, RESULTS, build, compose, train_logged
from round_overhead import mnist_iid_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of the kernel choice, written on every row")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "mnist", help="folder of the MNIST IDX files")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "kernel_curves.jsonl")
    args = parser.parse_args()
    base = [*mnist_iid_overrides(args.data, args.rounds), "eval.every=5"]
    data = None
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = compose([*base, f"seed={seed}"])
        trial = build(cfg, data)
        data = trial.data
        label = f"{args.label} seed={seed} TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}"
        rows = train_logged(trial, cfg, out=args.out, label=label)
        final = [r["eval_accuracy"] for r in rows if r["eval_accuracy"] is not None]
        print(json.dumps({"label": label, "eval_accuracy": final}), flush=True)


if __name__ == "__main__":
    main()
