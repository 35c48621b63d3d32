"""Numeric settings as inputs of the built process (docs/compressors.md, "Settings that need no new process").

A trial that differs from a kept one only in ``bits``, ``fraction`` or ``levels`` runs on the kept process, without
building any part, and gives the same numbers as a process built afresh for its own values; the setting takes
effect (other bits than the first trial's).
"""

from __future__ import annotations

import numpy as np
import pytest
from compressor_configs import build_trial, run_settings
from conftest import TINY, TINY_LINEAR
from omegaconf import OmegaConf

from fl_sweeps.workbench import Workbench

pytestmark = pytest.mark.slow

BOTH_COMPRESSED = ["broadcast_encoder.threshold=0", "aggregate_encoder.threshold=0"]
# Case: (the option overrides, {setting: (first trial's value, second trial's value)}).
CASES = {
    "uniform": (
        ["broadcast_encoder=uniform", "aggregate_encoder=uniform", *BOTH_COMPRESSED],
        {"broadcast_encoder.bits": (8, 3), "aggregate_encoder.bits": (8, 2)},
    ),
    "hadamard+qsgd": (
        ["broadcast_encoder=hadamard", "aggregate_encoder=qsgd", *BOTH_COMPRESSED],
        {"broadcast_encoder.bits": (4, 7), "aggregate_encoder.levels": (4, 1)},
    ),
    "nonuniform+topk_uniform": (
        ["broadcast_encoder=nonuniform", "aggregate_encoder=topk_uniform", *BOTH_COMPRESSED],
        {"broadcast_encoder.bits": (4, 2), "aggregate_encoder.bits": (4, 3)},  # top-k's fraction here needs a build
    ),
    "randk, entropy coded uniform": (
        ["broadcast_encoder=uniform", "broadcast_encoder.entropy_coding=true", "aggregate_encoder=randk"]
        + BOTH_COMPRESSED,
        {"broadcast_encoder.bits": (8, 5), "aggregate_encoder.fraction": (0.2, 0.05)},
    ),
    "topk with error feedback, delta broadcast": (
        [
            "algorithm=fedavg_core",
            "broadcast_encoder=topk",
            "aggregate_encoder=topk",
            "aggregate_encoder.error_feedback=true",
            *BOTH_COMPRESSED,
        ],
        {"broadcast_encoder.fraction": (0.1, 0.4), "aggregate_encoder.fraction": (0.1, 0.02)},
    ),
}


def _with(cfg, values: dict) -> object:
    changed = OmegaConf.to_container(cfg)
    changed = OmegaConf.create(changed)
    for key, value in values.items():
        OmegaConf.update(changed, key, value)
    return changed


def _history(trial, settings) -> list[tuple]:
    return [(r.train_loss, r.eval_loss, r.broadcast_bits, r.aggregate_bits) for r in trial.run(settings)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_trial_differing_in_settings_only_runs_on_the_kept_process(compose_config, tff_worker, case):
    overrides, settings = CASES[case]
    base = compose_config([*TINY_LINEAR, "training.rounds=2", *overrides])
    first_cfg = _with(base, {key: first for key, (first, _) in settings.items()})
    second_cfg = _with(base, {key: second for key, (_, second) in settings.items()})
    workbench = Workbench()

    first = workbench.build_trial(first_cfg)
    first_history = _history(first, Workbench.run_settings(first_cfg))
    built_parts = workbench.parts.built
    second = workbench.build_trial(second_cfg)
    reused = _history(second, Workbench.run_settings(second_cfg))
    fresh_trial = build_trial(second_cfg)
    fresh = _history(fresh_trial, run_settings(second_cfg))

    assert second is first and workbench.parts.built == built_parts  # nothing built for the second trial
    assert reused == fresh
    for a, b in zip(
        second.model_weights(second.final_state).trainable,
        fresh_trial.model_weights(fresh_trial.final_state).trainable,
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert [h[2:] for h in reused] != [h[2:] for h in first_history]  # the new settings took effect
    workbench.release()


def test_the_fraction_of_a_sparsifier_that_other_stages_follow_needs_a_build(compose_config):
    """``topk_uniform``'s quantizer and packer decode a static number of values: its ``fraction`` is traced."""
    base = compose_config([*TINY, "aggregate_encoder=topk_uniform"])
    keys = {Workbench.structure_key(_with(base, {"aggregate_encoder.fraction": f})) for f in (0.1, 0.2)}
    same = {Workbench.structure_key(_with(base, {"aggregate_encoder.bits": b})) for b in (2, 6)}
    assert len(keys) == 2 and len(same) == 1
