"""Hydra's optuna sweeper, extended: pruning, heartbeats, resumable totals, and an MLflow parent run.

Built on ``hydra_plugins.hydra_optuna_sweeper`` (search-space parsing, sampler and trial configuration are
theirs). What is added:

- The study lives in an RDB storage with heartbeats. A new sweep first marks failed the RUNNING trials whose
  heartbeat went stale (their sweep died); trials of live sweeps on the same study keep beating and are left alone.
- ``n_trials`` is the study's total: completed, pruned and failed trials, and trials running elsewhere, count.
- Each job gets ``trial.*`` overrides (storage, study, trial number, parent run) so it can report eval accuracy
  per round and be pruned (``fl_sweeps.sweep.trial_link``) and record a child run of the sweep's MLflow run.
- Params under a config group chosen as ``none`` are not suggested (``aggregate_encoder=none`` has no bits).
- Failed trials do not stop the sweep until more than ``max_failure_rate`` of the trials this run set out to
  do have failed.
- On an interrupt, this sweep's unfinished trials are marked failed, so none is left RUNNING.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from fl_sweeps.sweep.parent_run import open_parent_run, redact
from fl_sweeps.sweep.pareto_table import write_pareto_front

log = logging.getLogger(__name__)
FAILURE_ATTR = "failure"  # a trial that failed on its own (counts toward n_trials)
INTERRUPTED_ATTR = "interrupted"  # a trial cut short by stopping the sweep (does not count; it runs again)


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

    def _open_study(self, directions: list[str]) -> optuna.Study:
        if not isinstance(self.storage, str) or "://" not in self.storage:
            raise ValueError(f"hydra.sweeper.storage={self.storage!r} is not allowed: use a database URL")
        storage = optuna.storages.RDBStorage(
            self.storage, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period
        )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            directions=directions,
            load_if_exists=True,
        )
        optuna.storages.fail_stale_trials(study)
        return study

    def _trials_counted(self, study: optuna.Study) -> int:
        """Trials that count toward ``n_trials``: all but those failed because their sweep stopped or died."""
        counted = 0
        for trial in study.get_trials(deepcopy=False):
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
                counted += 1
            elif trial.state == TrialState.FAIL and FAILURE_ATTR in trial.user_attrs:
                counted += 1
        return counted

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

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        distributions, fixed_params = create_params_from_overrides(self._parse_sweeper_params_config() + arguments)
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed_params:
            distributions.pop(name, None)
        directions = self._get_directions()
        study = self._open_study(directions)
        mlflow_cfg = self.config.mlflow
        parent_run_id = open_parent_run(
            tracking_uri=mlflow_cfg.tracking_uri,
            experiment=mlflow_cfg.experiment,
            study_name=study.study_name,
            storage_url=self.storage,
        )
        _say(
            f"study {study.study_name!r} in {redact(self.storage)}: {self._trials_counted(study)} of "
            f"{self.n_trials} trials already there; objectives {directions}"
        )
        finished = failed = 0
        allowed_failures = math.floor(self.max_failure_rate * max(0, self.n_trials - self._trials_counted(study)))
        open_trials: list[optuna.trial.Trial] = []
        status = "FAILED"
        try:
            while (to_go := self.n_trials - self._trials_counted(study)) > 0:
                open_trials = [study.ask() for _ in range(min(self.n_jobs, to_go))]
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
                    raise RuntimeError(
                        f"{failed} of {finished} trials failed, more than hydra.sweeper.max_failure_rate="
                        f"{self.max_failure_rate} allows; see the failed runs in MLflow"
                    )
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
        storage = str(self.storage).replace("\\", "\\\\").replace("'", "\\'")
        return (
            f"trial.storage='{storage}'",
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
