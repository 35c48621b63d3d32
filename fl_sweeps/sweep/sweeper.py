"""Hydra's optuna sweeper, extended: pruning, heartbeats, resumable totals, and an MLflow parent run.

Built on ``hydra_plugins.hydra_optuna_sweeper`` (search-space parsing, sampler and trial configuration are
theirs). What is added:

- The study lives in an RDB storage with heartbeats (sqlite, or PostgreSQL shared by workers on several hosts).
  Before each batch the sweep marks failed the RUNNING trials whose heartbeat went stale (their worker died), and
  ends their MLflow runs KILLED; trials of live workers on the same study keep beating and are left alone.
- ``n_trials`` is the study's total: completed, pruned and failed trials, and trials running elsewhere, count.
  Several workers may run the same sweep on one study: trial numbers come from the storage, a trial asked after
  the total was reached by others is marked failed at once as surplus (never run, never counted), and a worker
  with nothing left to ask waits until the trials of other workers end, rerunning any whose worker died.
- Each job gets ``trial.*`` overrides (storage, study, trial number, parent run) so it can report eval accuracy
  per round and be pruned (``fl_sweeps.sweep.trial_link``) and record a child run of the sweep's MLflow run.
- Params under a config group chosen as ``none`` are not suggested (``aggregate_encoder=none`` has no bits).
- Failed trials do not stop the sweep until more than ``max_failure_rate`` of the trials this run set out to
  do have failed.
- On an interrupt, this sweep's unfinished trials are marked failed, so none is left RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from fl_sweeps.errors import ConfigError, TooManyFailures
from fl_sweeps.mlflow_store import redact
from fl_sweeps.sweep.parent_run import attach_parent_run, close_orphan_runs
from fl_sweeps.sweep.pareto_table import write_pareto_front
from fl_sweeps.sweep.search_space import check_search_space
from fl_sweeps.sweep.trial_link import build_pruner

log = logging.getLogger(__name__)
FAILURE_ATTR = "failure"  # a trial that failed on its own (counts toward n_trials)
INTERRUPTED_ATTR = "interrupted"  # a trial cut short by stopping the sweep (does not count; it runs again)
SURPLUS_ATTR = "surplus"  # asked after other workers had reached n_trials: never run, does not count
# The jobs read the storage URL from this variable (set by the sweeper), so the URL and its password stay out of
# the job overrides that Hydra logs and saves; launchers on other hosts need it set in the job's environment.
STORAGE_ENV = "FL_SWEEPS_OPTUNA_STORAGE"
OPEN_RETRIES = 6


def _say(message: str) -> None:
    """Sweep progress for the person watching (Hydra's logging shows only its own logger while sweeping)."""
    print(f"[fl-sweep] {message}", flush=True)


class _Heartbeat:
    """Records heartbeats of the given trials every ``interval`` seconds in a background thread."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: list[int], interval: float) -> None:
        self._storage, self._trial_ids, self._interval = storage, trial_ids, interval
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        for trial_id in self._trial_ids:
            self._storage.record_heartbeat(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class ParetoSweeperImpl(OptunaSweeperImpl):
    """See the module docstring."""

    def __init__(self, *, pruner: Any, heartbeat_interval: int, grace_period: int, **optuna_kwargs: Any) -> None:
        super().__init__(**optuna_kwargs)
        self.pruner = pruner
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period

    def _open_study(self, directions: list[str]) -> tuple[optuna.Study, bool]:
        """Open (or create) the study; also say whether this worker created it (then it owns the parent run).

        Workers starting at the same instant race to create the schema and the study; the storage settles it (a
        unique study name), and a worker that loses a schema race retries.
        """
        if not isinstance(self.storage, str) or "://" not in self.storage:
            raise ValueError(f"hydra.sweeper.storage={self.storage!r} is not allowed: use a database URL")
        for attempt in range(1, OPEN_RETRIES + 1):
            try:
                with _heartbeats_are_experimental():
                    storage = optuna.storages.RDBStorage(
                        self.storage, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period
                    )
                try:
                    study = optuna.create_study(
                        study_name=self.study_name, storage=storage, sampler=self.sampler, directions=directions
                    )
                    return study, True
                except optuna.exceptions.DuplicatedStudyError:
                    return optuna.load_study(study_name=self.study_name, storage=storage, sampler=self.sampler), False
            except (optuna.exceptions.StorageInternalError, _sqlalchemy_error()) as error:
                if attempt == OPEN_RETRIES:
                    raise
                log.info(f"opening the study raced with another worker ({type(error).__name__}); retrying")
                time.sleep(0.5 + random.random() * attempt)
        raise AssertionError("unreachable")

    def _fail_dead_trials(self, study: optuna.Study, tracking_uri: str, parent_run_id: str) -> None:
        """Mark failed the trials whose worker stopped beating, and end KILLED their MLflow runs left RUNNING."""
        with _heartbeats_are_experimental():
            optuna.storages.fail_stale_trials(study)
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for run_id in close_orphan_runs(tracking_uri=tracking_uri, parent_run_id=parent_run_id, running_trials=running):
            _say(f"MLflow run {run_id} of a trial whose worker died: ended KILLED")

    def _drop_surplus(self, study: optuna.Study, asked: list[optuna.trial.Trial]) -> list[optuna.trial.Trial]:
        """The asked trials within ``n_trials``; the others (other workers reached the total meanwhile) are marked
        failed as surplus at once, so none is left RUNNING.

        Trial numbers are handed out one at a time by the storage, so every worker ranks its trials against the
        same earlier trials: a trial is within the total if fewer than ``n_trials`` counted trials come before it.
        """
        counted = sorted(t.number for t in study.get_trials(deepcopy=False) if _counts(t))
        kept = []
        for trial in asked:
            if sum(1 for number in counted if number < trial.number) < self.n_trials:
                kept.append(trial)
                continue
            trial.set_user_attr(SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            _say(f"trial {trial.number} not run: other workers already reached the {self.n_trials} trials")
        return kept

    def _trials_counted(self, study: optuna.Study) -> int:
        """Trials that count toward ``n_trials``: all but those failed because their worker stopped or died."""
        return sum(1 for trial in study.get_trials(deepcopy=False) if _counts(trial))

    def _configure_trials(
        self,
        trials: list[optuna.trial.Trial],
        search_space_distributions: dict[str, BaseDistribution],
        fixed_params: dict[str, Any],
    ) -> Sequence[Sequence[str]]:
        overrides = []
        groups_first = sorted(search_space_distributions.items(), key=lambda item: "." in item[0])
        for trial in trials:
            chosen: dict[str, Any] = dict(fixed_params)
            for name, distribution in groups_first:
                group = name.split(".", 1)[0]
                if "." in name and str(chosen.get(group)) == "none":
                    continue  # e.g. aggregate_encoder.bits when aggregate_encoder=none
                chosen[name] = trial._suggest(name, distribution)
            for name, value in fixed_params.items():
                trial.set_user_attr(name, value)
            if self.custom_search_space_extender:
                self.custom_search_space_extender(self.config, trial)
                chosen.update(trial.params)
            overrides.append(tuple(f"{name}={value}" for name, value in chosen.items()))
        return overrides

    def check_search_space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
        """The search space ``(distributions, fixed params)``, after checking it and the pruner (one-line errors).

        Raises:
            ConfigError: A sweep override is malformed, names an unknown key or option, or allows a bad value.
        """
        self._process_searchspace_config()
        try:
            build_pruner(self.pruner)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        distributions, fixed_params = check_search_space(
            self._parse_sweeper_params_config(), arguments, self.config, self.hydra_context.config_loader
        )
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed_params:
            distributions.pop(name, None)
        return distributions, fixed_params

    def sweep(self, arguments: list[str]) -> None:
        distributions, fixed_params = self.check_search_space(arguments)
        directions = self._get_directions()
        study, created = self._open_study(directions)
        if not created:
            # A worker joining a study (or resuming it) must not replay the seeded sampler's stream: workers started
            # with the same seed would suggest the same parameters as each other and as the trials already run.
            study.sampler.reseed_rng()
        os.environ[STORAGE_ENV] = self.storage  # for the jobs (see STORAGE_ENV)
        mlflow_cfg = self.config.mlflow
        parent_run_id = attach_parent_run(
            study=study,
            created_study=created,
            tracking_uri=mlflow_cfg.tracking_uri,
            experiment=mlflow_cfg.experiment,
            storage_url=self.storage,
        )
        self._fail_dead_trials(study, mlflow_cfg.tracking_uri, parent_run_id)
        _say(
            f"study {study.study_name!r} in {redact(self.storage)}: {self._trials_counted(study)} of "
            f"{self.n_trials} trials already there; objectives {directions}"
        )
        finished = failed = 0
        allowed_failures = math.floor(self.max_failure_rate * max(0, self.n_trials - self._trials_counted(study)))
        open_trials: list[optuna.trial.Trial] = []
        status = "FAILED"
        waiting_said = False
        try:
            while True:
                if (to_go := self.n_trials - self._trials_counted(study)) <= 0:
                    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if not running:
                        break
                    if not waiting_said:
                        _say(f"waiting for {len(running)} trial(s) running in other workers")
                        waiting_said = True
                    time.sleep(min(5.0, max(0.5, self.heartbeat_interval / 2)))
                    self._fail_dead_trials(study, mlflow_cfg.tracking_uri, parent_run_id)
                    continue
                waiting_said = False
                asked = [study.ask() for _ in range(min(self.n_jobs, to_go))]
                open_trials = self._drop_surplus(study, asked)
                if not open_trials:
                    continue
                overrides = [
                    (*trial_overrides, *self._link_overrides(study.study_name, trial.number, parent_run_id))
                    for trial, trial_overrides in zip(
                        open_trials, self._configure_trials(open_trials, distributions, fixed_params), strict=True
                    )
                ]
                heartbeat = _Heartbeat(study._storage, [t._trial_id for t in open_trials], self.heartbeat_interval)
                try:
                    returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
                finally:
                    heartbeat.stop()
                self.job_idx += len(returns)
                for trial, ret in zip(open_trials, returns, strict=True):
                    failed += not self._tell(study, trial, ret, len(directions))
                    finished += 1
                open_trials = []
                _say(f"{self._trials_counted(study)}/{self.n_trials} trials done ({failed} failed in this run)")
                if failed > allowed_failures:
                    raise TooManyFailures(
                        f"{failed} of {finished} trials failed, more than hydra.sweeper.max_failure_rate="
                        f"{self.max_failure_rate} allows; see the failed runs in MLflow"
                    )
                self._fail_dead_trials(study, mlflow_cfg.tracking_uri, parent_run_id)
            status = "FINISHED"
        except BaseException as error:
            status = "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"
            raise
        finally:
            for trial in open_trials:  # interrupted mid-batch: leave nothing RUNNING
                trial.set_user_attr(INTERRUPTED_ATTR, True)
                study.tell(trial, state=TrialState.FAIL)
            write_pareto_front(
                study,
                sweep_dir=Path(self.config.hydra.sweep.dir),
                tracking_uri=mlflow_cfg.tracking_uri,
                parent_run_id=parent_run_id,
                status=status,
            )

    def _link_overrides(self, study_name: str, trial_number: int, parent_run_id: str) -> tuple[str, ...]:
        return (
            f"trial.storage='${{oc.env:{STORAGE_ENV}}}'",
            f"trial.study_name='{study_name}'",
            f"trial.number={trial_number}",
            f"trial.parent_run_id={parent_run_id}",
        )

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn, n_objectives: int) -> bool:
        """Tell Optuna how the job ended; return False if it failed."""
        if ret.status == JobStatus.COMPLETED:
            values = [float(v) for v in ret.return_value]
            if len(values) == n_objectives and all(math.isfinite(v) for v in values):
                study.tell(trial, values=values)
                return True
            error: BaseException = ValueError(f"trial returned {ret.return_value!r}")
        else:
            error = ret._return_value
        if isinstance(error, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
            return True
        trial.set_user_attr(FAILURE_ATTR, f"{type(error).__name__}: {error}"[:1000])
        study.tell(trial, state=TrialState.FAIL)
        log.warning(f"trial {trial.number} failed: {type(error).__name__}: {error}")
        return False


@contextlib.contextmanager
def _heartbeats_are_experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for heartbeats, on which the sweep relies (stale-trial failing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts toward ``n_trials``: finished, running, or failed on its own."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and FAILURE_ATTR in trial.user_attrs


def _sqlalchemy_error() -> type[Exception]:
    from sqlalchemy.exc import SQLAlchemyError

    return SQLAlchemyError
