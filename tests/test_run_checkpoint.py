"""A run saved after a round and resumed in its place gives the numbers of a run that never stopped.

The record of issue 19 takes hours a seed, longer than a session; ``benchmarks/bits_to_accuracy.py`` saves a
``RunCheckpoint`` after every round and goes on from it. Everything a round reads must be in it: the process state,
the client sampler, the clients' residuals, held rounds or held models, the catch-up ledger, and the records an adaptive
schedule reads.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from compressor_configs import build_trial, run_settings
from conftest import TINY

from fl_sweeps.trainer.client_states import ClientStates
from fl_sweeps.trainer.run_checkpoint import RunCheckpoint

pytestmark = pytest.mark.slow

# Every kind of state a run carries: error-feedback residuals, a delta broadcast (held rounds, catch-up ledger)
# and a schedule whose value changes after the checkpoint.
STATEFUL = [
    *TINY,
    "training.rounds=4",
    "algorithm=fedavg_core",
    "broadcast_encoder=topk",
    "broadcast_encoder.threshold=0",
    "aggregate_encoder=topk",
    "aggregate_encoder.threshold=0",
    "aggregate_encoder.error_feedback=true",
    "schedule=steps",
    "schedule.setting=fraction",
    "schedule.values=[0.1,0.3]",
    "schedule.from_rounds=[1,4]",
]


def _numbers(records) -> list[dict]:
    return [{k: v for k, v in dataclasses.asdict(r).items() if k != "seconds"} for r in records]


# The same with the difference catch-up: each client's held model instead of held rounds and the ledger.
HELD_MODELS = [*STATEFUL, "broadcast_encoder.catch_up=difference"]
# And with the anchor catch-up: each client's anchor and its number, the server's anchors in the process state.
HELD_ANCHORS = [
    *STATEFUL,
    "broadcast_encoder.catch_up=anchors",
    "broadcast_encoder.anchors=2",
    "broadcast_encoder.anchor_every=1",
]


@pytest.mark.parametrize(
    "overrides", [STATEFUL, HELD_MODELS, HELD_ANCHORS], ids=["held-rounds", "held-models", "held-anchors"]
)
def test_resumed_run_equals_the_run_that_never_stopped(compose_config, tmp_path, overrides):
    cfg = compose_config(overrides)
    trial = build_trial(cfg)
    settings = run_settings(cfg)
    straight = list(trial.run(settings))
    straight_weights = trial.model_weights(trial.final_state).trainable
    straight_residuals = {cid: s.residual for cid, s in trial.client_states.items()}
    straight_held = {cid: s.held_model for cid, s in trial.client_states.items()}

    path = tmp_path / "run.ckpt"
    first = trial.run(settings)
    before = [next(first), next(first)]
    trial.checkpoint.tag = "stateful"
    trial.checkpoint.save(path)
    first.close()  # the session ends here
    tf.keras.utils.set_random_seed(settings.seed + 1)  # a new Python process has other global seeds

    resumed_from = RunCheckpoint.load(path, tag="stateful")
    assert resumed_from.round == 2
    saved = resumed_from.client_states.values()
    if overrides is not STATEFUL:
        assert all(s.held_model is not None and s.held_round is None for s in saved)
        assert all((s.held_anchor is not None) is (overrides is HELD_ANCHORS) for s in saved)
    else:
        assert 2 in [s.held_round for s in saved]
    assert all(s.residual is not None for s in saved)
    after = list(trial.run(settings, resume=resumed_from))

    assert [r.round for r in after] == [3, 4]
    assert _numbers(before + after) == _numbers(straight)
    assert after[-1].scheduled == {"aggregate_encoder.fraction": 0.3}  # the schedule moved after the checkpoint
    assert straight[-1].aggregate_bits > straight[0].aggregate_bits
    for got, want in zip(trial.model_weights(trial.final_state).trainable, straight_weights, strict=True):
        np.testing.assert_array_equal(got, want)
    assert set(trial.client_states) == set(straight_residuals)
    for cid, residual in straight_residuals.items():
        for got, want in zip(trial.client_states[cid].residual, residual, strict=True):
            np.testing.assert_array_equal(got, want)
    for cid, held in straight_held.items():
        if held is not None:
            for got, want in zip(trial.client_states[cid].held_model.trainable, held.trainable, strict=True):
                np.testing.assert_array_equal(got, want)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    assert RunCheckpoint.load(path, tag="a") is None
    RunCheckpoint(2, {"w": np.ones(3)}, np.random.default_rng(0), ClientStates(), 10, tag="a").save(path)
    assert RunCheckpoint.load(path, tag="a").cumulative_bits == 10
    with pytest.raises(ValueError, match="saved by another run"):
        RunCheckpoint.load(path, tag="b")
    assert not path.with_name(path.name + ".partial").exists()
