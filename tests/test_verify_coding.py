"""``compression.verify_coding``: every entropy-coded message of a run is coded by constriction's ANS coder, decoded
and checked; produced and counted bits are recorded, counted bits and training stay as without it, and the check
fails with one line when a stream does not decode to the message or is longer than counted."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from compressor_configs import encoder
from conftest import TINY_LINEAR
from mlflow import MlflowClient

import fl_sweeps.quiet  # noqa: F401  (before TF)
from fl_sweeps.errors import CodingCheckError, ConfigError
from fl_sweeps.validation import validate

CORE = ["algorithm=fedavg_core", "compression.verify_coding=true"]
UNIFORM_CODED = [  # no error feedback: the plain encoded broadcast and the encoded sum of the aggregation
    "broadcast_encoder=uniform",
    "broadcast_encoder.threshold=0",
    "broadcast_encoder.entropy_coding=true",
    "aggregate_encoder=uniform",
    "aggregate_encoder.bits=4",
    "aggregate_encoder.threshold=0",
    "aggregate_encoder.entropy_coding=true",
]
RECORD_LIKE = [  # the record's pick's shape: a DRIVE difference broadcast, a top-k update with error feedback
    "broadcast_encoder=drive",
    "broadcast_encoder.threshold=0",
    "broadcast_encoder.entropy_coding=true",
    "broadcast_encoder.delta=true",
    "broadcast_encoder.catch_up=difference",
    "aggregate_encoder=topk",
    "aggregate_encoder.fraction=0.1",
    "aggregate_encoder.threshold=0",
    "aggregate_encoder.error_feedback=true",
    "aggregate_encoder.entropy_coding=true",
]


DELTA_MESSAGES = [  # the delta broadcast's change message, made at the server (catch_up=messages)
    "broadcast_encoder=uniform",
    "broadcast_encoder.bits=4",
    "broadcast_encoder.threshold=0",
    "broadcast_encoder.entropy_coding=true",
    "broadcast_encoder.delta=true",
    "aggregate_encoder=none",
]


def _message(option, x: np.ndarray) -> dict:
    """The message of ``x`` through ``option``'s per-tensor ``SimpleEncoder`` (as a broadcast sends it)."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph

    trace_tensor_encoding_without_autograph()
    simple = te.encoders.as_simple_encoder(option.tensor_encoder(x.size, True), tf.TensorSpec(x.shape, tf.float32))
    message, _ = simple.encode(tf.constant(x), simple.initial_state())
    return message


def _as_numpy(parts: dict) -> dict:
    return {name: np.asarray(value) for name, value in parts.items()}


# ---- Bad input: one line, before any work. ----


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["compression.verify_coding=true", "aggregate_encoder.entropy_coding=true"],
            "compression.verify_coding=true is not allowed with algorithm=fedavg: only "
            "algorithm=fedavg_core hands its messages out to be coded; add algorithm=fedavg_core",
        ),
        (
            CORE,
            "compression.verify_coding=true is not allowed without entropy coding: set "
            "broadcast_encoder.entropy_coding=true or aggregate_encoder.entropy_coding=true, or verify_coding=false",
        ),
    ],
)
def test_bad_input_is_one_line(compose_config, overrides, expected):
    with pytest.raises(ConfigError) as error:
        validate(compose_config([*TINY_LINEAR, *overrides]))
    assert str(error.value) == expected


def test_default_is_off(compose_config):
    cfg = compose_config(TINY_LINEAR)
    assert cfg.compression.verify_coding is False
    validate(compose_config([*TINY_LINEAR, *CORE, *UNIFORM_CODED]))  # allowed where there is something to code


# ---- The verifier on real messages, and that it can fail. ----


@pytest.mark.parametrize("name", ["uniform", "hadamard", "drive", "topk", "topk_uniform"])
def test_real_messages_decode_and_fit_their_count(compose_config, name):
    """A message's coded parts come out of it whole, decode exactly and are at most counted; the parts a check
    needs do not change the bits counted for the message."""
    from fl_sweeps.compression.coded_messages import coded_parts
    from fl_sweeps.compression.coding_check import check_round
    from fl_sweeps.compression.measure import message_bits

    x = np.random.default_rng(1).laplace(size=5000).astype(np.float32)
    plain = encoder(compose_config, name, threshold=0, entropy_coding=True)
    verified = replace(plain, verify_coding=True)
    message = _message(verified, x)
    assert int(message_bits(message)) == int(message_bits(_message(plain, x)))
    parts = _as_numpy(coded_parts((message,)))
    coded = check_round({"aggregator": {"coded_messages": parts}}, round_num=1)
    assert coded is not None and coded.parts >= 1
    assert 0 < coded.produced <= coded.counted
    assert coded.counted == int(parts["packed_counted"].sum() + parts["positions_counted"].sum())


def test_unpacked_symbols_are_the_quantized_values(compose_config):
    """The symbols read from the packed words are the uniform quantizer's levels of the decoded values."""
    from fl_sweeps.compression.coded_messages import coded_parts
    from fl_sweeps.compression.coding_check import unpack_symbols

    x = np.random.default_rng(2).laplace(size=3000).astype(np.float32)
    option = replace(encoder(compose_config, "uniform", bits=3, threshold=0, entropy_coding=True), verify_coding=True)
    message = _message(option, x)
    parts = _as_numpy(coded_parts((message,)))
    assert parts["packed_bits"].tolist() == [3] and parts["packed_num_values"].tolist() == [3000]
    symbols = unpack_symbols(parts["packed_words"], 3000, 3)
    low, high = np.asarray(message[next(k for k in message if k.endswith("min_max"))])
    decoded = low + symbols * (high - low) / 7
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    simple = te.encoders.as_simple_encoder(option.tensor_encoder(x.size, True), tf.TensorSpec(x.shape, tf.float32))
    np.testing.assert_allclose(decoded, simple.decode(message).numpy(), rtol=1e-5, atol=1e-5)


def test_a_corrupted_stream_fails_in_one_line():
    from fl_sweeps.compression.coding_check import ans_encode, check_decodes

    symbols = np.random.default_rng(3).integers(0, 4, 20000)
    probabilities = np.bincount(symbols, minlength=4) / symbols.size
    stream = ans_encode(symbols, probabilities)
    check_decodes(stream, symbols, probabilities, "packed symbols 0")  # the stream as made decodes
    corrupted = stream.copy()
    corrupted[len(corrupted) // 2] ^= 0x00FF00FF
    with pytest.raises(CodingCheckError) as error:
        check_decodes(corrupted, symbols, probabilities, "packed symbols 0")
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(
        "compression.verify_coding: packed symbols 0: the coded stream decodes to other symbols than the message's"
    )


def test_a_count_below_the_stream_fails_in_one_line(compose_config):
    from fl_sweeps.compression.coded_messages import coded_parts
    from fl_sweeps.compression.coding_check import check_round

    x = np.random.default_rng(4).laplace(size=4000).astype(np.float32)
    option = replace(encoder(compose_config, "topk", threshold=0, entropy_coding=True), verify_coding=True)
    parts = _as_numpy(coded_parts((_message(option, x),)))
    parts["positions_counted"] = np.array([100], np.int64)
    with pytest.raises(CodingCheckError) as error:
        check_round({"aggregator": {"coded_messages": parts}}, round_num=3)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("compression.verify_coding: round 3, aggregation top-k positions 0: the coder produced ")
    assert message.endswith(" bits, more than the 100 counted")


def test_a_message_that_is_not_what_it_says_fails_in_one_line():
    from fl_sweeps.compression.coding_check import positions_produced_bits, unpack_symbols

    with pytest.raises(CodingCheckError, match=r"^compression.verify_coding: packed symbols: 3 words cannot hold"):
        unpack_symbols(np.zeros(3, np.int32), 10, 4)
    with pytest.raises(CodingCheckError, match=r"top-k positions: a position is sent twice$"):
        positions_produced_bits(np.array([1, 5, 5]), 10)


def test_no_coded_parts_is_none():
    from fl_sweeps.compression.coding_check import check_round

    assert check_round({"distributor": {"bits_server_to_clients": 3}}, round_num=1) is None


# ---- Real TFF processes, a few rounds, recorded in MLflow. ----


@pytest.fixture(scope="module")
def verified_runs(workbench, compose_config, tmp_path_factory):
    """``{name: [(run, metric histories) with verify_coding, (run, metric histories) without]}``: 3 rounds of each
    option set (one module-wide MLflow store)."""
    from fl_sweeps import experiment

    uri = f"sqlite:///{tmp_path_factory.mktemp('verify') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    runs = {}
    for name, options in {"uniform": UNIFORM_CODED, "record_like": RECORD_LIKE, "delta": DELTA_MESSAGES}.items():
        histories = []
        for verify in ("true", "false"):
            overrides = [*TINY_LINEAR, "algorithm=fedavg_core", *options, "training.rounds=3", "mlflow.log_model=false"]
            cfg = compose_config([*overrides, f"compression.verify_coding={verify}"], uri)
            run_id = experiment.run_trial(cfg, show_progress=False, workbench=workbench).run_id
            run = client.get_run(run_id)
            history = {
                key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
                for key in (
                    "train/loss",
                    "comm/broadcast_bits",
                    "comm/aggregate_bits",
                    "comm/coded_produced_bits",
                    "comm/coded_counted_bits",
                )
            }
            histories.append((run, history))
        runs[name] = histories
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["uniform", "record_like", "delta"])
def test_a_verified_run_records_produced_within_counted(verified_runs, name):
    (run, history), (plain_run, plain_history) = verified_runs[name]
    assert run.info.status == "FINISHED"
    produced, counted = history["comm/coded_produced_bits"], history["comm/coded_counted_bits"]
    assert len(produced) == len(counted) == 3
    assert all(0 < p <= c for p, c in zip(produced, counted, strict=True))
    metrics = run.data.metrics
    assert metrics["final/coded_produced_bits"] == sum(produced)
    assert metrics["final/coded_counted_bits"] == sum(counted)
    assert metrics["final/coded_produced_to_counted"] == pytest.approx(sum(produced) / sum(counted))
    if name != "delta":  # a change message is made every round, sent to clients only as their catch-up needs
        # The coded parts are part of the round's bits, which are those of the run without verification.
        round_bits = zip(counted, history["comm/broadcast_bits"], history["comm/aggregate_bits"], strict=True)
        assert all(c <= b + a for c, b, a in round_bits)
    if name == "uniform":  # every client's update and the broadcast, each tensor: all but the min and max (and weight)
        clients, tensors = 3, 2  # debug=tiny's clients a round; model=linear's kernel and bias, both compressed
        broadcast, aggregate = history["comm/broadcast_bits"], history["comm/aggregate_bits"]
        for c, b, a in zip(counted, broadcast, aggregate, strict=True):
            assert c == (a - clients * (tensors * 64 + 32)) + (b / clients - tensors * 64)
    for key in ("train/loss", "comm/broadcast_bits", "comm/aggregate_bits"):
        assert history[key] == plain_history[key]
    assert plain_history["comm/coded_produced_bits"] == []
    assert "final/coded_produced_bits" not in plain_run.data.metrics
