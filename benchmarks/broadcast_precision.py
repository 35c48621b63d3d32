"""What a quantized model broadcast costs the model: test accuracy of a saved server model as clients receive it.

Issue 19's record pick broadcasts the model's weights with ``hadamard`` at 3 bits; its seed 0 needed about twice the
baseline's rounds. This script takes saved runs (``bits_to_accuracy.py``'s checkpoints, ``fl_sweeps.trainer.
RunCheckpoint``), encodes and decodes the server model with the ``broadcast_encoder`` option at each number of bits
(the broadcast's threshold, 1000), and evaluates both on the MNIST test set with the FedAvg CNN: the accuracy the
clients start from against the server's, and the relative error ``‖Q(w) − w‖ / ‖w‖``.

With ``--held`` (a saved run of the same trajectory some rounds earlier, one for each checkpoint) it also measures a
catch-up that sends only the difference: a client holding ``h`` receives ``Q(w − h)`` and starts from
``h + Q(w − h)``, whose error scales with ``‖w − h‖`` instead of ``‖w‖``.

    uv run python benchmarks/broadcast_precision.py \\
        benchmarks/results/checkpoints/record_mnist_seed0/{c-sweep,a-none}.ckpt --bits 2 3 4 6
    uv run python benchmarks/broadcast_precision.py later/{c-sweep,a-none}.ckpt --held earlier/{c-sweep,a-none}.ckpt \\
        --bits 1 2 3 --stem broadcast_catch_up_mnist

Results: ``results/broadcast_precision_mnist.{json,md}``. The checkpoints are not committed (hundreds of MB); the
command that writes them is in BENCHMARKS.md (issue 19).
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

from fl_run import DEFAULT_DATA, RESULTS, compose


def decoded(option: Any, weights: list[Any]) -> list[Any]:
    """Each tensor as the clients decode it: encoded and decoded by ``option``'s broadcast encoder."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph

    trace_tensor_encoding_without_autograph()
    out = []
    for w in weights:
        simple = te.encoders.as_simple_encoder(option.tensor_encoder(w.size, True), tf.TensorSpec([w.size], tf.float32))
        message, _ = simple.encode(tf.constant(w.reshape(-1)), simple.initial_state())
        out.append(simple.decode(message).numpy().reshape(w.shape))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="saved runs of the MNIST CNN")
    parser.add_argument("--option", default="hadamard", help="the broadcast_encoder option")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 6])
    parser.add_argument("--rounding", default="deterministic", help="the option's rounding")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="folder holding mnist/")
    parser.add_argument("--held", type=Path, nargs="*", default=[], help="earlier saved runs, one per checkpoint")
    parser.add_argument("--stem", default="broadcast_precision_mnist", help="results file stem")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from hydra.utils import instantiate

    from fl_sweeps.data.mnist import load_mnist
    from fl_sweeps.models import cnn

    test = load_mnist(path=str(args.data_root / "mnist"), num_clients=1).pooled("test")
    model = cnn((28, 28, 1), 10, filters=[32, 64], dense_units=512)
    model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    def accuracy(weights: list[Any]) -> float:
        model.set_weights(weights)
        return float(model.evaluate(test.x, test.y, verbose=0, batch_size=1000)[1])

    def load(path: Path) -> tuple[int, list[Any]]:
        with path.open("rb") as f:
            checkpoint = pickle.load(f)  # our own RunCheckpoint, written by bits_to_accuracy.py
        return checkpoint.round, [np.asarray(t) for t in checkpoint.state.global_model_weights.trainable]

    def norm(tensors: list[Any]) -> float:
        return float(np.sqrt(sum(float((t**2).sum()) for t in tensors)))

    if args.held and len(args.held) != len(args.checkpoints):
        parser.error(f"--held takes one saved run for each checkpoint ({len(args.checkpoints)}), got {len(args.held)}")
    rows = []
    for i, path in enumerate(args.checkpoints):
        round_num, weights = load(path)
        row = {"run": f"{path.parent.name}/{path.stem}", "round": round_num, "server": accuracy(weights)}
        held_round, held = load(args.held[i]) if args.held else (None, None)
        if held is not None:
            difference = [w - h for w, h in zip(weights, held, strict=True)]
            row["held_round"], row["held"] = held_round, accuracy(held)
            row["difference_norm"] = norm(difference) / norm(weights)
        for bits in args.bits:
            overrides = [f"broadcast_encoder={args.option}", f"broadcast_encoder.bits={bits}"]
            overrides.append(f"broadcast_encoder.rounding={args.rounding}")
            option = instantiate(compose([*overrides, "broadcast_encoder.threshold=1000"]).broadcast_encoder)
            received = decoded(option, weights)
            error = norm([q - w for q, w in zip(received, weights, strict=True)]) / norm(weights)
            row[f"{bits} bits"] = {"accuracy": accuracy(received), "relative_error": error}
            if held is not None:
                caught_up = [h + q for h, q in zip(held, decoded(option, difference), strict=True)]
                error = norm([c - w for c, w in zip(caught_up, weights, strict=True)]) / norm(weights)
                row[f"{bits} bits, difference"] = {"accuracy": accuracy(caught_up), "relative_error": error}
        rows.append(row)
        print(json.dumps(row), flush=True)

    (RESULTS / f"{args.stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = [f"{b} bits" for b in args.bits] + ([f"{b} bits, difference" for b in args.bits] if args.held else [])
    header = ["run", "round", "server model", *(f"{c}: accuracy (rel. error)" for c in columns)]
    if args.held:
        header[2:2] = ["held round", "held model", "‖w − h‖ / ‖w‖"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row["run"], str(row["round"])]
        if args.held:
            cells += [str(row["held_round"]), f"{row['held']:.4f}", f"{row['difference_norm']:.3f}"]
        cells.append(f"{row['server']:.4f}")
        cells += [f"{row[c]['accuracy']:.4f} ({row[c]['relative_error']:.3f})" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    (RESULTS / f"{args.stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
