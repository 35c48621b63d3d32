"""Load the trials of an experiment or of one sweep from any MLflow tracking URI into pandas DataFrames.

Reads only what fl-sweeps records in MLflow (see ``fl_sweeps/tracking.py``): a sweep's parent run carries the tags
``fl_sweeps.role = sweep`` and ``fl_sweeps.study``; each trial is a run (a child of the parent in a sweep) with the
flattened config as params, per-round metrics with ``step`` = round and the final objectives.

With repeats over seeds (``hydra.sweeper.repeats``) a trial is a configuration run (``fl_sweeps.role =
configuration``: the means as ``final/*``, the first repeat's params, no per-round metrics, no model) and each repeat
is a child run of it (tag ``fl_sweeps.repeat``) with the curves and the model. The trials table then has one row per
configuration (bits and rounds from its repeats, ``model_run_id`` a repeat's run) and the curves one row per repeat
and round.

Every trial's seeds are also listed one row per run (``SweepRuns.seeds``: a plain trial's own run, or each repeat of a
configuration, with its ``seed`` and final objectives), so a configuration can be paired, seed by seed, with another
that ran the same seeds (``analysis.paired``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

ROLE_TAG = "fl_sweeps.role"
STUDY_TAG = "fl_sweeps.study"
PARENT_TAG = "mlflow.parentRunId"
REPEAT_TAG = "fl_sweeps.repeat"
CONFIGURATION = "configuration"

#: Per-round MLflow metric -> column of the curves DataFrame.
CURVE_METRICS = {
    "train/loss": "train_loss",
    "train/accuracy": "train_accuracy",
    "eval/loss": "eval_loss",
    "eval/accuracy": "eval_accuracy",
    "comm/broadcast_bits": "broadcast_bits",
    "comm/aggregate_bits": "aggregate_bits",
    "comm/cumulative_bits": "cumulative_bits",
}
CURVE_COLUMNS = ["run_id", "trial_run_id", "trial", "repeat", "round", *CURVE_METRICS.values()]

#: Final MLflow metric -> column of the seeds DataFrame (the validation and test ones only in runs that record them).
FINAL_METRICS = {
    "final/eval_accuracy": "eval_accuracy",
    "final/total_bits": "total_bits",
    "final/validation_accuracy": "validation_accuracy",
    "final/test_accuracy": "test_accuracy",
}
#: Params of the eval sets' sizes -> column of the seeds DataFrame (absent in runs recorded before they were).
EXAMPLES_PARAMS = {
    "eval.split": "eval_split",
    "data.validation_examples": "validation_examples",
    "data.test_examples": "test_examples",
}
SEED_COLUMNS = [
    "trial_run_id",
    "run_id",
    "repeat",
    "seed",
    "status",
    *FINAL_METRICS.values(),
    *EXAMPLES_PARAMS.values(),
]

#: The ``trial_state`` tag -> status; runs without the tag fall back to their MLflow status.
TRIAL_STATES = {"complete": "finished", "pruned": "pruned", "failed": "failed", "killed": "killed"}
MLFLOW_STATES = {
    "FINISHED": "finished",
    "FAILED": "failed",
    "KILLED": "killed",
    "RUNNING": "running",
    "SCHEDULED": "running",
}

#: Encoder classes (last part of ``*_encoder._target_``) -> short name.
ENCODER_KINDS = {"NoCompression": "none", "UniformQuantization": "uniform", "HadamardQuantization": "hadamard"}
ENCODERS = ("broadcast_encoder", "aggregate_encoder")

#: Params that never count as swept: the sweep's bookkeeping, values derived from the config, and internals that
#: stores recorded before params held option names only (a stage chain, a class path, a schedule's name).
NOT_SWEPT_PREFIXES = ("trial.", "mlflow.")
NOT_SWEPT = frozenset({"model.num_parameters", "repeats"})
INTERNAL_SUFFIXES = (".stages", ".name", "._target_")
ENUM_REPR = r"<\w+\.(\w+): '[^']*'>"  # an enum's repr; its member name is group 1

TRIAL_COLUMNS = [
    "run_id",
    "run_name",
    "trial",
    "study",
    "parent_run_id",
    "status",
    "mlflow_status",
    "eval_accuracy",
    "eval_split",
    "test_accuracy",
    "total_bits",
    "broadcast_bits",
    "aggregate_bits",
    "repeats",
    "rounds_run",
    "rounds",
    "pruned_at_round",
    "last_eval_accuracy",
    "last_cumulative_bits",
    "broadcast_encoder",
    "aggregate_encoder",
    "compressed",
    "compression",
    "error",
    "model_run_id",
    "start_time",
    "duration_s",
]


class LoadError(Exception):
    """The tracking store, experiment, sweep or study asked for is not there or holds no trials."""


@dataclass(frozen=True)
class SweepRuns:
    """The trials of an experiment or a sweep, as read from MLflow.

    Attributes:
        trials: One row per trial run or configuration run (columns ``TRIAL_COLUMNS`` then the swept params),
            ordered by trial number, then start time; ``model_run_id`` is the run holding its model.
            ``eval_accuracy`` is the objective, on the examples ``eval_split`` names (``validation``; ``test`` for
            runs recorded before fl-sweeps held out validation examples); ``test_accuracy`` is the final model's on
            the test examples (NaN where not recorded).
        curves: One row per run and round (columns ``CURVE_COLUMNS``): a repeat's run with ``trial_run_id`` its
            configuration's run, else ``trial_run_id`` = ``run_id``; ``eval_accuracy`` is NaN on rounds without
            evaluation.
        params: Every param of every trial, typed where possible, indexed by ``run_id``.
        swept: The swept params: those with more than one distinct value among the trials.
        tracking_uri: Where the runs were read from.
        experiment: Name of the experiment holding the runs.
        parent_run_id: The sweep's parent run, if one sweep was loaded (or all trials share one parent).
        study: The sweep's Optuna study name, if known.
        parent_tags: Tags of the sweep's parent run, when loaded by sweep or study.
        seeds: One row per run that trained (columns ``SEED_COLUMNS``): a plain trial's run, or each repeat of a
            configuration (``trial_run_id`` its configuration's run), with its ``seed``, status, final objectives
            and, where recorded, the eval split and the eval sets' sizes.
    """

    trials: pd.DataFrame
    curves: pd.DataFrame
    params: pd.DataFrame
    swept: list[str]
    tracking_uri: str
    experiment: str
    parent_run_id: str | None = None
    study: str | None = None
    parent_tags: dict[str, str] = field(default_factory=dict)
    seeds: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SEED_COLUMNS))

    @property
    def title(self) -> str:
        """``study NAME`` for a sweep, else ``experiment NAME``."""
        return f"study {self.study}" if self.study else f"experiment {self.experiment}"


def redact_uri(uri: str) -> str:
    """A tracking URI with any password replaced by ``***``."""
    return re.sub(r"(//[^/:@]+):[^/@]*@", r"\1:***@", uri)


def check_store(tracking_uri: str) -> None:
    """Fail early on a local store that does not exist (MLflow would silently create an empty one).

    Raises:
        LoadError: A ``sqlite:///`` file or a local directory store is missing.
    """
    if tracking_uri.startswith("sqlite:"):
        path = tracking_uri.split(":///", 1)[-1] if ":///" in tracking_uri else ""
        if path and path != ":memory:" and not Path(unquote(path)).is_file():
            raise LoadError(f"no MLflow store at {tracking_uri}: {path} does not exist")
        return
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("", "file") and not Path(unquote(parsed.path or tracking_uri)).is_dir():
        raise LoadError(f"no MLflow store at {tracking_uri}: no such directory")


def list_sweeps(tracking_uri: str, *, experiment: str | None = None) -> pd.DataFrame:
    """The sweeps (parent runs) in the store, newest first.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: Only this experiment's sweeps; all experiments when None.

    Returns:
        Columns ``parent_run_id``, ``study``, ``experiment``, ``status``, ``start_time``.
    """
    client = mlflow_client(tracking_uri)
    experiments = _experiments(client, experiment)
    runs = _search(client, list(experiments), f"tags.`{ROLE_TAG}` = 'sweep'")
    rows = [
        {
            "parent_run_id": r.info.run_id,
            "study": r.data.tags.get(STUDY_TAG),
            "experiment": experiments[r.info.experiment_id],
            "status": r.info.status,
            "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
        }
        for r in runs
    ]
    columns = ["parent_run_id", "study", "experiment", "status", "start_time"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values("start_time", ascending=False, ignore_index=True)


def load_runs(
    tracking_uri: str,
    *,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    study: str | None = None,
) -> SweepRuns:
    """Load the trials of one sweep, or of a whole experiment, with their per-round curves.

    Give ``parent_run_id`` (a sweep's parent run), or ``study`` (its Optuna study name; ``experiment`` narrows the
    search), or ``experiment`` alone (every trial run in it, in sweeps or not; sweep parent runs are left out).
    Deleted runs are left out. When an experiment's trials all belong to one sweep, that sweep's parent run and
    study are filled in.

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///mlflow.db``, a directory, ``http://...``).
        experiment: Experiment name.
        parent_run_id: Run id of a sweep's parent run.
        study: Study name of a sweep.

    Returns:
        The trials, their curves and params, and the swept params.

    Raises:
        LoadError: The store, experiment, sweep or study is not there, or it holds no trial runs.
    """
    from mlflow.exceptions import MlflowException

    if sum(x is not None for x in (parent_run_id, study)) > 1 or (experiment, parent_run_id, study) == (None,) * 3:
        raise LoadError("give one of parent_run_id, study or experiment (experiment may narrow a study)")
    check_store(tracking_uri)
    client = mlflow_client(tracking_uri)
    try:
        if study is not None:
            parent_run_id = _find_study(client, study, experiment)
        if parent_run_id is not None:
            try:
                parent = client.get_run(parent_run_id)
            except MlflowException as error:
                raise LoadError(f"no run {parent_run_id} in {redact_uri(tracking_uri)}") from error
            experiment_id = parent.info.experiment_id
            experiment_name = client.get_experiment(experiment_id).name
            runs = _search(client, [experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
            study = parent.data.tags.get(STUDY_TAG, study)
            what = f"sweep {parent_run_id}" + (f" (study {study})" if study else "")
            parent_tags = dict(parent.data.tags)
        else:
            ((experiment_id, experiment_name),) = _experiments(client, experiment).items()
            runs = [r for r in _search(client, [experiment_id], None) if r.data.tags.get(ROLE_TAG) != "sweep"]
            what = f"experiment {experiment_name!r}"
            parent_tags = {}
        if not runs:
            raise LoadError(f"{what} in {redact_uri(tracking_uri)} has no trial runs")
        runs, repeats = _split_repeats(client, runs, experiment_id, searched_all=parent_run_id is None)
        curve_runs = [r for r in runs if r.data.tags.get(ROLE_TAG) != CONFIGURATION] + repeats
        histories = {r.info.run_id: _histories(client, r.info.run_id) for r in curve_runs}
    except MlflowException as error:
        raise LoadError(f"cannot read {redact_uri(tracking_uri)}: {error.message.splitlines()[0]}") from error

    params = _params_table(runs)
    swept = swept_parameters(params)
    curves = _curves_table(curve_runs, histories, {r.info.run_id: r.data.tags[PARENT_TAG] for r in repeats})
    trials = _trials_table(runs, curves, params, swept)
    if parent_run_id is None:
        parents = trials["parent_run_id"].dropna().unique()
        if len(parents) == 1 and trials["parent_run_id"].notna().all():
            parent_run_id = str(parents[0])
            study = trials["study"].dropna().iloc[0] if trials["study"].notna().any() else None
    return SweepRuns(
        trials=trials,
        curves=curves,
        params=params,
        swept=swept,
        tracking_uri=tracking_uri,
        experiment=experiment_name,
        parent_run_id=parent_run_id,
        study=study,
        parent_tags=parent_tags,
        seeds=_seeds_table(curve_runs, {r.info.run_id: r.data.tags[PARENT_TAG] for r in repeats}),
    )


def _seeds_table(runs: Iterable[Any], configuration_of: dict[str, str]) -> pd.DataFrame:
    """One row per run that trained (a plain trial or a repeat): its seed, status, final objectives, eval sets."""
    rows = []
    for run in runs:
        run_id, params, metrics = run.info.run_id, run.data.params, run.data.metrics
        trial_run_id = configuration_of.get(run_id, run_id)
        seed = params.get("seed")
        rows.append(
            {
                "trial_run_id": trial_run_id,
                "run_id": run_id,
                "repeat": int(run.data.tags.get(REPEAT_TAG, 0)) if trial_run_id != run_id else None,
                "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
                "status": _status(run),
                **{column: metrics.get(metric, math.nan) for metric, column in FINAL_METRICS.items()},
                **{column: params.get(param) for param, column in EXAMPLES_PARAMS.items()},
            }
        )
    seeds = pd.DataFrame(rows, columns=SEED_COLUMNS)
    for column in ("repeat", "seed", "validation_examples", "test_examples"):
        seeds[column] = pd.to_numeric(seeds[column]).astype("Int64")
    for column in FINAL_METRICS.values():
        seeds[column] = seeds[column].astype(float)
    return seeds.sort_values(["trial_run_id", "seed"], na_position="last", ignore_index=True)


def _split_repeats(client: Any, runs: list[Any], experiment_id: str, *, searched_all: bool) -> tuple[list, list]:
    """The trial runs (plain trials and configurations) and the repeat runs under the configurations.

    Args:
        client: The MLflow client.
        runs: The runs found: a sweep's children, or (``searched_all``) every run of the experiment, the repeats'
            runs among them.
        experiment_id: Where the runs are.
        searched_all: ``runs`` already holds the repeats' runs.
    """
    configurations = {r.info.run_id for r in runs if r.data.tags.get(ROLE_TAG) == CONFIGURATION}
    if searched_all:
        repeats = [r for r in runs if r.data.tags.get(PARENT_TAG) in configurations]
        trials = [r for r in runs if r.data.tags.get(PARENT_TAG) not in configurations]
        return trials, repeats
    repeats = [
        repeat for run_id in sorted(configurations) for repeat in _search(client, [experiment_id], _children(run_id))
    ]
    return runs, repeats


def _children(run_id: str) -> str:
    return f"tags.`{PARENT_TAG}` = '{run_id}'"


def readable_value(value: Any) -> Any:
    """A param value as a person reads it: an enum's repr (``<Rounding.deterministic: 'deterministic'>``) becomes
    its member name; anything else is unchanged."""
    return re.sub(ENUM_REPR, r"\1", value) if isinstance(value, str) else value


def is_internal(name: str, values: pd.Series) -> bool:
    """Whether a param is an internal of the config rather than an option's setting: a stage chain, a class
    path or a name (``*.stages``, ``*._target_``, ``*.name``), or values holding ``_target_`` dicts."""
    return name.endswith(INTERNAL_SUFFIXES) or bool(values.dropna().astype(str).str.contains("_target_").any())


def swept_parameters(params: pd.DataFrame) -> list[str]:
    """The params that vary among the trials: more than one distinct non-missing value.

    A param missing in some trials and constant elsewhere (``aggregate_encoder.bits`` next to
    ``aggregate_encoder=none``) does not count by itself: the varying option shows that choice. The sweep's
    bookkeeping (``trial.*``, ``mlflow.*``, ``repeats``), derived values (``model.num_parameters``) and internals
    (``is_internal``: stage chains, class paths, names) never count.

    Args:
        params: One row per trial, one column per param.

    Returns:
        Param names, sorted.
    """
    return sorted(
        name
        for name in params.columns
        if not name.startswith(NOT_SWEPT_PREFIXES)
        and name not in NOT_SWEPT
        and params[name].dropna().astype(str).nunique() > 1
        and not is_internal(name, params[name])
    )


def encoder_kind(target: Any) -> str | None:
    """Short name of an encoder from its option name (``uniform``), or, in older runs, its ``_target_`` class path
    (``...UniformQuantization`` -> ``uniform``)."""
    if not isinstance(target, str) or not target:
        return None
    name = target.rsplit(".", 1)[-1]
    return ENCODER_KINDS.get(name, name)


def mlflow_client(tracking_uri: str) -> Any:
    """An MlflowClient whose store is open, without MLflow's schema-check chatter.

    Opening a sqlite store, MLflow logs its schema checks at INFO and alembic installs a stderr handler for them;
    the store is cached per URI, so hiding INFO records while it opens keeps later calls quiet too.
    """
    import logging

    from mlflow.tracking import MlflowClient

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    finally:
        logging.disable(previous)
    return client


def _experiments(client: Any, name: str | None) -> dict[str, str]:
    """Experiment id -> name: the one named (LoadError if missing) or all."""
    if name is None:
        return {e.experiment_id: e.name for e in client.search_experiments()}
    found = client.get_experiment_by_name(name)
    if found is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise LoadError(f"no experiment named {name!r} in {redact_uri(client.tracking_uri)} (experiments: {known})")
    return {found.experiment_id: found.name}


def _find_study(client: Any, study: str, experiment: str | None) -> str:
    """The parent run id of the sweep of ``study``."""
    experiments = _experiments(client, experiment)
    quoted = study.replace("'", "\\'")
    runs = _search(client, list(experiments), f"tags.`{STUDY_TAG}` = '{quoted}' and tags.`{ROLE_TAG}` = 'sweep'")
    where = f"experiment {experiment!r}" if experiment else redact_uri(client.tracking_uri)
    if not runs:
        raise LoadError(f"no sweep of study {study!r} in {where}")
    if len(runs) > 1:
        names = ", ".join(sorted({experiments[r.info.experiment_id] for r in runs}))
        raise LoadError(
            f"{len(runs)} sweeps of study {study!r} in {where} (experiments {names}): "
            "name the experiment or the parent run"
        )
    return runs[0].info.run_id


def _search(client: Any, experiment_ids: list[str], filter_string: str | None) -> list[Any]:
    """All active runs matching the filter, every page."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string or "", max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _histories(client: Any, run_id: str) -> dict[str, dict[int, float]]:
    """Metric -> {step: value} of the per-round metrics (the latest value when a step was logged twice)."""
    result: dict[str, dict[int, float]] = {}
    for key in CURVE_METRICS:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        result[key] = {int(m.step): float(m.value) for m in points}
    return result


def _typed(values: pd.Series) -> pd.Series:
    """A column of param strings as numbers when every present value is one, else unchanged."""
    present = values.dropna()
    if present.empty:
        return values
    try:
        numbers = pd.to_numeric(present)
    except (TypeError, ValueError):
        return values
    out = pd.to_numeric(values)
    if np.all(np.mod(numbers, 1) == 0) and not present.astype(str).str.contains(r"[.eE]").any():
        return out.astype("Int64")
    return out.astype(float)


def _params_table(runs: Iterable[Any]) -> pd.DataFrame:
    table = pd.DataFrame.from_records(
        [dict(r.data.params) for r in runs], index=pd.Index([r.info.run_id for r in runs], name="run_id")
    )
    table = table.reindex(sorted(table.columns), axis=1).map(readable_value)
    return table.apply(_typed) if len(table.columns) else table


def _curves_table(
    runs: Iterable[Any], histories: dict[str, dict[str, dict[int, float]]], configuration_of: dict[str, str]
) -> pd.DataFrame:
    """One row per run and round; ``configuration_of`` maps a repeat's run to its configuration's run."""
    rows = []
    for run in runs:
        history = histories[run.info.run_id]
        trial = _trial_number(run)
        trial_run_id = configuration_of.get(run.info.run_id, run.info.run_id)
        repeat = int(run.data.tags.get(REPEAT_TAG, 0)) if trial_run_id != run.info.run_id else None
        for step in sorted({s for points in history.values() for s in points}):
            row: dict[str, Any] = {
                "run_id": run.info.run_id,
                "trial_run_id": trial_run_id,
                "trial": trial,
                "repeat": repeat,
                "round": step,
            }
            row.update({column: history[key].get(step, math.nan) for key, column in CURVE_METRICS.items()})
            rows.append(row)
    curves = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    for column in ("trial", "repeat"):
        curves[column] = curves[column].astype("Int64")
    curves["round"] = curves["round"].astype(int)
    return curves.sort_values(["trial", "repeat", "run_id", "round"], ignore_index=True)


def _trial_number(run: Any) -> int | None:
    value = run.data.tags.get("optuna.trial_number")
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _status(run: Any) -> str:
    state = run.data.tags.get("trial_state")
    if state in TRIAL_STATES:
        return TRIAL_STATES[state]
    return MLFLOW_STATES.get(run.info.status, run.info.status.lower())


def _pruned_at(curve: pd.DataFrame, status: str) -> int | None:
    """A pruned configuration's round of stopping: the last round its shortest repeat ran."""
    if status != "pruned" or curve.empty:
        return None
    return int(curve.groupby("run_id")["round"].max().min())


def _compression(broadcast: str | None, b_bits: Any, aggregate: str | None, a_bits: Any) -> str | None:
    """``none`` or e.g. ``broadcast uniform 8-bit + aggregate hadamard 2-bit``."""
    if broadcast is None or aggregate is None:
        return None
    parts = []
    for direction, kind, bits in (("broadcast", broadcast, b_bits), ("aggregate", aggregate, a_bits)):
        if kind != "none":
            parts.append(f"{direction} {kind}" + (f" {int(bits)}-bit" if pd.notna(bits) else ""))
    return " + ".join(parts) or "none"


def _per_repeat(curve: pd.DataFrame) -> pd.DataFrame:
    """Per run (one per repeat) of a trial's curves: bits sent each way, rounds run, last eval accuracy and bits."""
    if curve.empty:
        return pd.DataFrame(
            columns=["broadcast_bits", "aggregate_bits", "rounds_run", "last_eval_accuracy", "last_cumulative_bits"]
        )
    groups = curve.groupby("run_id", sort=False)
    return pd.DataFrame(
        {
            "broadcast_bits": groups["broadcast_bits"].sum(),
            "aggregate_bits": groups["aggregate_bits"].sum(),
            "rounds_run": groups["round"].max(),
            "last_eval_accuracy": groups["eval_accuracy"].agg(
                lambda v: v.dropna().iloc[-1] if v.notna().any() else math.nan
            ),
            "last_cumulative_bits": groups["cumulative_bits"].agg(
                lambda v: v.dropna().iloc[-1] if v.notna().any() else math.nan
            ),
        }
    )


def _model_run(run: Any, curve: pd.DataFrame, status: str) -> str | None:
    """The run holding the trial's model: its own, or a configuration's first finished repeat (lowest seed)."""
    if status != "finished":
        return None
    if run.data.tags.get(ROLE_TAG) != CONFIGURATION:
        return run.info.run_id
    repeats = curve.drop_duplicates("run_id").sort_values("repeat")
    return str(repeats["run_id"].iloc[0]) if len(repeats) else None


def _trials_table(runs: list[Any], curves: pd.DataFrame, params: pd.DataFrame, swept: list[str]) -> pd.DataFrame:
    swept = [name for name in swept if name not in TRIAL_COLUMNS]  # the encoder options have their own columns
    by_trial = {run_id: group for run_id, group in curves.groupby("trial_run_id")}
    rows = []
    for run in runs:
        run_id = run.info.run_id
        p = params.loc[run_id]
        curve = by_trial.get(run_id, curves.iloc[0:0])
        repeats = _per_repeat(curve)
        metrics, tags = run.data.metrics, run.data.tags
        kinds = {enc: encoder_kind(p.get(enc) or p.get(f"{enc}._target_")) for enc in ENCODERS}
        pruned_at = tags.get("pruned_at_round")
        end = run.info.end_time
        status = _status(run)
        rows.append(
            {
                "run_id": run_id,
                "run_name": run.info.run_name,
                "trial": _trial_number(run),
                "study": tags.get("optuna.study_name"),
                "parent_run_id": tags.get(PARENT_TAG),
                "status": status,
                "mlflow_status": run.info.status,
                "eval_accuracy": metrics.get("final/eval_accuracy", math.nan),
                "eval_split": p.get("eval.split", "test"),  # runs before the split was recorded evaluated on test
                "test_accuracy": metrics.get("final/test_accuracy", math.nan),
                "total_bits": metrics.get("final/total_bits", math.nan),
                "broadcast_bits": repeats["broadcast_bits"].mean() if len(repeats) else 0.0,
                "aggregate_bits": repeats["aggregate_bits"].mean() if len(repeats) else 0.0,
                "repeats": len(repeats) if tags.get(ROLE_TAG) == CONFIGURATION else None,
                "rounds_run": int(repeats["rounds_run"].max()) if len(repeats) else 0,
                "rounds": p.get("training.rounds"),
                "pruned_at_round": int(pruned_at) if pruned_at and pruned_at.isdigit() else _pruned_at(curve, status),
                "last_eval_accuracy": repeats["last_eval_accuracy"].mean() if len(repeats) else math.nan,
                "last_cumulative_bits": repeats["last_cumulative_bits"].mean() if len(repeats) else math.nan,
                "broadcast_encoder": kinds["broadcast_encoder"],
                "aggregate_encoder": kinds["aggregate_encoder"],
                "compressed": None if None in kinds.values() else any(k != "none" for k in kinds.values()),
                "compression": _compression(
                    kinds["broadcast_encoder"],
                    p.get("broadcast_encoder.bits"),
                    kinds["aggregate_encoder"],
                    p.get("aggregate_encoder.bits"),
                ),
                "error": tags.get("error"),
                "model_run_id": _model_run(run, curve, status),
                "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
                "duration_s": (end - run.info.start_time) / 1000 if end else math.nan,
                **{name: p.get(name) for name in swept},
            }
        )
    trials = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *swept])
    for column in ("trial", "repeats", "rounds", "pruned_at_round"):
        trials[column] = pd.to_numeric(trials[column]).astype("Int64")
    trials["compressed"] = trials["compressed"].astype("boolean")
    for column in (
        "eval_accuracy",
        "test_accuracy",
        "total_bits",
        "broadcast_bits",
        "aggregate_bits",
        "last_eval_accuracy",
        "last_cumulative_bits",
        "duration_s",
    ):
        trials[column] = trials[column].astype(float)
    for name in swept:  # keep the param's type (the row dicts turned Int64 into object)
        trials[name] = trials[name].astype(params[name].dtype)
    return trials.sort_values(["trial", "start_time"], na_position="last", ignore_index=True)
