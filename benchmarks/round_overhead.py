"""Round overhead: one fl-sweeps (TFF FedAvg) round against the same local SGD plus averaging in plain TensorFlow.

Setting (issue 8, item 1): MNIST 28x28 split IID over 100 clients, 10 clients per round, the FedAvg paper's CNN,
batch 20, one local epoch, client SGD. Variants, measured side by side in one process and alternating so machine
noise hits all alike:

Issue 17: the reference is ``plain-2threads`` with oneDNN on (fl-sweeps' default since then); target: fl-sweeps'
round within 1.25x of its wall time, reported as examples/s and the reference's speed over fl-sweeps'.

- ``plain``: per client, copy the global weights into a Keras model, run the client's ``tf.data`` pipeline through
  a ``tf.function`` SGD loop, and add the example-weighted model delta; then apply the mean delta. Same clients,
  same pipelines (fl-sweeps' own ``BuiltProcess.client_dataset``), same steps as the TFF round.
- ``tff-none``, ``tff-agg8``, ``tff-both8``: ``FederatedTrial.run`` rounds as fl-sweeps runs them (sampling,
  ``process.next``, the finiteness check, the bit count), uncompressed, 8-bit aggregation (threshold 20,000, TFF's
  tutorial setting), 8-bit both directions. Evaluation is skipped (it is not part of a round being compared).

For each round it records wall seconds and the CPU seconds spent in this process and in the TFF worker process,
which shows where the time goes on a shared machine better than wall time alone. The first round of every run is
a warm-up and is dropped. Results: ``results/round_overhead.json``; the ratios to ``plain`` are printed last.

    uv run python benchmarks/round_overhead.py [--repeats 3] [--rounds 3] [--data ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fl_run import DEFAULT_DATA, RESULTS, compose

ENCODERS = {
    "tff-none": ["broadcast_encoder=none", "aggregate_encoder=none"],
    "tff-agg8": ["broadcast_encoder=none", "aggregate_encoder=uniform", "aggregate_encoder.bits=8"],
    "tff-both8": [
        "broadcast_encoder=uniform",
        "broadcast_encoder.bits=8",
        "aggregate_encoder=uniform",
        "aggregate_encoder.bits=8",
    ],
}
TARGETS = {"tff-none": 1.25, "tff-both8": 1.25}  # issue 17: within 1.25x of plain Keras with oneDNN
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Thread and kernel settings read from the environment by TF here and in the TFF worker; recorded with the result.
ENV_KNOBS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "TF_ENABLE_ONEDNN_OPTS")


def worker_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by our TFF worker process, 0 if none runs."""
    from fl_sweeps import tff_runtime

    pid = tff_runtime.worker_pid()
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def mnist_iid_overrides(data: Path, rounds: int) -> list[str]:
    """The benchmarks' setting: MNIST IID over 100 clients, 10 a round, the FedAvg CNN, B=20, E=1, client SGD."""
    return [
        "data=mnist",
        f"data.path={data.resolve()}",
        "data.partition=iid",
        "data.num_clients=100",
        "model=cnn",
        "client_optimizer=sgd",
        "client_optimizer.lr=0.05",
        "server_optimizer=sgd",
        "server_optimizer.lr=1.0",
        f"training.rounds={rounds}",
        "training.clients_per_round=10",
        "training.local_epochs=1",
        "training.batch_size=20",
    ]


class LocalModel:
    """One Keras model replica with its ``tf.function`` local SGD loop over a client's dataset."""

    def __init__(self, trial: Any, lr: float) -> None:
        import tensorflow as tf

        self.model = trial.built.model_builder(trial.data.input_shape, trial.data.num_classes)
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        variables = self.model.trainable_variables

        @tf.function
        def local_train(dataset: Any) -> Any:
            loss_sum = tf.constant(0.0)
            for x, y in dataset:
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, self.model(x, training=True))
                for v, g in zip(variables, tape.gradient(loss, variables), strict=True):
                    v.assign_sub(lr * g)
                loss_sum += loss
            return loss_sum

        self.local_train = local_train

    def delta(self, weights: list[np.ndarray], dataset: Any) -> tuple[list[np.ndarray], float]:
        """Train from ``weights`` on ``dataset``: the model delta and the summed batch losses."""
        for v, w in zip(self.model.trainable_variables, weights, strict=True):
            v.assign(w)
        loss = float(self.local_train(dataset))
        return [v.numpy() - w for v, w in zip(self.model.trainable_variables, weights, strict=True)], loss


class PlainFedAvg:
    """FedAvg written directly in TensorFlow: SGD in a ``tf.function`` per client, example-weighted mean delta.

    ``threads`` > 1 trains that many clients at once, each thread with its own model replica (TensorFlow releases
    the GIL while a ``tf.function`` runs): the best a hand-written loop does on a few cores with small batches.
    """

    def __init__(self, trial: Any, lr: float, threads: int = 1) -> None:
        self.trial = trial
        self.replicas = [LocalModel(trial, lr) for _ in range(threads)]
        self.weights = [v.numpy() for v in self.replicas[0].model.trainable_variables]

    def _train_group(self, replica: LocalModel, indices: list[int], datasets: list[Any]) -> list[tuple[Any, ...]]:
        """Train the clients at ``indices`` one after another on ``replica``: (index, delta, loss) each."""
        return [(i, *replica.delta(self.weights, datasets[i])) for i in indices]

    def run(self, settings: Any, rounds: int) -> Any:
        """Yield after each round, like ``FederatedTrial.run`` (same client sampling and pipelines)."""
        rng = np.random.default_rng(settings.seed)
        data = self.trial.data
        for round_num in range(1, rounds + 1):
            chosen = rng.choice(len(data.client_ids), size=settings.training.clients_per_round, replace=False)
            client_ids = [data.client_ids[i] for i in sorted(chosen)]
            datasets = [self.trial.built.client_dataset(cid, round_num, settings) for cid in client_ids]
            groups = [list(range(i, len(client_ids), len(self.replicas))) for i in range(len(self.replicas))]

            with ThreadPoolExecutor(len(self.replicas)) as pool:  # one thread per replica, its clients in turn
                per_group = pool.map(self._train_group, self.replicas, groups, [datasets] * len(groups))
                results = [r for group_results in per_group for r in group_results]
            delta_sum = [np.zeros_like(w) for w in self.weights]
            total = 0
            for i, delta, loss in results:
                n = len(data.train[client_ids[i]])
                for acc, d in zip(delta_sum, delta, strict=True):
                    acc += n * d
                total += n
                if not np.isfinite(loss):
                    raise RuntimeError("plain FedAvg diverged")
            self.weights = [w + d / total for w, d in zip(self.weights, delta_sum, strict=True)]
            yield round_num


class NoEvaluation:
    """An ``Evaluator`` that does not evaluate, so timed rounds are training alone."""

    def evaluate(self, weights: Any) -> tuple[float, float]:
        return 0.0, 0.0

    def release(self) -> None:
        pass


def timed_rounds(rounds_iter: Any) -> list[dict[str, float]]:
    """Wall and CPU seconds (this process, TFF worker) of each round an iterator yields; the first is dropped."""
    out = []
    wall, cpu, wcpu = time.perf_counter(), time.process_time(), worker_cpu_seconds()
    for _ in rounds_iter:
        now_wall, now_cpu, now_wcpu = time.perf_counter(), time.process_time(), worker_cpu_seconds()
        out.append({"wall_s": now_wall - wall, "python_cpu_s": now_cpu - cpu, "worker_cpu_s": now_wcpu - wcpu})
        wall, cpu, wcpu = now_wall, now_cpu, now_wcpu
    return out[1:]


def profile_rounds(trial: Any, settings: Any, rounds: int) -> list[dict[str, float]]:
    """Where the wall time of a round goes, phase by phase, following ``FederatedTrial.run``'s steps.

    Phases: building the clients' ``tf.data`` pipelines; ``process.next`` (sending state and datasets to the TFF
    worker, local training and aggregation there, the result back); ``model_weights`` (read from the returned state,
    or a second worker call for processes whose state does not hold them), for the trainer's finiteness check and
    evaluation. The first round is dropped as warm-up.
    """
    import numpy as np

    rng = np.random.default_rng(settings.seed)
    state = trial.initial_state(settings)
    out = []
    for round_num in range(1, rounds + 2):
        t0 = time.perf_counter()
        chosen = rng.choice(len(trial.data.client_ids), size=settings.training.clients_per_round, replace=False)
        client_ids = [trial.data.client_ids[i] for i in sorted(chosen)]
        datasets = [trial.built.client_dataset(client_id, round_num, settings) for client_id in client_ids]
        t1, w1 = time.perf_counter(), worker_cpu_seconds()
        state = trial.process.next(state, datasets).state
        t2, w2 = time.perf_counter(), worker_cpu_seconds()
        trial.model_weights(state)
        t3 = time.perf_counter()
        out.append(
            {
                "datasets_s": t1 - t0,
                "next_s": t2 - t1,
                "next_worker_cpu_s": w2 - w1,
                "model_weights_s": t3 - t2,
            }
        )
    return out[1:]


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median and spread of each measured quantity."""
    result: dict[str, float] = {"rounds": len(rows)}
    for key in ("wall_s", "python_cpu_s", "worker_cpu_s"):
        values = [r[key] for r in rows]
        result[f"{key}_median"] = statistics.median(values)
        result[f"{key}_min"] = min(values)
        result[f"{key}_max"] = max(values)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "mnist", help="folder of the MNIST IDX files")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, alternating")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per run (one more is run as warm-up)")
    parser.add_argument(
        "--variants", default="plain,plain-2threads,tff-none,tff-agg8,tff-both8", help="comma-separated subset"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "round_overhead.json")
    parser.add_argument("--profile-rounds", type=int, default=2, help="rounds timed phase by phase (0: none)")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="TFF worker's max_concurrent_computation_calls (default: fl-sweeps')",
    )
    args = parser.parse_args()
    from fl_sweeps import tff_runtime

    if args.max_concurrent is not None:
        tff_runtime.ensure_worker(args.max_concurrent)

    from fl_run import settings as run_settings

    from fl_sweeps.workbench import Workbench

    base = [*mnist_iid_overrides(args.data, args.rounds + 1), "reuse_built_process=false"]
    names = args.variants.split(",")
    cfgs = {name: compose([*base, *ENCODERS.get(name, ENCODERS["tff-none"])]) for name in names}
    first = cfgs[names[0]]
    workbench = Workbench()
    data = workbench.load_data(first.data)
    runners: dict[str, Any] = {}
    for name in names:
        if not name.startswith("plain"):
            trial = workbench.build_trial(cfgs[name], data)
            trial.evaluator = NoEvaluation()  # a round here is training only (the trainer evaluates every round)
            runners[name] = trial
    any_trial = next(iter(runners.values()), None) or workbench.build_trial(cfgs["tff-none"], data)
    for name in names:
        if name.startswith("plain"):
            threads = int(name.removeprefix("plain-").removesuffix("threads")) if name != "plain" else 1
            runners[name] = PlainFedAvg(any_trial, lr=float(first.client_optimizer.lr), threads=threads)
    settings = run_settings(first)

    measured: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names:
            runner = runners[name]
            rounds = runner.run(settings, args.rounds + 1) if name.startswith("plain") else runner.run(settings)
            rows = timed_rounds(rounds)
            measured[name].extend(rows)
            walls = ", ".join(f"{r['wall_s']:.2f}" for r in rows)
            print(f"repeat {repeat + 1}/{args.repeats} {name:>9}: round wall s {walls}", flush=True)

    summary = {name: summarize(rows) for name, rows in measured.items()}
    profile = {}
    for name in (n for n in ("tff-none", "tff-both8") if n in runners and args.profile_rounds):
        rows = profile_rounds(runners[name], settings, args.profile_rounds)
        profile[name] = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(f"profile {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in profile[name].items()), flush=True)
    examples = examples_per_round(any_trial, settings)
    for s in summary.values():
        s["examples_per_s"] = examples / s["wall_s_median"]
    plain_names = [n for n in summary if n.startswith("plain")]
    ratios: dict[str, dict[str, float]] = {}
    if plain_names:
        best = min(plain_names, key=lambda n: summary[n]["wall_s_median"])
        for name in (n for n in summary if n not in plain_names):
            wall, cpu = summary[name]["wall_s_median"], _cpu(summary[name])
            ratios[name] = {
                **{f"wall/{p}": wall / summary[p]["wall_s_median"] for p in plain_names},
                "wall/best_plain": wall / summary[best]["wall_s_median"],
                "speed/best_plain": summary[best]["wall_s_median"] / wall,
                "cpu/best_plain": cpu / _cpu(summary[best]),
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "setting": "MNIST IID, 10 of 100 clients, FedAvg CNN, B=20, E=1, client SGD",
                "examples_per_round": examples,
                "load_average_1_5_15": os.getloadavg(),
                "repeats": args.repeats,
                "rounds_per_run": args.rounds,
                "max_concurrent_computation_calls": args.max_concurrent,
                "env": {k: os.environ.get(k) for k in ENV_KNOBS},
                "summary": summary,
                "ratios": ratios,
                "profile_median_s": profile,
                "targets_wall_over_best_plain": TARGETS,
                "raw": measured,
            },
            indent=2,
        )
        + "\n"
    )
    for name, s in summary.items():
        print(
            f"{name:>15}: wall {s['wall_s_median']:.2f} s/round (min {s['wall_s_min']:.2f}, max {s['wall_s_max']:.2f});"
            f" CPU python {s['python_cpu_s_median']:.2f} s, worker {s['worker_cpu_s_median']:.2f} s;"
            f" {s['examples_per_s']:.0f} examples/s"
        )
    for name, r in ratios.items():
        print(f"{name:>15}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()))
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    if ratios:
        print(
            "round time / best plain TF: "
            + " | ".join(
                f"{name} {r['wall/best_plain']:.2f}x"
                + (f" (target <= {TARGETS[name]:.2f}x)" if name in TARGETS else "")
                for name, r in ratios.items()
            )
        )


def examples_per_round(trial: Any, settings: Any) -> float:
    """Examples a round trains on: clients per round times local epochs times the mean client size."""
    sizes = [len(trial.data.train[client_id]) for client_id in trial.data.client_ids]
    training = settings.training
    return training.clients_per_round * training.local_epochs * sum(sizes) / len(sizes)


def _cpu(s: dict[str, float]) -> float:
    """Median CPU seconds of a round, this process and the TFF worker together."""
    return s["python_cpu_s_median"] + s["worker_cpu_s_median"]


if __name__ == "__main__":
    main()
