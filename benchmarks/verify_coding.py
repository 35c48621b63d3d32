"""Real coded bytes of the record's pick: its entropy-coded messages coded by constriction's ANS coder, against the
bits counted for them (``compression.verify_coding``, issue 38).

Runs the third protocol's pick (``results/record_mnist_picks.json``, ``record_difference``: a 1-bit DRIVE
difference broadcast and a top-2% update with error feedback, both entropy coded) on the FedAvg paper's
pathological non-IID MNIST (E=1, B=50, 10 clients a round) with ``compression.verify_coding=true``: every round,
every client's broadcast difference and update is coded, decoded and checked. Prints each round's produced and
counted bits of the coded parts and their ratio, and the seconds of the round and of the check in Python, then runs
the same rounds without ``verify_coding`` for their seconds (and to show they train and count the same), and writes
``results/verify_coding_mnist.json``::

    uv run python benchmarks/verify_coding.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fl_run import DEFAULT_DATA, RESULTS, build, compose, settings

PICKS = RESULTS / "record_mnist_picks.json"
PICK = "record_difference"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="folder holding mnist/")
    parser.add_argument("--out", type=Path, default=RESULTS / "verify_coding_mnist.json")
    args = parser.parse_args()

    pick = json.loads(PICKS.read_text())[PICK]["overrides"]
    overrides = [
        *pick,
        "data=mnist",
        "data.partition=shards",
        f"data.path={(args.data_root / 'mnist').resolve()}",
        "model=cnn",
        f"training.rounds={args.rounds}",
        "training.clients_per_round=10",
        "training.local_epochs=1",
        "training.batch_size=50",
        "training.shuffle_buffer=600",
        f"seed={args.seed}",
        "compression.verify_coding=true",
    ]
    check_seconds = _time_the_check()
    cfg = compose(overrides)
    started = time.perf_counter()
    trial = build(cfg)
    build_seconds = time.perf_counter() - started
    rows = []
    for record in trial.run(settings(cfg)):
        ratio = record.coded_produced_bits / record.coded_counted_bits
        rows.append(
            {
                "round": record.round,
                "produced_bits": record.coded_produced_bits,
                "counted_bits": record.coded_counted_bits,
                "produced_to_counted": ratio,
                "round_bits": record.broadcast_bits + record.aggregate_bits,
                "train_loss": record.train_loss,
                "eval_accuracy": record.eval_accuracy,
                "seconds": record.seconds,
                "check_seconds": check_seconds[-1],
            }
        )
        print(
            f"round {record.round}: produced {record.coded_produced_bits:,} bits, counted "
            f"{record.coded_counted_bits:,} ({ratio:.4f}); round {rows[-1]['round_bits']:,} bits, "
            f"{record.seconds:.1f} s (check {check_seconds[-1]:.2f} s)",
            flush=True,
        )
    plain_cfg = compose([*overrides[:-1], "compression.verify_coding=false"])
    plain = [
        {
            "round": r.round,
            "round_bits": r.broadcast_bits + r.aggregate_bits,
            "train_loss": r.train_loss,
            "seconds": r.seconds,
        }
        for r in build(plain_cfg).run(settings(plain_cfg))
    ]
    for row in plain:
        print(f"without verify_coding, round {row['round']}: {row['round_bits']:,} bits, {row['seconds']:.1f} s")
    same = all(
        (v["round_bits"], v["train_loss"]) == (p["round_bits"], p["train_loss"])
        for v, p in zip(rows, plain, strict=True)
    )
    produced = sum(r["produced_bits"] for r in rows)
    counted = sum(r["counted_bits"] for r in rows)
    summary = {
        "pick": PICK,
        "overrides": overrides,
        "rounds": rows,
        "produced_bits": produced,
        "counted_bits": counted,
        "produced_to_counted": produced / counted,
        "build_seconds": build_seconds,
        "without_verify": plain,
        "same_bits_and_loss_without_verify": same,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.rounds} rounds: produced {produced:,} bits, counted {counted:,}: ratio {produced / counted:.4f}")
    print(f"bits and training losses the same without verify_coding: {same}")


def _time_the_check() -> list[float]:
    """Time each round's check in Python (``check_round``, as the round loop calls it): the list its seconds go to."""
    from fl_sweeps.trainer import rounds

    seconds: list[float] = []
    check = rounds.check_round

    def timed(metrics, round_num):
        started = time.perf_counter()
        try:
            return check(metrics, round_num)
        finally:
            seconds.append(time.perf_counter() - started)

    rounds.check_round = timed
    return seconds


if __name__ == "__main__":
    main()
