"""Bits to target accuracy: rounds and communicated bits (both directions) until the accuracy reaches targets.

Issue 8, item 3. The FedAvg paper's CNN on MNIST with its pathological non-IID partition (label-sorted shards, 2
per client, 100 clients, 10 per round), or FEMNIST by writer, for three compression settings:

- ``a-none``: no compression;
- ``b-agg8``: 8-bit uniform aggregation of tensors above 20,000 elements, nothing on broadcast (TFF's tutorial
  setting);
- ``c-sweep``: the settings an fl-sweeps sweep found (``--c``; see ``conf/sweep/mnist_bits.yaml``).

The variants train round-robin (one round each in turn) so a run cut short by ``--deadline-minutes`` leaves all of
them at the same round. Every round is appended to ``results/bits_<dataset>.jsonl`` as it finishes; the summary
(rounds and bits to each target) goes to ``results/bits_<dataset>.json`` and the accuracy-against-bits plot to
``results/bits_<dataset>.png``. ``--variants`` runs a subset (rows of the others in the JSON lines are kept, so c
can run after the sweep that picks it); ``--summarize`` rebuilds summary and plot from the JSON lines without
training. The summary also gives the round at which the mean accuracy of the last 5 rounds reaches each target
(``to_target_mean_of_5``; accuracy on this partition swings by a point from round to round, and one lucky round
decides a first crossing). A variant stops once the mean of its last 5 rounds reaches the highest target (so both
crossings are measured). Prints the bit ratio a/c at the highest target both reached last.

    uv run python benchmarks/bits_to_accuracy.py --dataset mnist --c "broadcast_encoder=uniform ..." \
        [--a "client_optimizer.lr=0.2 ..."] [--epochs 1 --batch 50 --lr 0.1] [--max-rounds 300] \
        [--deadline-minutes 60] [--seed 1] [--stem NAME]

``--a`` adds overrides to variant a (a tuned baseline's learning rates; ``benchmarks/stateful_record.py`` passes
them).

``--stem`` writes to ``results/<stem>.*`` instead (rows already there for other variants are kept, so a new
variant c can be compared with an earlier a).

Rounds are evaluated on ``eval.split`` (validation by default since issue 38: the stopping rule never sees the test
examples); when a variant ends, its final model is evaluated once on the test examples, printed and written to
``results/<stem>_test.json`` (variant -> round, accuracy on the eval split, test accuracy), the figure to report.
Rows written before issue 38 were evaluated on test.

A run can be stopped and started again with the same command: every ``--checkpoint-every`` rounds, and when a
variant stops, each variant's run is saved to ``results/checkpoints/<stem>/<variant>.ckpt`` (a ``RunCheckpoint``:
the process state, the client sampler, the clients' residuals and held rounds), and the next start goes on from
it with the rows up to it; a variant whose rows already end its run is not run again. Seeds of the record take
hours each, longer than a session. A resumed run gives the numbers of one that never stopped
(``tests/test_run_checkpoint.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fl_run import DEFAULT_DATA, RESULTS, build, compose, ended_run, read_rows, rounds_to, settings

VARIANTS = {
    "a-none": ["broadcast_encoder=none", "aggregate_encoder=none"],
    "b-agg8": [
        "broadcast_encoder=none",
        "aggregate_encoder=uniform",
        "aggregate_encoder.bits=8",
        "aggregate_encoder.threshold=20000",
    ],
}
DATASETS = {
    "mnist": (["data=mnist", "data.partition=shards", "data.num_clients=100"], "mnist", (0.97, 0.98, 0.985)),
    "femnist": (["data=femnist"], "femnist_leaf", (0.70, 0.75, 0.80)),
}
PARTITIONS = {"mnist": "MNIST pathological non-IID (2 shards/client)", "femnist": "FEMNIST by writer"}
TARGET_RATIO = 10.0


def mean_of_last(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The rows with the eval accuracy replaced by its mean over the last ``n`` evaluated rounds (from the n-th on):
    a crossing of the target that one lucky round cannot make."""
    evaluated = [r for r in rows if r["eval_accuracy"] is not None]
    return [
        {**r, "eval_accuracy": round(sum(e["eval_accuracy"] for e in evaluated[i - n + 1 : i + 1]) / n, 6)}
        for i, r in enumerate(evaluated)
        if i >= n - 1
    ]


def summarize(rows: list[dict[str, Any]], targets: tuple[float, ...], meta: dict[str, Any]) -> dict[str, Any]:
    """Rounds and bits to each target per variant, and the a/c bit ratios."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    per_variant = {}
    for label in labels:
        mine = [r for r in rows if r["label"] == label]
        accs = [r["eval_accuracy"] for r in mine if r["eval_accuracy"] is not None]
        per_variant[label] = {
            "rounds_run": len(mine),
            "best_accuracy": max(accs) if accs else None,
            # The mean over the rounds run: a round's bits vary with coding and catch-up (round 1 of a
            # difference broadcast sends almost nothing).
            "bits_per_round": mine[-1]["cumulative_bits"] / len(mine) if mine else None,
            "cumulative_bits": mine[-1]["cumulative_bits"] if mine else 0,
            "to_target": {f"{t:g}": rounds_to(mine, t) for t in targets},
            "to_target_mean_of_5": {f"{t:g}": rounds_to(mean_of_last(mine, 5), t) for t in targets},
        }
    ratios: dict[str, dict[str, float]] = {"to_target": {}, "to_target_mean_of_5": {}}
    a, c = per_variant.get("a-none"), per_variant.get("c-sweep")
    if a and c:
        for kind, by_target in ratios.items():
            for t in targets:
                ra, rc = a[kind][f"{t:g}"], c[kind][f"{t:g}"]
                if ra and rc:
                    by_target[f"{t:g}"] = ra["cumulative_bits"] / rc["cumulative_bits"]
    return {
        **meta,
        "targets": list(targets),
        "variants": per_variant,
        "bits_ratio_a_over_c": ratios["to_target"],
        "bits_ratio_a_over_c_mean_of_5": ratios["to_target_mean_of_5"],
    }


def plot(rows: list[dict[str, Any]], targets: tuple[float, ...], path: Path, title: str) -> None:
    """Eval accuracy per variant, with the targets as lines: against cumulative bits (log axis) for the whole run,
    then for the targets' range with each variant's first round at each target marked, and against the round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_all, ax_top, ax_rounds) = plt.subplots(1, 3, figsize=(15, 4.5))
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        pts = [(r["cumulative_bits"], r["eval_accuracy"]) for r in mine if r["eval_accuracy"]]
        if not pts:
            continue
        (line,) = ax_all.plot(*zip(*pts, strict=True), marker=".", markersize=3, label=label)
        ax_top.plot(*zip(*pts, strict=True), marker=".", markersize=3, color=line.get_color(), label=label)
        by_round = [(r["round"], r["eval_accuracy"]) for r in mine if r["eval_accuracy"]]
        ax_rounds.plot(*zip(*by_round, strict=True), linewidth=1, color=line.get_color(), label=label)
        hits = [hit for hit in (rounds_to(mine, t) for t in targets) if hit]
        if hits:
            ax_top.scatter(
                [h["cumulative_bits"] for h in hits],
                [h["accuracy"] for h in hits],
                s=60,
                facecolors="none",
                edgecolors=line.get_color(),
                zorder=3,
            )
    lows = [r["eval_accuracy"] for r in rows if r["eval_accuracy"]]
    ax_all.set_ylim(max(0.0, min(lows + [min(targets)]) - 0.02) if lows else 0, 1.0)
    bottom = min(targets) - 0.015
    top = max(lows + [max(targets)]) + 0.005 if lows else 1.0
    near = [r["cumulative_bits"] for r in rows if r["eval_accuracy"] and r["eval_accuracy"] >= bottom]
    for ax in (ax_top, ax_rounds):
        ax.set_ylim(bottom, top)
    if near:
        ax_top.set_xlim(min(near) / 1.5, max(near) * 1.5)
    for ax in (ax_all, ax_top, ax_rounds):
        for t in targets:
            ax.axhline(t, color="grey", linestyle=":", linewidth=0.8)
        ax.grid(alpha=0.3)
    for ax in (ax_all, ax_top):
        ax.set_xscale("log")
        ax.set_xlabel("cumulative communicated bits (both directions)")
    ax_rounds.set_xlabel("round")
    ax_all.set_ylabel("test accuracy")
    ax_all.set_title("whole run", fontsize=10)
    ax_top.set_title("near the targets (circles: first round at each target)", fontsize=10)
    ax_rounds.set_title("near the targets, by round", fontsize=10)
    ax_rounds.legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(rows: list[dict[str, Any]], targets: tuple[float, ...], meta: dict[str, Any], stem: str) -> None:
    """Write summary JSON and plot, and print the table and the headline ratio last."""
    summary = summarize(rows, targets, meta)
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, targets, RESULTS / f"{stem}.png", meta.get("setting", stem))
    for label, v in summary["variants"].items():
        reached = ", ".join(
            f"{t}: " + (f"round {r['round']}, {r['cumulative_bits'] / 1e9:.2f} Gbit" if r else "not reached")
            for t, r in v["to_target"].items()
        )
        print(f"{label}: {v['rounds_run']} rounds, best {v['best_accuracy']}, {reached}")
    ratios = summary["bits_ratio_a_over_c"]
    if ratios:
        top = max(ratios, key=float)
        print(f"bits a/c to {float(top):.1%}: {ratios[top]:.1f}x (target >= {TARGET_RATIO:.0f}x at {targets[-1]:.1%})")
    else:
        print(f"bits a/c: no target reached by both a and c (target >= {TARGET_RATIO:.0f}x at {targets[-1]:.1%})")


def record_test_accuracy(path: Path, name: str, trial: Any, record: Any) -> None:
    """Evaluate a variant's final model once on the test examples; print it and keep it in ``path`` by variant."""
    _, test_accuracy = trial.evaluate(trial.checkpoint.state, "test")
    found = json.loads(path.read_text()) if path.exists() else {}
    found[name] = {"round": record.round, "eval_accuracy": record.eval_accuracy, "test_accuracy": test_accuracy}
    path.write_text(json.dumps(found, indent=1) + "\n")
    print(f"[{name}] ended at round {record.round}: test accuracy {test_accuracy:.4f} (evaluated once)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="folder holding mnist/ and femnist_leaf/")
    parser.add_argument("--c", default="", help="overrides of variant c (space-separated), from the sweep")
    parser.add_argument("--a", default="", help="extra overrides of variant a (space-separated), e.g. tuned lrs")
    parser.add_argument("--epochs", type=int, default=1, help="local epochs E")
    parser.add_argument("--batch", type=int, default=50, help="local batch size B")
    parser.add_argument("--lr", type=float, default=0.1, help="client SGD learning rate (server: plain averaging)")
    parser.add_argument("--max-rounds", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--deadline-minutes", type=float, default=None, help="start no round after this long")
    parser.add_argument("--variants", default="a-none,b-agg8,c-sweep", help="comma-separated subset")
    parser.add_argument("--summarize", action="store_true", help="only rebuild summary and plot from the JSON lines")
    parser.add_argument("--targets", default=None, help="comma-separated accuracies (default: the issue's)")
    parser.add_argument("--seed", type=int, default=None, help="the trials' seed (default: the config's)")
    parser.add_argument("--stem", default=None, help="results file stem (default: bits_<dataset>)")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="rounds between saved runs (0: never)")
    args = parser.parse_args()

    data_overrides, folder, targets = DATASETS[args.dataset]
    if args.targets:
        targets = tuple(sorted(float(t) for t in args.targets.split(",")))
    stem = args.stem or f"bits_{args.dataset}"
    rows_path = RESULTS / f"{stem}.jsonl"
    meta = {
        "setting": f"{PARTITIONS[args.dataset]}, 10 clients/round, FedAvg CNN, E={args.epochs}, B={args.batch}, "
        + (f"lr={args.lr}" if "_optimizer.lr=" not in args.a + args.c else "learning rates as --a/--c set them"),
        "c_overrides": args.c,
        "a_overrides": args.a,
        "command": "uv run python benchmarks/bits_to_accuracy.py "
        + f'--dataset {args.dataset} --epochs {args.epochs} --batch {args.batch} --lr {args.lr} --c "{args.c}"'
        + (f' --a "{args.a}"' if args.a else "")
        + ("" if args.seed is None else f" --seed {args.seed}")
        + ("" if args.stem is None else f" --stem {args.stem}"),
    }
    if args.summarize:
        report(read_rows(rows_path), targets, meta, stem)
        return

    from fl_sweeps.trainer.run_checkpoint import RunCheckpoint
    from fl_sweeps.workbench import Workbench

    base = [
        *data_overrides,
        f"data.path={(args.data_root / folder).resolve()}",
        "model=cnn",
        "client_optimizer=sgd",
        f"client_optimizer.lr={args.lr}",
        "server_optimizer=sgd",
        "server_optimizer.lr=1.0",
        f"training.rounds={args.max_rounds}",
        "training.clients_per_round=10",
        f"training.local_epochs={args.epochs}",
        f"training.batch_size={args.batch}",
        "training.shuffle_buffer=600",
        f"eval.every={args.eval_every}",
        "reuse_built_process=false",
        *([] if args.seed is None else [f"seed={args.seed}"]),
    ]
    variants = {**VARIANTS, "a-none": [*VARIANTS["a-none"], *args.a.split()], "c-sweep": args.c.split()}
    names = args.variants.split(",")
    overrides = {name: [*base, *variants[name]] for name in names}
    checkpoint_dir = RESULTS / "checkpoints" / stem
    checkpoints = {
        name: RunCheckpoint.load(checkpoint_dir / f"{name}.ckpt", " ".join(overrides[name])) for name in names
    }
    # Rows of other variants stay; a variant's rows stay up to its checkpoint (the rounds after it run again).
    kept = [
        r
        for r in read_rows(rows_path)
        if r["label"] not in names or (checkpoints[r["label"]] and r["round"] <= checkpoints[r["label"]].round)
    ]
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    recent = {
        name: [r["eval_accuracy"] for r in kept if r["label"] == name and r["eval_accuracy"] is not None]
        for name in names
    }  # each variant's evaluated accuracies
    wall_before = {name: max((r["wall_s"] for r in kept if r["label"] == name), default=0.0) for name in names}
    ended = [
        name
        for name in names
        if checkpoints[name] and ended_run(checkpoints[name].round, recent[name], targets, args.max_rounds)
    ]
    for name in ended:
        print(f"[{name}] already ended at round {checkpoints[name].round}", flush=True)
    todo = [name for name in names if name not in ended]
    cfgs = {name: compose(overrides[name]) for name in todo}
    data = Workbench.load_data(cfgs[todo[0]].data) if todo else None
    trials = {name: build(cfg, data) for name, cfg in cfgs.items()}
    runs = {name: trial.run(settings(cfgs[name]), resume=checkpoints[name]) for name, trial in trials.items()}
    for name in todo:
        if checkpoints[name]:
            print(f"[{name}] resumed after round {checkpoints[name].round}", flush=True)

    def save(name: str) -> None:
        if args.checkpoint_every and trials[name].checkpoint is not None:
            trials[name].checkpoint.tag = " ".join(overrides[name])
            trials[name].checkpoint.save(checkpoint_dir / f"{name}.ckpt")

    deadline = time.time() + 60 * args.deadline_minutes if args.deadline_minutes else None
    started = time.time()
    while runs and (deadline is None or time.time() < deadline):
        for name in list(runs):
            record = next(runs[name], None)
            if record is None:
                del runs[name]
                continue
            row = {"label": name, **record.__dict__, "wall_s": round(wall_before[name] + time.time() - started, 1)}
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            acc = record.eval_accuracy
            print(
                f"[{name}] round {record.round}: acc {acc if acc is None else f'{acc:.4f}'}, "
                f"{record.cumulative_bits / 1e9:.2f} Gbit, {record.seconds:.1f} s",
                flush=True,
            )
            if acc is not None:
                recent[name].append(acc)
            if ended_run(record.round, recent[name], targets, args.max_rounds):
                save(name)  # the variant's end: a start with the same command does not run it again
                record_test_accuracy(RESULTS / f"{stem}_test.json", name, trials[name], record)
                del runs[name]
            elif args.checkpoint_every and record.round % args.checkpoint_every == 0:
                save(name)
    report(read_rows(rows_path), targets, meta, stem)


if __name__ == "__main__":
    main()
