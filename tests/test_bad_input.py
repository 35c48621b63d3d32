"""Bad input, systematically: random and adversarial overrides end in a run or in one line naming the setting.

Hypothesis throws overrides at the CLI's logic in-process (a subprocess per case would take seconds): Hydra's own
composition in run or multirun mode, the preflight checks of ``fl_sweeps.preflight`` (the CLI's Hydra callback),
the sweeper's search-space checks, the data loading that precedes any training, and the CLI's error path
(``user_error``). A handful of cases then go through ``fl-sweep`` itself (in-process, one as the real console script).
"""

from __future__ import annotations

import math
import traceback
from pathlib import Path

import pytest
from cli_inprocess import fl_sweep, fl_sweep_process
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, RunMode
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from fl_sweeps.cli import config_dir
from fl_sweeps.preflight import check_run, user_error
from fl_sweeps.schema import register_configs
from fl_sweeps.validation import check_clients_per_round
from fl_sweeps.workbench import Workbench

KEYS = [
    "training.rounds",
    "training.clients_per_round",
    "training.local_epochs",
    "training.batch_size",
    "training.shuffle_buffer",
    "eval.every",
    "eval.mode",
    "eval.split",
    "data.num_clients",
    "data.partition",
    "data.alpha",
    "data.shards_per_client",
    "data.test_fraction",
    "data.validation_fraction",
    "model.filters",
    "model.dense_units",
    "client_optimizer.lr",
    "server_optimizer.lr",
    "aggregate_encoder.bits",
    "aggregate_encoder.threshold",
    "aggregate_encoder.rounding",
    "broadcast_encoder.bits",
    "seed",
    "reuse_built_process",
    "mlflow.experiment",
]
GROUPS = {
    "data": ["digits", "mnist", "femnist", "emnist"],
    "model": ["cnn", "mlp", "linear"],
    "client_optimizer": ["sgd", "sgdm", "adam"],
    "server_optimizer": ["sgd", "sgdm", "adam"],
    "aggregate_encoder": ["none", "uniform", "hadamard"],
    "broadcast_encoder": ["none", "uniform", "hadamard"],
}
ADVERSARIAL = [
    "", "null", "true", "abc", "[]", "[1,2]", "[0]", "[-3, 4]", "{a: 1}", "${foo}", "${oc.env:FL_SWEEPS_NOPE}",
    "'quoted'", "[1,", "choice(", "choice()", "interval(1)", "range(5,1)", "interval(0.5, 0.1)",
    "tag(log, interval(0, 1))",
    "choice(1,,2)", "=", "a=b", "1e400", "-1e400", "nan", "inf", "-0.0", "0", "-1", "17", "65536", "2147483648",
    "1.5", "0.99999", "1.0", "stochastic", "federated", "dirichlet", "shards", "none", "uniform", "x" * 300, "\\", "'",
]  # fmt: skip
BASE_VALUE = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: str(f) if math.isfinite(f) else repr(f)),
    st.sampled_from(ADVERSARIAL),
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00\n\r"), max_size=12),
)
SWEEP_VALUE = st.one_of(
    st.lists(BASE_VALUE, min_size=1, max_size=4).map(lambda vs: f"choice({','.join(vs)})"),
    st.tuples(BASE_VALUE, BASE_VALUE).map(lambda ab: f"interval({ab[0]},{ab[1]})"),
    st.tuples(BASE_VALUE, BASE_VALUE).map(lambda ab: f"tag(log, interval({ab[0]},{ab[1]}))"),
    st.tuples(BASE_VALUE, BASE_VALUE, BASE_VALUE).map(lambda abc: f"range({abc[0]},{abc[1]},{abc[2]})"),
)
VALUE = st.one_of(BASE_VALUE, SWEEP_VALUE)
UNKNOWN_KEY = st.from_regex(r"[a-z_]{1,10}(\.[a-z_]{1,10}){0,2}", fullmatch=True)
OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUE).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(st.sampled_from(KEYS), VALUE).map(lambda kv: f"{kv[0]}={kv[1]}"),  # known keys twice as likely
    st.tuples(st.sampled_from(sorted(GROUPS)), st.sampled_from(sorted({o for v in GROUPS.values() for o in v}))).map(
        lambda kv: f"{kv[0]}={kv[1]}"
    ),
    st.tuples(st.sampled_from(sorted(GROUPS)), VALUE).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(UNKNOWN_KEY, VALUE).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(st.sampled_from(["+", "~", "++"]), st.sampled_from(KEYS) | UNKNOWN_KEY, VALUE).map(
        lambda pkv: f"{pkv[0]}{pkv[1]}={pkv[2]}"
    ),
    st.sampled_from(KEYS) | UNKNOWN_KEY,  # no "=" at all
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00\n\r"), min_size=1, max_size=20),
)


def _named(override: str) -> list[str]:
    """What a message about ``override`` may name: its key (as given, and without +/~), or the override itself."""
    key = override.split("=", 1)[0]
    return [override.strip(), key.strip(), key.lstrip("+~").strip()]


def cli_outcome(overrides: list[str], *, multirun: bool, tmp: Path) -> str | None:
    """What ``fl-sweep`` does with these overrides before it would train: None (it runs) or its one-line error.

    The same steps in the same order as the CLI: Hydra composes (run or multirun mode), the preflight callback
    checks, in a sweep the sweeper is instantiated and checks its search space, and a run loads its data.
    Any exception that the CLI would not turn into one line fails the test with its traceback.
    """
    places = [
        f"hydra.run.dir={tmp / 'run'}",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        f"hydra.sweeper.storage=sqlite:///{tmp / 'optuna.db'}",
        "hydra.sweeper.params={client_optimizer.lr: 'tag(log, interval(0.05, 0.5))'}",
    ]
    app = GlobalHydra.instance().hydra
    try:
        cfg = app.compose_config(
            "config",
            [*places, *overrides],
            run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
            with_log_configuration=False,
        )
        check_run(cfg, output_dir_key="hydra.sweep.dir" if multirun else "hydra.run.dir")
        if multirun:
            sweeper = Plugins.instance().instantiate_sweeper(
                config=cfg,
                # No job runs here, so no callback is called (Hydra's Callbacks class is private).
                hydra_context=HydraContext(config_loader=app.config_loader, callbacks=None),
                task_function=lambda _: None,
            )
            sweeper.sweeper.check_search_space(list(cfg.hydra.overrides.task))
        else:
            data = Workbench.load_data(cfg.data)
            check_clients_per_round(cfg.training.clients_per_round, data.num_clients, f"data set {data.name}")
    except Exception as error:  # noqa: BLE001 - whatever it is, the CLI must turn it into one line
        message = user_error(error, overrides)
        assert message is not None, "".join(traceback.format_exception(error))
        return message
    return None


@pytest.fixture()
def hydra_app():
    """Hydra initialized on the project's config for the test (a fixture runs once for all of Hypothesis' cases),
    cleared after it, so the ``fl-sweep`` runs below start as a fresh process would."""
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        yield GlobalHydra.instance().hydra


# No shrinking: a failing case is reported as found (shrinking Hydra errors can take many minutes).
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(overrides=st.lists(OVERRIDE, min_size=1, max_size=3), multirun=st.booleans())
def test_random_overrides_end_in_a_run_or_one_line_naming_the_setting(hydra_app, tmp_path_factory, overrides, multirun):
    tmp = tmp_path_factory.mktemp("case")
    message = cli_outcome(overrides, multirun=multirun, tmp=tmp)
    event("runs" if message is None else "one-line error")
    if message is not None:
        assert "\n" not in message and message.strip() == message and message
        names = [name for override in overrides for name in _named(override) if name]
        assert any(name in message for name in names) or "hydra.sweeper.params" in message, (overrides, message)
    assert not (tmp / "mlflow.db").exists() and not (tmp / "optuna.db").exists()  # nothing recorded


@pytest.mark.parametrize(
    ("args", "named", "own_process"),
    [
        (["training.rounds=abc"], "training.rounds", True),  # the console script itself, once
        (["--multirun", "aggregate_encoder=choice(none,gzip)"], "aggregate_encoder=gzip", False),
        (["--multirun", "client_optimizer.lr=interval(0.5"], "client_optimizer.lr", False),
        (["--multirun", "aggregate_encoder.bits=range(0,4)"], "aggregate_encoder.bits=0", False),
        (["eval.split=train"], "eval.split", False),
        (
            ["data.validation_fraction=1.0"],
            "data.validation_fraction=1.0 is not allowed: use a number in [0, 1)",
            False,
        ),
        (["data.validation_fraction=0"], "eval.split=validation is not allowed with data.validation_fraction=0", False),
        (  # 1797 clients of one training example each: a validation fraction of 0.6 takes it
            ["data.num_clients=1797", "data.test_fraction=0.5", "data.validation_fraction=0.6"],
            "data.validation_fraction=0.6 is not allowed for digits: it leaves client",
            False,
        ),
    ],
)
def test_the_cli_prints_one_line_and_records_nothing(tmp_path, args, named, own_process):
    result = (fl_sweep_process if own_process else fl_sweep)(tmp_path, *args)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("fl-sweep: error: ") and named in line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()


def test_hydra_full_error_set_by_the_user_shows_the_whole_traceback(tmp_path):
    result = fl_sweep(tmp_path, "training.rounds=abc", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "training.rounds" in result.stderr
    assert "fl-sweep: error:" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()
