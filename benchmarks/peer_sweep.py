"""The peer of issue 20's benchmark: the sweep a user following TFF's tutorials and Hydra's docs would write without
fl-sweeps. It imports nothing of fl-sweeps.

Stock ``hydra-optuna-sweeper`` (NSGA-II, two objectives), ``tff.learning.algorithms.build_weighted_fed_avg`` built
afresh for every trial, no pruning, no reuse. The aggregation is compressed as TFF's compression tutorial does it
(``tff.aggregators.EncodedSumFactory`` with tensor_encoding's uniform or Hadamard quantization above a size
threshold); the broadcast is quantized on the server before ``tff.federated_broadcast`` (clients receive the
dequantized weights). Bits are counted as fl-sweeps' README states them (packed ``bits``-wide words plus a float32
range per quantized tensor, float32 otherwise, Hadamard rows padded to a power of two, plus the client weight), so
both sweeps' fronts are measured in the same unit. Data: scikit-learn's digits, IID over ``clients`` clients with
20% of each held out, as ``data=digits``.

hydra-optuna-sweeper pins optuna<3, so it runs in a throwaway venv of its own, never in the project's::

    uv venv /tmp/peer-venv --python 3.11
    uv pip install --python /tmp/peer-venv/bin/python --override overrides.txt \\
        tensorflow-federated==0.87.0 hydra-optuna-sweeper==1.2.0 scikit-learn   # overrides.txt: jax, jaxlib==0.4.18
    /tmp/peer-venv/bin/python benchmarks/peer_sweep.py --multirun hydra.sweeper.n_trials=24 \\
        'client_lr=tag(log, interval(0.02, 0.5))' ... results=peer.jsonl

Each finished trial appends one JSON line to ``results`` (accuracy, bits, its parameters, the time it ended).
"""

from __future__ import annotations

import atexit
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig


@dataclass
class PeerConfig:
    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"override hydra/sweeper": "optuna"},
            {"override hydra/sweeper/sampler": "nsgaii"},
        ]
    )
    seed: int = 0
    clients: int = 20
    rounds: int = 15
    clients_per_round: int = 5
    local_epochs: int = 5
    batch_size: int = 20
    filters: list[int] = field(default_factory=lambda: [32, 64])
    dense_units: int = 512
    client_lr: float = 0.1
    server_lr: float = 1.0
    aggregate: str = "uniform"  # none | uniform | hadamard
    aggregate_bits: int = 8
    aggregate_threshold: int = 20000
    broadcast: str = "none"  # none | uniform
    broadcast_bits: int = 8
    broadcast_threshold: int = 20000
    results: str = "peer.jsonl"


ConfigStore.instance().store(name="peer", node=PeerConfig)


def load_clients(cfg: DictConfig) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """Digits split IID over the clients; 20% of each client's examples held out and pooled for evaluation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int32)
    rng = np.random.default_rng(cfg.seed)
    train, test_x, test_y = [], [], []
    for part in np.array_split(rng.permutation(len(y)), cfg.clients):
        held = max(1, round(0.2 * len(part)))
        train.append((x[part[held:]], y[part[held:]]))
        test_x.append(x[part[:held]])
        test_y.append(y[part[:held]])
    return train, (np.concatenate(test_x), np.concatenate(test_y))


def build_model(cfg: DictConfig) -> Any:
    import tensorflow as tf

    layers: list[Any] = [tf.keras.Input(shape=(8, 8, 1))]
    for n in cfg.filters:
        layers += [tf.keras.layers.Conv2D(n, 5, padding="same", activation="relu"), tf.keras.layers.MaxPool2D(2)]
    layers += [
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(cfg.dense_units, activation="relu"),
        tf.keras.layers.Dense(10),
    ]
    return tf.keras.Sequential(layers)


def tensor_bits(n: int, kind: str, bits: int, threshold: int) -> int:
    """Bits of one float32 tensor of ``n`` values as sent."""
    if kind == "none" or n <= threshold:
        return 32 * n
    m = n if kind == "uniform" else sum(2 ** math.ceil(math.log2(min(n, 4096))) for _ in range(math.ceil(n / 4096)))
    return 32 * math.ceil(m * bits / 32) + 64


def quantize(value: Any, bits: int) -> Any:
    """Deterministic uniform quantization to ``bits`` over the tensor's range, and back."""
    import tensorflow as tf

    low, high = tf.reduce_min(value), tf.reduce_max(value)
    scale = tf.maximum(high - low, 1e-12) / (2.0**bits - 1.0)
    return tf.round((value - low) / scale) * scale + low


def build_process(cfg: DictConfig, element_spec: Any) -> Any:
    import tensorflow as tf
    import tensorflow_federated as tff
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    def model_fn() -> Any:
        return tff.learning.models.from_keras_model(
            build_model(cfg),
            input_spec=element_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    aggregator = tff.learning.robust_aggregator(zeroing=False, clipping=False)
    if cfg.aggregate != "none":
        quantizer = (
            te.encoders.uniform_quantization if cfg.aggregate == "uniform" else te.encoders.hadamard_quantization
        )

        def encoder_fn(spec: Any) -> Any:
            if spec.dtype.is_floating and spec.shape.num_elements() > cfg.aggregate_threshold:
                return te.encoders.as_gather_encoder(quantizer(cfg.aggregate_bits), spec)
            return te.encoders.as_gather_encoder(te.encoders.identity(), spec)

        aggregator = tff.aggregators.MeanFactory(tff.aggregators.EncodedSumFactory(encoder_fn))
    distributor = None
    if cfg.broadcast != "none":
        weights_type = tff.learning.models.weights_type_from_model(model_fn)

        @tff.tensorflow.computation(weights_type)
        def server_quantize(weights: Any) -> Any:
            return tf.nest.map_structure(
                lambda w: (
                    quantize(w, cfg.broadcast_bits)
                    if w.shape.num_elements() > cfg.broadcast_threshold
                    else tf.identity(w)
                ),
                weights,
            )

        @tff.federated_computation
        def init_fn() -> Any:
            return tff.federated_value((), tff.SERVER)

        @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(weights_type, tff.SERVER))
        def next_fn(state: Any, weights: Any) -> Any:
            sent = tff.federated_broadcast(tff.federated_map(server_quantize, weights))
            return tff.templates.MeasuredProcessOutput(state, sent, tff.federated_value((), tff.SERVER))

        distributor = tff.learning.templates.DistributionProcess(init_fn, next_fn)
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=cfg.client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=cfg.server_lr),
        model_distributor=distributor,
        model_aggregator=aggregator,
    ), model_fn


@hydra.main(version_base="1.3", config_path=None, config_name="peer")
def main(cfg: DictConfig) -> tuple[float, float]:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(cfg.seed)
    train, (test_x, test_y) = load_clients(cfg)
    datasets = [
        tf.data.Dataset.from_tensor_slices(client)
        .shuffle(128, seed=cfg.seed)
        .repeat(cfg.local_epochs)
        .batch(cfg.batch_size)
        for client in train
    ]
    process, _ = build_process(cfg, datasets[0].element_spec)
    state = process.initialize()
    rng = np.random.default_rng(cfg.seed)
    for _ in range(cfg.rounds):
        chosen = rng.choice(len(datasets), cfg.clients_per_round, replace=False)
        state = process.next(state, [datasets[i] for i in chosen]).state
    model = build_model(cfg)
    process.get_model_weights(state).assign_weights_to(model)
    logits = model(test_x, training=False)
    accuracy = float(np.mean(np.argmax(logits.numpy(), axis=1) == test_y))
    sizes = [int(np.prod(w.shape)) for w in model.trainable_weights]
    per_client = (
        sum(
            tensor_bits(n, cfg.broadcast, cfg.broadcast_bits, cfg.broadcast_threshold)
            + tensor_bits(n, cfg.aggregate, cfg.aggregate_bits, cfg.aggregate_threshold)
            for n in sizes
        )
        + 32
    )
    bits = float(per_client * cfg.clients_per_round * cfg.rounds)
    with open(hydra.utils.to_absolute_path(cfg.results), "a") as out:
        params = {k: v for k, v in cfg.items() if k != "results"}
        out.write(json.dumps({"accuracy": accuracy, "bits": bits, "end": time.time(), **params}, default=list) + "\n")
    return accuracy, bits


def stop_tff_workers() -> None:
    """Stop the ``worker_binary`` processes TFF's default execution context started for this process.

    TFF starts its C++ worker on the first computation and never stops it: it outlives Python, holding this
    process's output pipes (a driver reading them would hang). The peer is what a user writes with TFF alone, so it
    keeps TFF's default context and ends its workers on exit instead.
    """
    import psutil  # installed with TFF (portpicker needs it)

    workers = [p for p in psutil.Process().children(recursive=True) if p.name() == "worker_binary"]
    for worker in workers:
        worker.terminate()
    _, alive = psutil.wait_procs(workers, timeout=10)
    for worker in alive:
        worker.kill()


if __name__ == "__main__":
    atexit.register(stop_tff_workers)
    main()
