"""What settings as process inputs cost: encoding and decoding with ``bits``/``fraction``/``levels`` read from the
encoder state, against the same option with them traced as constants (issue 18).

With the settings as inputs, sizes that depend on them (packed words, ``k`` of top-k, the codebook) are computed in
the graph, and bit packing picks its layout with ``tf.cond``; traced as constants (``settings_as_inputs=False``,
one build per value), they are static. Each option encodes and decodes the FedAvg CNN's largest tensor (the
3136x512 dense kernel, 1.6M values) through a tensor_encoding ``SimpleEncoder`` in a ``tf.function``, both
variants alternately in one run (machines are noisy), and the ratio of their median times is printed; the
messages' bits are checked to be equal.

    uv run python benchmarks/settings_inputs_cost.py [--repeats 15] [--size 1605632]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

from fl_run import RESULTS, compose

OPTIONS = {  # option: its settings that are inputs (values as the default sweep draws them)
    "uniform": {"bits": 4},
    "hadamard": {"bits": 3},
    "qsgd": {"levels": 4},
    "nonuniform": {"bits": 4},
    "topk": {"fraction": 0.01},
    "randk": {"fraction": 0.01},
    "topk_uniform": {"bits": 4},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--size", type=int, default=3136 * 512)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from hydra.utils import instantiate
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from fl_sweeps.compression.measure import message_bits
    from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph

    trace_tensor_encoding_without_autograph()
    spec = tf.TensorSpec([args.size], tf.float32)
    x = tf.constant(np.random.default_rng(0).normal(size=args.size).astype(np.float32))
    rows = []
    for name, settings in OPTIONS.items():
        overrides = [f"aggregate_encoder={name}", "aggregate_encoder.threshold=0"]
        overrides += [f"aggregate_encoder.{key}={value}" for key, value in settings.items()]
        as_inputs = instantiate(compose(overrides).aggregate_encoder)
        variants = {"inputs": as_inputs, "constants": dataclasses.replace(as_inputs, settings_as_inputs=False)}
        runs, bits = {}, {}
        for label, option in variants.items():
            simple = te.encoders.as_simple_encoder(option.tensor_encoder(args.size, True), spec)
            state = simple.initial_state()

            @tf.function
            def round_trip(value, simple=simple, state=state):
                message, _ = simple.encode(value, state)
                return simple.decode(message), message_bits(message)

            _, measured = round_trip(x)  # traces
            bits[label] = int(measured)
            runs[label] = round_trip
        times: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(args.repeats):
            for label, run in runs.items():
                started = time.perf_counter()
                decoded, _ = run(x)
                decoded.numpy()
                times[label].append(time.perf_counter() - started)
        inputs, constants = (statistics.median(times[label]) for label in ("inputs", "constants"))
        row = {
            "option": name,
            **settings,
            "bits_equal": bits["inputs"] == bits["constants"],
            "inputs_ms": round(1000 * inputs, 1),
            "constants_ms": round(1000 * constants, 1),
            "ratio": round(inputs / constants, 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratios = [row["ratio"] for row in rows]
    summary = {"median_ratio": statistics.median(ratios), "max_ratio": max(ratios), "size": args.size}
    print(json.dumps(summary))
    (RESULTS / "settings_inputs_cost.json").write_text(json.dumps({"rows": rows, **summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
