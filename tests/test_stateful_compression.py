"""Stateful compression on real TFF processes: error feedback's residuals and the delta broadcast's reference model.

Error feedback: over the rounds a client takes part in, what it sent plus its residual equals the sum of its
uncompressed updates (each computed by an uncompressed process from the same model, data and round). Delta
broadcast: a client that skipped rounds rebuilds the server's reference model exactly from the change messages it
is charged for. Both: state per client, empty at the start of every run, same seed same numbers.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from compressor_configs import build_trial, run_settings
from conftest import TINY_LINEAR

from fl_sweeps.compression.catch_up import CatchUpLedger
from fl_sweeps.errors import ConfigError
from fl_sweeps.preflight import user_error
from fl_sweeps.trainer.client_states import ClientStates
from fl_sweeps.validation import validate

# One client a round and a server step of exactly the mean update (SGD, learning rate 1), so the model's change in
# a round is exactly what the one client's message decoded to.
ONE_CLIENT = [
    *TINY_LINEAR,
    "algorithm=fedavg_core",
    "server_optimizer=sgd",
    "server_optimizer.lr=1.0",
    "training.clients_per_round=1",
    "training.rounds=6",
    "data.num_clients=3",
]
FEEDBACK = {
    "topk": ["aggregate_encoder=topk", "aggregate_encoder.fraction=0.05"],
    "sign": ["aggregate_encoder=sign"],
    "powersgd": ["aggregate_encoder=powersgd", "aggregate_encoder.rank=1"],  # the 64x10 kernel as two rank-1 factors
}


@functools.cache
def _feedback_trial(compose_config, name: str, rule: str = "ef14"):
    cfg = compose_config(
        [
            *ONE_CLIENT,
            *FEEDBACK[name],
            "aggregate_encoder.threshold=0",
            "aggregate_encoder.error_feedback=true",
            f"aggregate_encoder.error_feedback_rule={rule}",
        ]
    )
    return cfg, build_trial(cfg)


@functools.cache
def _uncompressed_trial(compose_config):
    cfg = compose_config([*ONE_CLIENT, "aggregate_encoder=none"])
    return build_trial(cfg)


def _flat(weights) -> np.ndarray:
    return np.concatenate([np.ravel(w) for w in weights])


def _rounds_with_plain_updates(compose_config, trial, cfg):
    """Run ``trial`` one client a round; yield (client, what the server added, the client's uncompressed update,
    its state before, its state after), the update from an uncompressed process on the same model, data and round."""
    reference = _uncompressed_trial(compose_config)
    settings = run_settings(cfg)
    built, states = trial.built, ClientStates()
    state = built.initial_state(settings)
    rng = np.random.default_rng(0)
    for round_num in range(1, settings.training.rounds + 1):
        client = [str(rng.choice(trial.data.client_ids))]
        held = states.get(client[0])
        state_before = None if held is None else _flat(held.residual)
        before = built.model_weights(state)
        output = built.next(state, client, round_num, settings, states)
        plain_settings = dataclasses.replace(settings, encoders={})  # the reference's own encoders
        plain_state = reference.built.process.set_model_weights(reference.built.initial_state(plain_settings), before)
        plain = reference.built.next(plain_state, client, round_num, plain_settings, ClientStates())
        start = _flat(before.trainable)
        added = start - _flat(built.model_weights(output.state).trainable)
        update = start - _flat(reference.built.model_weights(plain.state).trainable)
        yield client[0], added, update, state_before, _flat(states[client[0]].residual)
        state = output.state
    assert set(states) <= set(trial.data.client_ids)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FEEDBACK))
def test_what_a_client_sent_plus_its_residual_is_what_it_would_have_sent(compose_config, tff_worker, name):
    cfg, trial = _feedback_trial(compose_config, name)
    sent: dict[str, np.ndarray] = {}
    uncompressed: dict[str, np.ndarray] = {}
    residuals: dict[str, np.ndarray] = {}
    for client, added, update, _, residual in _rounds_with_plain_updates(compose_config, trial, cfg):
        sent[client] = sent.get(client, 0) + added
        uncompressed[client] = uncompressed.get(client, 0) + update
        residuals[client] = residual
    for client, total in uncompressed.items():
        assert np.abs(residuals[client]).max() > 0, "the compressor dropped something"
        np.testing.assert_allclose(sent[client] + residuals[client], total, rtol=1e-4, atol=1e-5)
        # Without the residual the messages miss part of the updates: feedback is what closes the gap.
        assert np.abs(sent[client] - total).max() > 10 * 1e-5


@pytest.mark.slow
def test_ef21_the_server_adds_the_clients_estimate_and_each_round_brings_it_closer(compose_config, tff_worker):
    cfg, trial = _feedback_trial(compose_config, "topk", "ef21")
    rounds = list(_rounds_with_plain_updates(compose_config, trial, cfg))
    for _client, added, update, estimate_before, estimate in rounds:
        np.testing.assert_allclose(added, estimate, rtol=1e-4, atol=1e-6)  # what the server added is g'
        previous = np.zeros_like(update) if estimate_before is None else estimate_before
        # Top-k of u - g keeps its largest part, so g' = g + topk(u - g) is nearer u than g was.
        assert np.linalg.norm(update - estimate) < np.linalg.norm(update - previous)
    assert len({client for client, *_ in rounds}) < len(rounds), "some client took part twice"


@pytest.mark.slow
def test_residuals_are_per_client_empty_at_each_run_and_repeat_bit_for_bit(compose_config, tff_worker):
    cfg, trial = _feedback_trial(compose_config, "topk")
    settings = run_settings(cfg)
    first = list(trial.run(settings))
    sampled = set(trial.client_states)
    second = list(trial.run(settings))  # the same built process: it must start with no residuals
    assert [(r.train_loss, r.aggregate_bits, r.broadcast_bits) for r in first] == [
        (r.train_loss, r.aggregate_bits, r.broadcast_bits) for r in second
    ]
    assert set(trial.client_states) == sampled
    parameters = sum(np.size(w) for w in trial.model_weights(trial.final_state).trainable)
    assert second[-1].client_state_bytes == len(sampled) * parameters * 4  # one float32 residual per client
    assert second[0].client_state_bytes == parameters * 4  # after round 1: the one client sampled


@pytest.mark.parametrize("rule", ["ef14", "ef21"])
def test_a_client_whose_update_the_server_ignores_keeps_its_state(compose_config, tff_worker, rule):
    import tensorflow_federated as tff
    from hydra.utils import instantiate

    from fl_sweeps.compression.error_feedback import build_error_feedback_step

    cfg = compose_config(
        [
            *ONE_CLIENT,
            *FEEDBACK["topk"],
            "aggregate_encoder.threshold=0",
            "aggregate_encoder.error_feedback=true",
            f"aggregate_encoder.error_feedback_rule={rule}",
        ]
    )
    update_type = tff.StructWithPythonType([tff.TensorType(np.float32, [40]), tff.TensorType(np.float32, [5, 4])], list)
    encoder = instantiate(cfg.aggregate_encoder)
    feedback = build_error_feedback_step(update_type=update_type, encoder=encoder)
    encoder_states = feedback.initial_encoder_states()

    def step(update, state, weight):
        return feedback.compress(update, state, weight, encoder_states)

    rng = np.random.default_rng(0)
    update = [rng.normal(size=[40]).astype(np.float32), rng.normal(size=[5, 4]).astype(np.float32)]
    state = [rng.normal(size=[40]).astype(np.float32), rng.normal(size=[5, 4]).astype(np.float32)]
    _, ignored_state, ignored_bits = step(update, state, np.float32(0.0))  # a non-finite update: weight 0
    for kept, before in zip(ignored_state, state, strict=True):
        np.testing.assert_array_equal(kept, before)
    sent, new_state, bits = step(update, state, np.float32(3.0))
    assert bits == ignored_bits > 0  # the message was sent either way
    expected = [u + s - m for u, s, m in zip(update, state, sent, strict=True)] if rule == "ef14" else list(sent)
    for got, want in zip(new_state, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert any(np.abs(n - s).max() > 0 for n, s in zip(new_state, state, strict=True))


def _delta_trial(compose_config, overrides: list[str]):
    cfg = compose_config(
        [*TINY_LINEAR, "broadcast_encoder.threshold=0", "broadcast_encoder.delta=true", "training.rounds=6", *overrides]
    )
    return cfg, build_trial(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["broadcast_encoder=uniform", "broadcast_encoder.bits=2"],
        ["broadcast_encoder=topk", "broadcast_encoder.fraction=0.1", "algorithm=fedavg_core"],
    ],
    ids=["uniform-fedavg", "topk-fedavg_core"],
)
def test_a_client_that_skipped_rounds_rebuilds_the_reference_from_the_counted_changes(
    compose_config, tff_worker, overrides
):
    cfg, trial = _delta_trial(compose_config, [*overrides, "data.num_clients=6", "training.clients_per_round=2"])
    settings = run_settings(cfg)
    built, states = trial.built, ClientStates()
    state = built.initial_state(settings)
    rng = np.random.default_rng(1)
    references, changes, change_bits, held = {}, {}, {}, {}
    full_bits = 32 * trial.num_parameters
    for round_num in range(1, settings.training.rounds + 1):
        clients = [str(c) for c in rng.choice(trial.data.client_ids, size=2, replace=False)]
        model_before = _flat(built.model_weights(state).trainable)
        output = built.next(state, clients, round_num, settings, states)
        state = output.state
        distributor = state.distributor
        references[round_num] = [np.asarray(w) for w in [*distributor["reference"].trainable]]
        changes[round_num] = [np.asarray(w) for w in [*distributor["change"].trainable]]
        change_bits[round_num] = int(distributor["change_bits"])
        expected_bits = 0
        for client in clients:
            if client not in held:
                expected_bits += full_bits
            else:
                rebuilt = [w.copy() for w in references[held[client]]]
                for missed in range(held[client] + 1, round_num + 1):
                    rebuilt = [w + c for w, c in zip(rebuilt, changes[missed], strict=True)]
                for w, r in zip(rebuilt, references[round_num], strict=True):
                    np.testing.assert_array_equal(w, r)  # exactly, not approximately
                expected_bits += min(full_bits, sum(change_bits[s] for s in range(held[client] + 1, round_num + 1)))
            held[client] = round_num
        assert output.metrics["distributor"]["bits_server_to_clients"] == expected_bits
        # The reference is the model sent whole in round 1; then top-k (a contraction: it sends the largest part)
        # brings it closer to the server's model each round. Min-max 2-bit quantization is no contraction (zero may
        # not be a level), so only the exact rebuild above holds for it.
        gap = np.linalg.norm(model_before - _flat(references[round_num]))
        if round_num == 1:
            assert gap == 0
        elif "broadcast_encoder=topk" in overrides:
            assert gap < np.linalg.norm(model_before - _flat(references[round_num - 1]))
    assert 0 < change_bits[2] < full_bits // 4
    assert {c: s.held_round for c, s in states.items()} == held


@pytest.mark.slow
def test_delta_broadcast_costs_the_changes_when_every_client_is_sampled_every_round(compose_config, tff_worker):
    cfg, trial = _delta_trial(
        compose_config,
        ["broadcast_encoder=uniform", "broadcast_encoder.bits=2", "data.num_clients=3", "training.clients_per_round=3"],
    )
    records = list(trial.run(run_settings(cfg)))
    again = list(trial.run(run_settings(cfg)))
    assert [dataclasses.replace(r, seconds=0) for r in records] == [dataclasses.replace(a, seconds=0) for a in again]
    assert records[0].broadcast_bits == 3 * 32 * trial.num_parameters  # round 1: the model itself, whole
    assert trial.bits_per_client.broadcast == 32 * trial.num_parameters  # planned: the most a client can cost
    later = [r.broadcast_bits for r in records[1:]]
    assert all(0 < bits < records[0].broadcast_bits / 8 for bits in later)  # 2-bit changes of every tensor


@pytest.mark.slow
def test_cross_silo_delta_broadcast_sends_every_change_to_every_client(compose_config, tff_worker):
    cfg, trial = _delta_trial(
        compose_config,
        [
            "broadcast_encoder=uniform",
            "broadcast_encoder.bits=2",
            "broadcast_encoder.delta_receivers=all",
            "data.num_clients=6",
            "training.clients_per_round=2",
        ],
    )
    settings = run_settings(cfg)
    built, states = trial.built, ClientStates()
    state = built.initial_state(settings)
    for round_num, clients in enumerate([["0", "1"], ["2", "3"], ["0", "5"]], start=1):
        clients = [trial.data.client_ids[int(c)] for c in clients]
        output = built.next(state, clients, round_num, settings, states)
        state = output.state
        change_bits = int(state.distributor["change_bits"])
        expected = 6 * (32 * trial.num_parameters if round_num == 1 else change_bits)  # all six clients
        assert output.metrics["distributor"]["bits_server_to_clients"] == expected
    assert {s.held_round for s in states.values()} == {3} and len(states) == 6


def test_the_ledger_charges_the_whole_model_or_the_missed_changes_whichever_is_fewer():
    ledger, states = CatchUpLedger(), ClientStates()
    held = states.held_rounds()
    assert ledger.charge(held, ["a", "b"], 1, change_bits=7, full_model_bits=100) == 200
    assert ledger.charge(held, ["a"], 2, change_bits=10, full_model_bits=100) == 10
    assert ledger.charge(held, ["b", "c"], 3, change_bits=20, full_model_bits=100) == 30 + 100
    for round_num in range(4, 12):
        ledger.charge(held, [], round_num, change_bits=20, full_model_bits=100)
    assert ledger.charge(held, ["a"], 12, change_bits=20, full_model_bits=100) == 100  # 200 missed > the model
    assert {c: s.held_round for c, s in states.items()} == {"a": 12, "b": 3, "c": 3}
    with pytest.raises(ValueError, match="in order"):
        ledger.charge(held, ["a"], 14, change_bits=1, full_model_bits=100)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["algorithm=fedavg_core", "aggregate_encoder=none", "aggregate_encoder.error_feedback=true"],
            "aggregate_encoder.error_feedback=true is not allowed for aggregate_encoder=none",
        ),
        (
            ["aggregate_encoder=uniform", "aggregate_encoder.error_feedback=true"],
            "aggregate_encoder.error_feedback=true is not allowed with this algorithm",
        ),
        (
            ["broadcast_encoder=topk", "broadcast_encoder.delta=false"],
            "broadcast_encoder.delta=false is not allowed for broadcast_encoder=topk",
        ),
        (
            ["broadcast_encoder=uniform", "broadcast_encoder.delta_receivers=all"],
            "broadcast_encoder.delta_receivers=all is not allowed with broadcast_encoder.delta=false",
        ),
        (
            ["algorithm=fedavg_core", "broadcast_encoder=uniform", "broadcast_encoder.catch_up=difference"],
            "broadcast_encoder.catch_up=difference is not allowed without broadcast_encoder.delta=true",
        ),
        (
            [
                "algorithm=fedavg_core",
                "broadcast_encoder=uniform",
                "broadcast_encoder.delta=true",
                "broadcast_encoder.delta_receivers=all",
                "broadcast_encoder.catch_up=difference",
            ],
            "broadcast_encoder.catch_up=difference is not allowed without broadcast_encoder.delta=true",
        ),
        (
            ["broadcast_encoder=uniform", "broadcast_encoder.delta=true", "broadcast_encoder.catch_up=difference"],
            "broadcast_encoder.catch_up=difference is not allowed with this algorithm",
        ),
    ],
)
def test_stateful_compression_that_cannot_work_fails_in_one_line(compose_config, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert user_error(error.value).startswith(message)


def test_a_misspelt_stateful_key_names_the_options_keys(compose_config):
    with pytest.raises(Exception) as error:
        compose_config(["broadcast_encoder=uniform", "broadcast_encoder.error_feedback=true"])
    message = user_error(error.value)
    assert "broadcast_encoder.error_feedback" in message and "delta" in message and "\n" not in message


# The difference catch-up: one message a sampled client, the compressed difference from the model it holds.
DIFFERENCE = [
    *TINY_LINEAR,
    "algorithm=fedavg_core",
    "broadcast_encoder=hadamard",
    "broadcast_encoder.bits=3",  # 3: with 2 bits the linear model's small tensors are not always brought nearer
    "broadcast_encoder.rounding=stochastic",
    "broadcast_encoder.threshold=0",
    "broadcast_encoder.delta=true",
    "broadcast_encoder.catch_up=difference",
    "training.rounds=6",
    "data.num_clients=6",
    "training.clients_per_round=2",
]


@functools.cache
def _difference_trial(compose_config):
    cfg = compose_config(DIFFERENCE)
    validate(cfg)
    return cfg, build_trial(cfg)


def _encode_as_the_server(cfg, encoder_states, model, held):
    """What the server sends a client holding ``held`` when its model is ``model``, and what that decodes to:
    encoded here with the option's own encoders, outside the process, from the server's encoder states."""
    import tensorflow as tf
    from hydra.utils import instantiate

    from fl_sweeps.compression.broadcast import simple_tensor_encoders
    from fl_sweeps.compression.measure import message_bits

    flat_model, flat_held = tf.nest.flatten(model), tf.nest.flatten(held)
    specs = [tf.TensorSpec(np.shape(w), tf.float32) for w in flat_model]
    encoders = simple_tensor_encoders(instantiate(cfg.broadcast_encoder), specs)
    message = [
        e.encode(tf.constant(w - h), s)[0]
        for e, w, h, s in zip(encoders, flat_model, flat_held, encoder_states, strict=True)
    ]
    rebuilt = [h + e.decode(m).numpy() for e, h, m in zip(encoders, flat_held, message, strict=True)]
    return rebuilt, int(message_bits(message))


@pytest.mark.slow
def test_difference_catch_up_sends_one_counted_message_the_server_can_rebuild(compose_config, tff_worker):
    from fl_sweeps.compression.bits import SEED_BITS

    cfg, trial = _difference_trial(compose_config)
    settings = run_settings(cfg)
    built, states = trial.built, ClientStates()
    state = built.initial_state(settings)
    initial = built.model_weights(state)
    server_copy = {}  # the model the server records for each client, rebuilt from the messages alone
    rng = np.random.default_rng(3)
    gaps = []
    for round_num in range(1, settings.training.rounds + 1):
        clients = [str(c) for c in rng.choice(trial.data.client_ids, size=2, replace=False)]
        weights = built.model_weights(state)
        model = [np.asarray(w) for w in [*weights.trainable, *weights.non_trainable]]
        encoder_states = state.distributor
        output = built.next(state, clients, round_num, settings, states)
        expected_bits = 0
        for client in clients:
            held = server_copy.get(client, [*initial.trainable, *initial.non_trainable])
            rebuilt, bits = _encode_as_the_server(cfg, encoder_states, model, held)
            expected_bits += bits + (SEED_BITS if client not in server_copy else 0)
            got = [*states[client].held_model.trainable, *states[client].held_model.non_trainable]
            for g, r in zip(got, rebuilt, strict=True):
                np.testing.assert_array_equal(g, r)  # the client holds exactly the server's record of it
            error, gap = np.linalg.norm(_flat(got) - _flat(model)), np.linalg.norm(_flat(model) - _flat(held))
            if gap == 0:  # round 1: the client holds the model already, and the zero difference keeps it
                assert error == 0
            else:
                gaps.append(error / gap)
            server_copy[client] = rebuilt
        assert output.metrics["distributor"]["bits_server_to_clients"] == expected_bits
        state = output.state
    per_message = trial.bits_per_client.broadcast - SEED_BITS
    assert 0 < per_message < 32 * trial.num_parameters / 4  # 3-bit symbols, rows padded, a scale and seed a tensor
    assert gaps and max(gaps) < 1, "each message brings the client nearer the server's model"
    assert len(server_copy) < 2 * settings.training.rounds, "some client was sampled twice"


@pytest.mark.slow
def test_difference_catch_up_starts_empty_each_run_and_repeats_bit_for_bit(compose_config, tff_worker):
    cfg, trial = _difference_trial(compose_config)
    settings = run_settings(cfg)
    first = list(trial.run(settings))
    held = {cid: _flat(s.held_model.trainable) for cid, s in trial.client_states.items()}
    second = list(trial.run(settings))
    assert [dataclasses.replace(r, seconds=0) for r in first] == [dataclasses.replace(r, seconds=0) for r in second]
    assert set(trial.client_states) == set(held)
    for cid, model in held.items():
        np.testing.assert_array_equal(_flat(trial.client_states[cid].held_model.trainable), model)
    # Round 1 sends two first messages (the seed each); the state is two held models, then one more per new client.
    assert first[0].broadcast_bits == 2 * trial.bits_per_client.broadcast
    assert first[0].client_state_bytes == 2 * trial.num_parameters * 4
    assert first[-1].client_state_bytes == len(held) * trial.num_parameters * 4
