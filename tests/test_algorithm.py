"""The ``algorithm`` group: hand-written FedAvg on the Federated Core equals TFF's, clipping bounds the update.

Real TFF processes built by the real trainer, a real MLflow sqlite store and a real Optuna study. Each process is
built once per module (``trials``) and the runs the tests compare are cached with it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import optuna
import pytest
from cli_inprocess import fl_sweep
from conftest import TINY, worker_pids
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from test_bits import _crossing_bits

from fl_sweeps import experiment
from fl_sweeps.algorithms.fedavg import build_compressed_fed_avg
from fl_sweeps.algorithms.fedavg_core import build_fedavg_core
from fl_sweeps.errors import ConfigError
from fl_sweeps.sweep.search_space import parse_search_space
from fl_sweeps.trainer import FederatedTrial, RunSettings, TrainingSettings
from fl_sweeps.validation import validate
from fl_sweeps.workbench import Workbench

ALGORITHMS = {"fedavg": build_compressed_fed_avg, "fedavg_core": build_fedavg_core}
BASE = [*TINY, "server_optimizer=sgdm"]
COMPRESSION = {
    "uncompressed": ["broadcast_encoder=none", "aggregate_encoder=none"],
    # Thresholds below the tiny CNN's two large kernels (800 and 512 values): those are really quantized.
    "quantized": [
        "broadcast_encoder=uniform",
        "broadcast_encoder.bits=6",
        "broadcast_encoder.threshold=100",
        "aggregate_encoder=uniform",
        "aggregate_encoder.bits=4",
        "aggregate_encoder.threshold=100",
    ],
}
# Learning rates other than those the optimizers are built with (sgd 0.1; sgdm 0.02, momentum 0.9), so the runs
# only match if both processes take them from ``set_hparams``. Server momentum carries optimizer state over rounds.
SETTINGS = RunSettings(
    training=TrainingSettings(rounds=3, clients_per_round=3, local_epochs=1, batch_size=32, shuffle_buffer=100),
    seed=3,
    eval_every=1,
    eval_split="validation",
    client_hparams={"learning_rate": 0.3},
    server_hparams={"learning_rate": 1.0, "momentum": 0.5},
)
ONE_ROUND = RunSettings(
    training=TrainingSettings(rounds=1, clients_per_round=3, local_epochs=1, batch_size=32, shuffle_buffer=100),
    seed=3,
    eval_every=1,
    eval_split="validation",
    client_hparams={"learning_rate": 0.3},
    server_hparams={"learning_rate": 1.0, "momentum": 0.5},
)
# Both processes run the same TensorFlow ops in the same order on the same inputs, so they agree bit for bit (the
# measured difference is 0.0). The tolerance only allows for a few float32 ulps (eps 1.2e-7) in case a kernel sums
# in another order; a real difference in the algorithm (weighting, delta sign, a learning rate not applied, one
# quantization level) moves weights by >= 1e-3.
RUN_SETTINGS = {"three rounds": SETTINGS, "one round": ONE_ROUND}
RTOL, ATOL = 1e-6, 1e-7
CLIP_NORM = 1e-3


@pytest.fixture(scope="module")
def trials(compose_config, workbench: Workbench) -> Callable[[str, str], FederatedTrial]:
    """Build (once, afresh: no part shared) the trial of an algorithm and a compression, as ``experiment`` does."""

    @functools.cache
    def build(algorithm: str, compression: str) -> FederatedTrial:
        cfg = compose_config([*BASE, f"algorithm={algorithm}", *COMPRESSION[compression], "reuse_built_process=false"])
        validate(cfg)
        return workbench.build_trial(cfg)

    return build


@pytest.fixture(scope="module")
def runs(trials) -> Callable[[str, str, str], tuple[list, list[np.ndarray]]]:
    """(round records, final trainable weights) of a built trial run with ``RUN_SETTINGS[settings]``, once each."""

    @functools.cache
    def run(algorithm: str, compression: str, settings: str) -> tuple[list, list[np.ndarray]]:
        trial = trials(algorithm, compression)
        records = list(trial.run(RUN_SETTINGS[settings]))
        return records, _trainable(trial, trial.final_state)

    return run


def _trainable(trial: FederatedTrial, state) -> list[np.ndarray]:
    return [np.asarray(w) for w in trial.process.get_model_weights(state).trainable]


def _norm(tensors: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(t.astype(np.float64)))) for t in tensors))


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["uncompressed", "quantized"])
def test_fedavg_core_equals_tff_fedavg(trials, runs, compression):
    tff_records, tff_weights = runs("fedavg", compression, "three rounds")
    core_records, core_weights = runs("fedavg_core", compression, "three rounds")

    start = _trainable(trials("fedavg", compression), trials("fedavg", compression).initial_state(SETTINGS))
    assert _norm([w - s for w, s in zip(tff_weights, start, strict=True)]) > 1e-2  # it did train
    for tff_w, core_w in zip(tff_weights, core_weights, strict=True):
        np.testing.assert_allclose(core_w, tff_w, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        [r.train_loss for r in core_records], [r.train_loss for r in tff_records], rtol=RTOL, atol=ATOL
    )
    assert [r.cumulative_bits for r in core_records] == [r.cumulative_bits for r in tff_records]
    if compression == "quantized":  # quantization changed the training, identically in both
        _, uncompressed = runs("fedavg", "uncompressed", "three rounds")
        assert max(float(np.max(np.abs(q - u))) for q, u in zip(tff_weights, uncompressed, strict=True)) > 1e-4


@pytest.mark.parametrize("algorithm", ["fedavg", "fedavg_core"])
def test_model_weights_of_a_trained_state_are_the_workers(trials, runs, algorithm):
    """The weights the trainer checks and evaluates each round are those ``get_model_weights`` returns, read from
    the state ``next`` returned (both processes name them ``global_model_weights``: no worker call)."""
    runs(algorithm, "quantized", "one round")
    trial = trials(algorithm, "quantized")
    state = trial.final_state
    fetched = trial.process.get_model_weights(state)
    read = trial.model_weights(state)
    assert read is state.global_model_weights
    mine, workers = [*read.trainable, *read.non_trainable], [*fetched.trainable, *fetched.non_trainable]
    for ours, theirs in zip(mine, workers, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert len(read.trainable) == len(fetched.trainable) > 0
    start = trial.model_weights(trial.initial_state(ONE_ROUND))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(read.trainable, start.trainable, strict=True)) > 1e-4


@pytest.mark.slow
def test_same_messages_and_hparams_layout(trials):
    """The same bits cross placements in both processes, and their hyperparameters have the same layout."""
    tff_trial, core_trial = trials("fedavg", "quantized"), trials("fedavg_core", "quantized")
    assert _crossing_bits(core_trial.process.next) == _crossing_bits(tff_trial.process.next)
    hparams = [t.process.get_hparams(t.initial_state(SETTINGS)) for t in (tff_trial, core_trial)]
    assert {k: set(v) for k, v in hparams[0].items()} == {k: set(v) for k, v in hparams[1].items()}
    assert float(hparams[1]["client_work"]["learning_rate"]) == pytest.approx(0.3)
    assert float(hparams[1]["finalizer"]["momentum"]) == pytest.approx(0.5)


@pytest.mark.slow
def test_clipping_bounds_the_update_and_the_run_is_recorded(compose_config, workbench, tracking_uri, trials, runs):
    """One round with a tiny clip norm: every local step moves at most lr × clip_norm, so the server's step is at
    most server lr × client lr × steps × clip_norm (server momentum starts at zero), far below the unclipped one."""
    cfg = compose_config(
        [
            *BASE,
            *COMPRESSION["uncompressed"],
            "algorithm=fedavg_core",
            f"algorithm.clip_norm={CLIP_NORM}",
            "training.rounds=1",
            "client_optimizer.lr=0.3",
            "server_optimizer.lr=1.0",
            "server_optimizer.momentum=0.5",
            f"seed={ONE_ROUND.seed}",
        ],
        tracking_uri,
    )
    run_id = experiment.run_trial(cfg, show_progress=False, workbench=workbench).run_id
    trial = workbench.forget(cfg)  # built by run_trial; not kept for other tests
    start = _trainable(trial, trial.initial_state(ONE_ROUND))
    clipped = _norm([w - s for w, s in zip(_trainable(trial, trial.final_state), start, strict=True)])
    steps = max(math.ceil(len(arrays) / ONE_ROUND.training.batch_size) for arrays in trial.data.train.values())
    bound = 1.0 * 0.3 * steps * CLIP_NORM
    _, unclipped_weights = runs("fedavg_core", "uncompressed", "one round")
    unclipped = _norm([w - s for w, s in zip(unclipped_weights, start, strict=True)])
    assert 0 < clipped <= bound * (1 + 1e-5)
    assert unclipped > 10 * bound

    run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["algorithm"] == "build_fedavg_core"  # composed without Hydra's runtime: named by its target
    assert float(params["algorithm.clip_norm"]) == CLIP_NORM
    metrics = run.data.metrics
    assert {"train/loss", "train/accuracy", "eval/accuracy", "comm/cumulative_bits", "final/total_bits"} <= set(metrics)
    assert metrics["final/total_bits"] == trials("fedavg", "uncompressed").bits_per_client.for_clients(3).total


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_composes_and_instantiates(compose_config, algorithm):
    cfg = compose_config([f"algorithm={algorithm}"])
    validate(cfg)
    builder = instantiate(cfg.algorithm)
    assert isinstance(builder, functools.partial) and builder.func is ALGORITHMS[algorithm]


def test_default_algorithm_is_tff_fedavg(compose_config):
    assert instantiate(compose_config().algorithm).func is build_compressed_fed_avg


def test_clip_norm_is_bound_into_the_builder(compose_config):
    builder = instantiate(compose_config(["algorithm=fedavg_core", "algorithm.clip_norm=2.5"]).algorithm)
    assert builder.keywords == {"clip_norm": 2.5}
    assert instantiate(compose_config(["algorithm=fedavg_core"]).algorithm).keywords == {"clip_norm": None}


@pytest.mark.parametrize("value", ["-1", "0", "inf"])
def test_bad_clip_norm_names_the_key(compose_config, value):
    cfg = compose_config(["algorithm=fedavg_core", f"algorithm.clip_norm={value}"])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value) == (
        f"algorithm.clip_norm={float(value)} is not allowed: use null (no clipping) or a number > 0"
    )


def test_clip_norm_only_exists_for_fedavg_core(compose_config):
    with pytest.raises(ConfigCompositionException):
        compose_config(["algorithm=fedavg", "algorithm.clip_norm=1.0"])


def test_cli_rejects_a_negative_clip_norm_in_one_line(tmp_path):
    before = worker_pids()
    process = fl_sweep(
        tmp_path,
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "hydra.run.dir=hydra",
        "algorithm=fedavg_core",
        "algorithm.clip_norm=-1",
    )
    assert process.returncode != 0
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert lines == ["fl-sweep: error: algorithm.clip_norm=-1.0 is not allowed: use null (no clipping) or a number > 0"]
    assert not (tmp_path / "mlflow.db").exists()
    assert worker_pids() <= before


@pytest.mark.parametrize("sweep", ["algorithm=fedavg,fedavg_core", "algorithm=choice(fedavg_core,fedavg)"])
def test_algorithm_is_swept_like_any_group(compose_config, sweep):
    """The sweeper's parsing of a sweep override gives a categorical over both options; an Optuna study samples
    both, and each sampled override composes into a trial with its own algorithm and its own built process."""
    space = parse_search_space([sweep, "client_optimizer.lr=interval(0.05,0.5)"])
    distributions = space.distributions
    assert not space.fixed and set(distributions["algorithm"].choices) == set(ALGORITHMS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(20):  # P(one option missed in 20 draws) = 2**-19
        trial = study.ask({"algorithm": distributions["algorithm"]})
        algorithm = trial.params["algorithm"]
        study.tell(trial, 0.0)
        if algorithm not in seen:
            cfg = compose_config([f"algorithm={algorithm}", *TINY])
            validate(cfg)
            assert instantiate(cfg.algorithm).func is ALGORITHMS[algorithm]
            seen[algorithm] = Workbench.structure_key(cfg)
    assert set(seen) == set(ALGORITHMS)
    assert seen["fedavg"] != seen["fedavg_core"]  # a sweep never reuses one algorithm's process for the other
