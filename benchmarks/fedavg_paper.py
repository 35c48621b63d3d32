"""The FedAvg paper's number: rounds of FedAvg with its CNN on IID MNIST to reach 99% test accuracy.

McMahan et al. (2017), Table 2: the CNN with 100 IID clients, C=0.1 (10 per round), E=5, B=10 reaches 99% test
accuracy in 20 rounds (FedSGD: 626). This runs the same with fl-sweeps (no compression, client SGD, server
learning rate 1 = plain model averaging), evaluating on the 10,000 MNIST test images after every round, and stops
at the target. Each round is appended to ``results/fedavg_paper.jsonl`` as it finishes; the summary goes to
``results/fedavg_paper.json``. Prints the ratio of our rounds to the paper's last.

    uv run python benchmarks/fedavg_paper.py [--data ../shared/data/mnist] [--lr 0.1] [--max-rounds 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fl_run import DEFAULT_DATA, RESULTS, build, compose, rounds_to, train_logged

PAPER_ROUNDS_TO_99 = 20  # Table 2, CNN, FedAvg E=5 B=10, IID
PAPER_FEDSGD_ROUNDS_TO_99 = 626


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "mnist", help="folder of the MNIST IDX files")
    parser.add_argument("--lr", type=float, default=0.1, help="client SGD learning rate")
    parser.add_argument("--target", type=float, default=0.99, help="test accuracy to reach")
    parser.add_argument("--max-rounds", type=int, default=60, help="stop here if the target is not reached")
    parser.add_argument("--deadline-minutes", type=float, default=None, help="start no round after this long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    overrides = [
        "data=mnist",
        f"data.path={args.data.resolve()}",
        "data.partition=iid",
        "data.num_clients=100",
        "model=cnn",
        "broadcast_encoder=none",
        "aggregate_encoder=none",
        "client_optimizer=sgd",
        f"client_optimizer.lr={args.lr}",
        "server_optimizer=sgd",
        "server_optimizer.lr=1.0",
        f"training.rounds={args.max_rounds}",
        "training.clients_per_round=10",
        "training.local_epochs=5",
        "training.batch_size=10",
        "training.shuffle_buffer=3000",
        "eval.every=1",
        f"seed={args.seed}",
        "reuse_built_process=false",
    ]
    cfg = compose(overrides)
    trial = build(cfg)
    assert trial.num_parameters == 1_663_370, trial.num_parameters
    label = f"iid-E5-B10-lr{args.lr}-seed{args.seed}"
    rows_path = RESULTS / "fedavg_paper.jsonl"
    deadline = time.time() + 60 * args.deadline_minutes if args.deadline_minutes else None
    rows = train_logged(trial, cfg, out=rows_path, label=label, stop_at=args.target, deadline=deadline)
    reached = rounds_to(rows, args.target)
    summary = {
        "setting": "MNIST IID, 100 clients, 10 per round, E=5, B=10, FedAvg CNN (1,663,370 parameters)",
        "client_lr": args.lr,
        "server_lr": 1.0,
        "seed": args.seed,
        "target_accuracy": args.target,
        "rounds_run": len(rows),
        "best_accuracy": max(r["eval_accuracy"] for r in rows),
        "final_accuracy": rows[-1]["eval_accuracy"],
        "reached": reached,
        "paper_rounds": PAPER_ROUNDS_TO_99,
        "paper_fedsgd_rounds": PAPER_FEDSGD_ROUNDS_TO_99,
        "median_round_s": sorted(r["seconds"] for r in rows)[len(rows) // 2],
        "command": "uv run python benchmarks/fedavg_paper.py "
        f"--lr {args.lr} --seed {args.seed} --max-rounds {args.max_rounds}",
    }
    (RESULTS / "fedavg_paper.json").write_text(json.dumps(summary, indent=2) + "\n")
    if reached:
        print(f"rounds to {args.target:.1%}: {reached['round']} (paper: {PAPER_ROUNDS_TO_99})")
        print(f"rounds ours/paper: {reached['round'] / PAPER_ROUNDS_TO_99:.2f}x")
    else:
        print(f"not reached in {len(rows)} rounds: best {summary['best_accuracy']:.4f} (paper: {PAPER_ROUNDS_TO_99})")
        print(f"rounds ours/paper: >{len(rows) / PAPER_ROUNDS_TO_99:.2f}x")


if __name__ == "__main__":
    main()
