"""The anchor catch-up (``broadcast_encoder.catch_up=anchors``) on real TFF processes.

A client that skipped rounds rebuilds the server's newest anchor bit for bit from the anchor messages it is counted
for; the bits of every round equal the count worked out from the wire format (``compressor_formulas``) and the
protocol (the anchor numbers each way, the run's seed, the anchor messages or the whole anchor, the correction); the
server keeps K models whatever the number of clients; same seed, same numbers; bad settings fail in one line.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from compressor_configs import build_trial, run_settings
from compressor_formulas import formula
from conftest import TINY_LINEAR

from fl_sweeps.compression.bits import ANCHOR_NUMBER_BITS, SEED_BITS
from fl_sweeps.errors import ConfigError
from fl_sweeps.preflight import user_error
from fl_sweeps.trainer.client_states import ClientStates
from fl_sweeps.validation import validate

K, EVERY = 2, 2  # two anchors kept; a new one in rounds 3, 5 and 7
ANCHORS = [
    *TINY_LINEAR,
    "algorithm=fedavg_core",
    "broadcast_encoder=uniform",
    "broadcast_encoder.bits=2",
    "broadcast_encoder.threshold=0",
    "broadcast_encoder.delta=true",
    "broadcast_encoder.catch_up=anchors",
    f"broadcast_encoder.anchors={K}",
    f"broadcast_encoder.anchor_every={EVERY}",
    "training.rounds=7",
    "data.num_clients=6",
    "training.clients_per_round=2",
]
# Who is sampled each round (client indices), so that every route is taken: a first client while anchor 0 is kept
# (the seed and the anchor messages), a client up to date, one an anchor behind, and clients whose anchor (or anchor
# 0, for a first client) the server no longer keeps (the whole anchor).
SAMPLED = [[0, 1], [0, 2], [0, 3], [1, 4], [0, 2], [3, 5], [0, 1]]


@pytest.fixture(scope="module")
def anchor_trial(compose_config, tff_worker):
    cfg = compose_config(ANCHORS)
    validate(cfg)
    return cfg, build_trial(cfg)


def _flat(weights) -> list[np.ndarray]:
    return [np.asarray(w) for w in [*weights.trainable, *weights.non_trainable]]


@pytest.mark.slow
def test_a_client_that_skipped_rounds_rebuilds_the_newest_anchor_and_the_bits_are_the_hand_count(anchor_trial):
    from hydra.utils import instantiate

    cfg, trial = anchor_trial
    settings = run_settings(cfg)
    built, states = trial.built, ClientStates()
    state = built.initial_state(settings)
    initial = _flat(built.model_weights(state))
    encoder = instantiate(cfg.broadcast_encoder)
    message = sum(formula(encoder, w.size)[0] for w in initial)  # one anchor message or correction, by hand
    whole = 32 * trial.num_parameters  # the newest anchor uncompressed
    anchors = {0: initial}  # anchor number -> the anchor, rebuilt here from the server's messages
    changes: dict[int, list[np.ndarray]] = {}  # anchor number -> its message, decoded (as the server kept it)
    held: dict[str, int] = {}  # client -> the anchor it holds, by this test's own account
    routes = set()
    for round_num, sampled in enumerate(SAMPLED, start=1):
        clients = [trial.data.client_ids[i] for i in sampled]
        output = built.next(state, clients, round_num, settings, states)
        state = output.state
        server = state.distributor
        newest = (round_num - 1) // EVERY
        assert int(server["anchor_number"]) == newest
        if newest not in anchors:  # made this round: the anchor before it plus its decoded message
            changes[newest] = [np.asarray(c)[-1] for c in server["changes"]]
            anchors[newest] = [a + c for a, c in zip(anchors[newest - 1], changes[newest], strict=True)]
            assert int(server["change_bits"][-1]) == message
        for ours, theirs in zip(anchors[newest], _flat(server["anchor"]), strict=True):
            np.testing.assert_array_equal(ours, theirs)  # the server's anchor, rebuilt from its messages alone
        # The server keeps K models: the newest anchor and the K-1 anchor messages before it.
        assert all(np.asarray(c).shape[0] == K - 1 for c in server["changes"])
        assert output.metrics["distributor"]["server_state_bytes"] == K * 4 * trial.num_parameters
        expected_down = 0
        for client in clients:
            start = held.get(client, 0)
            chain = (newest - start) * message + (SEED_BITS if client not in held else 0)
            by_chain = start >= newest - (K - 1) and chain <= whole
            routes.add(("first " if client not in held else "") + ("chain" if by_chain else "whole"))
            correction = 0 if round_num == 1 else message
            expected_down += ANCHOR_NUMBER_BITS + (chain if by_chain else whole) + correction
            if by_chain:  # what the client rebuilds from the messages it is counted for
                rebuilt = list(anchors[start])
                for number in range(start + 1, newest + 1):
                    rebuilt = [r + c for r, c in zip(rebuilt, changes[number], strict=True)]
                for r, a in zip(rebuilt, anchors[newest], strict=True):
                    np.testing.assert_array_equal(r, a)
            for kept, a in zip(_flat(states[client].held_model), anchors[newest], strict=True):
                np.testing.assert_array_equal(kept, a)  # the client holds exactly the server's newest anchor
            assert states[client].held_anchor == newest
            held[client] = newest
        assert output.metrics["distributor"]["bits_server_to_clients"] == expected_down
        assert output.metrics["distributor"]["bits_clients_to_server"] == len(clients) * ANCHOR_NUMBER_BITS
    assert routes == {"first chain", "chain", "first whole", "whole"}
    assert 0 < message < whole // 8  # 2-bit messages


@pytest.mark.slow
def test_the_server_keeps_k_models_whatever_the_clients_and_same_seed_same_numbers(anchor_trial):
    cfg, trial = anchor_trial
    settings = run_settings(cfg)
    first = list(trial.run(settings))
    held = {cid: _flat(s.held_model) for cid, s in trial.client_states.items()}
    second = list(trial.run(settings))
    assert [dataclasses.replace(r, seconds=0) for r in first] == [dataclasses.replace(r, seconds=0) for r in second]
    for cid, model in held.items():
        for a, b in zip(_flat(trial.client_states[cid].held_model), model, strict=True):
            np.testing.assert_array_equal(a, b)
    model_bytes = 4 * trial.num_parameters
    assert {r.server_state_bytes for r in first} == {K * model_bytes}  # K models from round 1 on
    assert first[0].client_state_bytes == 2 * model_bytes  # each client holds one anchor
    assert first[-1].client_state_bytes == len(held) * model_bytes > first[0].client_state_bytes
    assert all(r.broadcast_bits <= 2 * trial.bits_per_client.broadcast for r in first)  # planned: the most a client


@pytest.mark.slow
def test_a_run_records_the_servers_memory_and_its_coded_messages_in_mlflow(workbench, compose_config, tracking_uri):
    """Through ``fl-sweep``'s own run path: ``server/state_bytes`` beside ``clients/state_bytes``, and with
    ``compression.verify_coding`` the anchor messages and corrections (DRIVE, entropy coded) decode from a real
    coder's streams no longer than counted."""
    from mlflow import MlflowClient

    from fl_sweeps import experiment

    overrides = [
        *TINY_LINEAR,
        "algorithm=fedavg_core",
        "broadcast_encoder=drive",
        "broadcast_encoder.threshold=0",
        "broadcast_encoder.entropy_coding=true",
        "broadcast_encoder.delta=true",
        "broadcast_encoder.catch_up=anchors",
        "broadcast_encoder.anchors=3",
        "broadcast_encoder.anchor_every=1",
        "training.rounds=3",
        "mlflow.log_model=false",
        "compression.verify_coding=true",
    ]
    run_id = experiment.run_trial(
        compose_config(overrides, tracking_uri), show_progress=False, workbench=workbench
    ).run_id
    client = MlflowClient(tracking_uri=tracking_uri)
    keys = ("server/state_bytes", "clients/state_bytes", "comm/coded_produced_bits", "comm/coded_counted_bits")
    history = {
        key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)] for key in keys
    }
    model_bytes = 4 * (64 * 10 + 10)  # the linear model on 8x8 digits: a 64x10 kernel and 10 biases, float32
    assert history["server/state_bytes"] == [3 * model_bytes] * 3
    assert len(history["clients/state_bytes"]) == 3 and history["clients/state_bytes"][0] > 0
    produced, counted = history["comm/coded_produced_bits"], history["comm/coded_counted_bits"]
    assert len(produced) == 3 and all(0 < p <= c for p, c in zip(produced, counted, strict=True))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["broadcast_encoder.delta=true", "broadcast_encoder.catch_up=anchors", "broadcast_encoder.anchors=0"],
            "broadcast_encoder.anchors=0 is not allowed: use an integer >= 1",
        ),
        (
            ["broadcast_encoder.delta=true", "broadcast_encoder.catch_up=anchors", "broadcast_encoder.anchor_every=0"],
            "broadcast_encoder.anchor_every=0 is not allowed: use an integer >= 1",
        ),
        (
            ["broadcast_encoder.catch_up=anchors"],
            "broadcast_encoder.catch_up=anchors is not allowed without broadcast_encoder.delta=true and "
            "delta_receivers=sampled",
        ),
        (
            [
                "broadcast_encoder.delta=true",
                "broadcast_encoder.delta_receivers=all",
                "broadcast_encoder.catch_up=anchors",
            ],
            "broadcast_encoder.catch_up=anchors is not allowed without broadcast_encoder.delta=true",
        ),
        (
            ["broadcast_encoder.delta=true", "broadcast_encoder.catch_up=anchors"],
            "broadcast_encoder.catch_up=anchors is not allowed with this algorithm",
        ),
    ],
)
def test_anchor_settings_that_cannot_work_fail_in_one_line(compose_config, overrides, message):
    algorithm = "fedavg" if message.endswith("with this algorithm") else "fedavg_core"
    with pytest.raises(ConfigError) as error:
        validate(compose_config([f"algorithm={algorithm}", "broadcast_encoder=uniform", *overrides]))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert user_error(error.value).startswith(message)


def test_a_catch_up_that_is_not_offered_names_the_allowed_ones(compose_config):
    with pytest.raises(Exception) as error:
        compose_config(["broadcast_encoder=uniform", "broadcast_encoder.catch_up=anchor"])
    message = user_error(error.value)
    assert "broadcast_encoder.catch_up" in message and "anchors" in message and "\n" not in message


def test_the_anchor_settings_are_described_only_with_the_anchor_catch_up():
    from fl_sweeps.readable import settings_text

    def node(catch_up: str, delta: bool = True) -> dict:  # the keys in the YAML's order
        return {
            "bits": 2,
            "delta": delta,
            "delta_receivers": "sampled",
            "catch_up": catch_up,
            "anchors": 4,
            "anchor_every": 5,
        }

    assert settings_text(node("anchors")) == "2-bit delta sampled anchors anchors=4 anchor_every=5"
    assert settings_text(node("difference")) == "2-bit delta sampled difference"
    assert settings_text(node("anchors", delta=False)) == "2-bit"
