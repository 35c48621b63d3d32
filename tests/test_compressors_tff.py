"""Every compressor option on real TFF processes (tiny model): bits measured inside the computation equal the
formulas, in both directions where the option is allowed; random options repeat bit for bit, reused or rebuilt."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from compressor_configs import aggregation_only, build_trial, option_names, run_settings
from compressor_formulas import BUILT_IN_OPTIONS, formula
from conftest import TINY, TINY_LINEAR
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fl_sweeps.cli import config_dir
from fl_sweeps.compression.bits import WEIGHT_BITS
from fl_sweeps.trainer import FederatedTrial, RunSettings

OPTIONS = option_names("aggregate_encoder")
# Every random option in a trial, each direction where it is allowed (trial name: overrides).
RANDOM_TRIALS = {
    "uniform+randk": ["broadcast_encoder=uniform", "broadcast_encoder.rounding=stochastic", "aggregate_encoder=randk"],
    "qsgd+terngrad": ["broadcast_encoder=qsgd", "broadcast_encoder.levels=64", "aggregate_encoder=terngrad"],
    "drive+rotated_topk": ["broadcast_encoder=drive", "aggregate_encoder=rotated_topk"],
    "hadamard+qsgd": ["broadcast_encoder=hadamard", "broadcast_encoder.rounding=stochastic", "aggregate_encoder=qsgd"],
    "terngrad+uniform": ["broadcast_encoder=terngrad", "aggregate_encoder.rounding=stochastic"],
    "none+hadamard": ["aggregate_encoder=hadamard", "aggregate_encoder.rounding=stochastic"],
    "none+drive": ["aggregate_encoder=drive"],
}


def _tensor_sizes(trial: FederatedTrial, cfg) -> tuple[list[int], list[int]]:
    """Element counts of the model's (trainable + non-trainable, trainable) tensors, from a fresh Keras model."""
    model = instantiate(cfg.model)(trial.data.input_shape, trial.data.num_classes)
    trainable = [int(np.prod(w.shape)) for w in model.trainable_weights]
    return trainable + [int(np.prod(w.shape)) for w in model.non_trainable_weights], trainable


def _overrides(name: str) -> list[str]:
    """The option on the aggregation, and on the broadcast where allowed, compressing every tensor."""
    overrides = [f"aggregate_encoder={name}"]
    if name not in aggregation_only():
        overrides.append(f"broadcast_encoder={name}")
    if name != "none":
        overrides += [f"{o.split('=')[0]}.threshold=0" for o in list(overrides)]
    return overrides


def _check_counted(cfg) -> list:
    """Train two rounds; the measured bits of every round equal the count of the same encoders outside TFF
    (``bits_per_client``) and the formula where fl-sweeps has one. Returns the round records."""
    trial = build_trial(cfg)
    down_encoder, up_encoder = instantiate(cfg.broadcast_encoder), instantiate(cfg.aggregate_encoder)
    clients = cfg.training.clients_per_round
    records = list(trial.run(run_settings(cfg)))
    planned = trial.bits_per_client.for_clients(clients)
    assert [(r.broadcast_bits, r.aggregate_bits) for r in records] == [(planned.broadcast, planned.aggregate)] * len(
        records
    )
    if {down_encoder.name, up_encoder.name} <= set(BUILT_IN_OPTIONS):  # their formulas: an independent count
        model_sizes, update_sizes = _tensor_sizes(trial, cfg)
        down = sum(sum(formula(down_encoder, n)) for n in model_sizes)
        down += sum(formula(up_encoder, n)[1] for n in update_sizes)
        up = sum(formula(up_encoder, n)[0] for n in update_sizes) + WEIGHT_BITS
        assert (records[0].broadcast_bits, records[0].aggregate_bits) == (down * clients, up * clients)
    assert all(np.isfinite(r.train_loss) for r in records)
    return records


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_in_conf_is_counted_from_its_messages(compose_config, tff_worker, name):
    """Every option found in conf/, in both directions where allowed; ``hadamard`` on the hand-written FedAvg."""
    algorithm = ["algorithm=fedavg_core"] if name == "hadamard" else []
    _check_counted(compose_config([*TINY_LINEAR, *_overrides(name), *algorithm]))


DOC = Path(__file__).parents[1] / "docs" / "writing-a-compressor.md"


def _readme_example(tmp_path: Path) -> Path:
    """The files of docs/writing-a-compressor.md (its code blocks whose first line names a path) written where a
    user would put them: the Python file in a module on the path (``tmp_path``), the YAML files under a copy of
    ``conf/``. Returns the config directory."""
    blocks = re.findall(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", DOC.read_text(), flags=re.S)
    assert [path for path, _ in blocks] == [
        "my_compressors/log_quantization.py",
        "conf/aggregate_encoder/log_quantization.yaml",
        "conf/aggregate_encoder/log_quantization_unpacked.yaml",
        "conf/broadcast_encoder/log_quantization.yaml",
    ]
    shutil.copytree(config_dir(), tmp_path / "conf")
    for path, text in blocks:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return tmp_path / "conf"


@pytest.mark.slow
def test_readme_worked_example_is_a_counted_option(tmp_path, monkeypatch, compose_config, tff_worker):
    """A new option from one Python file and one YAML file, counted by measurement: ``bits`` bits a value (packed
    into words) and one float32 scale, for every compressed tensor (checked by hand here)."""
    conf = _readme_example(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                *TINY,
                "aggregate_encoder=log_quantization",
                "aggregate_encoder.bits=3",
                "aggregate_encoder.threshold=0",
            ],
        )
    records = _check_counted(cfg)
    trial_sizes = _tensor_sizes(build_trial(cfg), cfg)[1]
    by_hand = sum(32 * -(-n * 3 // 32) + 32 for n in trial_sizes) + WEIGHT_BITS
    assert records[0].aggregate_bits == by_hand * cfg.training.clients_per_round


def _history(trial: FederatedTrial, settings: RunSettings) -> list[tuple]:
    return [
        (r.train_loss, r.train_accuracy, r.eval_loss, r.broadcast_bits, r.aggregate_bits) for r in trial.run(settings)
    ]


def _final_weights(trial: FederatedTrial) -> list[np.ndarray]:
    return [np.asarray(w) for w in trial.model_weights(trial.final_state).trainable]


@pytest.mark.slow
@pytest.mark.parametrize("trial", sorted(RANDOM_TRIALS))
def test_same_seed_same_numbers_reused_or_rebuilt(compose_config, tff_worker, trial):
    overrides = RANDOM_TRIALS[trial]
    thresholds = [
        f"{group}.threshold=0"
        for group in ("broadcast_encoder", "aggregate_encoder")
        if f"{group}=none" not in overrides and any(o.startswith(f"{group}=") for o in overrides)
    ]
    cfg = compose_config([*TINY_LINEAR, "training.rounds=3", *overrides, *thresholds])
    first = build_trial(cfg)
    history = _history(first, run_settings(cfg))
    weights = _final_weights(first)
    other_seed = _history(first, run_settings(cfg, seed=cfg.seed + 1))
    reused = _history(first, run_settings(cfg))
    reused_weights = _final_weights(first)
    rebuilt_trial = build_trial(cfg)
    rebuilt = _history(rebuilt_trial, run_settings(cfg))

    assert reused == history and rebuilt == history
    for a, b, c in zip(weights, reused_weights, _final_weights(rebuilt_trial), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert other_seed != history


@pytest.mark.slow
def test_readme_worked_example_runs_in_a_sweep(tmp_path, monkeypatch):
    """``fl-sweep --multirun`` over the example's ``bits``, with its files where a user would put them."""
    from cli_inprocess import fl_sweep
    from mlflow.tracking import MlflowClient

    conf = _readme_example(tmp_path)
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "--multirun",
        "--config-dir",
        str(conf),
        f"mlflow.tracking_uri={mlflow_uri}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",
        "hydra.sweeper.study_name=own-compressor",
        "hydra.sweeper.params={aggregate_encoder.bits: 'choice(2, 5)'}",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.reference_trials=false",
        "hydra.sweeper.centralized_reference=false",
        "hydra.sweeper.n_trials=2",
        "aggregate_encoder=log_quantization",
        "aggregate_encoder.threshold=0",
        *TINY_LINEAR,  # the wire format is per tensor: the linear model's two show it
    ]
    monkeypatch.syspath_prepend(str(tmp_path))  # the module of the example's stage, as PYTHONPATH would
    done = fl_sweep(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id])
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.params["aggregate_encoder"] for r in trials} == {"log_quantization"}
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=TINY_LINEAR)
    data = instantiate(cfg.data)
    sizes = [
        int(np.prod(w.shape)) for w in instantiate(cfg.model)(data.input_shape, data.num_classes).trainable_weights
    ]
    for run in trials:  # each trial's last round counted as the example's wire format says, at its sampled bits
        bits = int(run.data.params["aggregate_encoder.bits"])
        by_hand = sum(32 * -(-n * bits // 32) + 32 for n in sizes) + WEIGHT_BITS
        assert run.data.metrics["comm/aggregate_bits"] == by_hand * cfg.training.clients_per_round


@pytest.mark.slow
def test_doc_commands_run_and_count_as_the_doc_says(tmp_path, monkeypatch, tff_worker):
    """Every ``fl-sweep`` command of docs/writing-a-compressor.md, run from the folder of its files with tiny settings
    (thresholds 0, so the linear model's two tensors are compressed): each run's bits are the doc's formulas."""
    from cli_inprocess import fl_sweep
    from mlflow.tracking import MlflowClient

    _readme_example(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    commands = re.findall(r"PYTHONPATH=\. uv run fl-sweep (.*?)\n(?!    )", DOC.read_text().replace("\\\n", ""))
    assert len(commands) == 4
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=TINY_LINEAR)
    data = instantiate(cfg.data)
    sizes = [
        int(np.prod(w.shape)) for w in instantiate(cfg.model)(data.input_shape, data.num_classes).trainable_weights
    ]
    clients = cfg.training.clients_per_round
    for number, command in enumerate(commands):
        args = shlex.split(command)
        mlflow_uri = f"sqlite:///{tmp_path / f'mlflow{number}.db'}"
        sweep = (
            [
                f"hydra.sweeper.storage=sqlite:///{tmp_path / f'optuna{number}.db'}",
                "hydra.sweeper.n_trials=2",
                "hydra.sweeper.reference_trials=false",
                "hydra.sweeper.centralized_reference=false",
                "hydra/sweeper/pruner=none",
            ]
            if "--multirun" in args
            else []
        )
        thresholds = [f"{side}.threshold=0" for side in ("aggregate_encoder", "broadcast_encoder") if side in command]
        done = fl_sweep(tmp_path, *args, f"mlflow.tracking_uri={mlflow_uri}", *sweep, *TINY_LINEAR, *thresholds)
        assert done.returncode == 0, (command, done.stderr[-3000:])
        client = MlflowClient(tracking_uri=mlflow_uri)
        runs = client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id])
        trials = [run for run in runs if run.data.tags.get("fl_sweeps.role") != "sweep"]
        assert trials and all(run.info.status == "FINISHED" for run in trials), command
        for run in trials:
            params, metrics = run.data.params, run.data.metrics
            up, up_bits = params["aggregate_encoder"], int(params.get("aggregate_encoder.bits", 0))
            if up == "log_quantization":  # packed: 32·ceil(n·bits/32) + 32 a tensor
                by_hand = sum(32 * -(-n * up_bits // 32) + 32 for n in sizes) + WEIGHT_BITS
                assert metrics["comm/aggregate_bits"] == by_hand * clients, command
                assert run.data.tags["compression"].startswith(f"aggregate log_quantization {up_bits}-bit >0")
            elif up == "log_quantization_unpacked":  # float32 symbols: 32·n + 32 a tensor
                by_hand = sum(32 * n + 32 for n in sizes) + WEIGHT_BITS
                assert metrics["comm/aggregate_bits"] == by_hand * clients, command
            if params["broadcast_encoder"] == "log_quantization":
                down_bits = int(params["broadcast_encoder.bits"])
                by_hand = sum(32 * -(-n * down_bits // 32) + 32 for n in sizes)
                assert metrics["comm/broadcast_bits"] == by_hand * clients, command
