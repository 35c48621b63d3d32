"""The ``fl_optuna`` sweep: multi-objective Optuna ask/tell over Hydra's launcher, with pruning, heartbeats,
resumable totals, several workers on one study, and an MLflow parent run.

Built on public interfaces only: Hydra's ``Sweeper``/``Launcher`` plugins and override parser, and Optuna's study
ask/tell, ``suggest_*`` and RDB storage API.

- The study lives in an RDB storage with heartbeats (sqlite, or PostgreSQL shared by workers on several hosts).
  Before each batch the sweep marks failed the RUNNING trials whose heartbeat went stale (their worker died), and
  ends their MLflow runs KILLED; trials of live workers on the same study keep beating and are left alone.
- ``n_trials`` is the study's total: completed, pruned and failed trials, and trials running elsewhere, count.
  Several workers may run the same sweep on one study: trial numbers come from the storage, a trial asked after
  the total was reached by others is marked failed at once as surplus (never run, never counted), and a worker
  with nothing left to ask waits until the trials of other workers end, rerunning any whose worker died.
- Each job gets ``trial.*`` overrides (storage, study, trial number, parent run, parallel jobs); the pruner's
  config is recorded in the study, so the job reports eval accuracy per round and is pruned
  (``fl_sweeps.sweep.trial_link``) and records a child run of the sweep's MLflow run.
- Params under a config group chosen as ``none`` are not suggested (``aggregate_encoder=none`` has no bits).
- Failed trials do not stop the sweep until more than ``max_failure_rate`` of the trials this run set out to
  do have failed.
- On an interrupt, this sweep's unfinished trials are marked failed, so none is left RUNNING.
- A new study first runs its reference trials (``fl_sweeps.sweep.references``) and one job that trains the
  centralized reference (the model trained on the pooled data: the accuracy ceiling, a metric of the parent run).
- With ``repeats`` > 1 each trial's configuration runs once per seed, one repeat after another, under an MLflow run
  of its own; Optuna is told the means (``fl_sweeps.sweep.repeats``).
- Each pruned trial gets one line saying why (the reason the job's pruner recorded in the trial).
- The parent run gets a description (study, what it sweeps, trials, repeats, front) and the front's metrics
  (``front/*``, ``fl_sweeps.sweep.front_metrics``) when the sweep starts and ends, so MLflow's runs table and
  Compare show studies side by side; trial runs are named with their study (``digits · trial 3``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import random
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import InstantiationException
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from fl_sweeps.errors import ConfigError, TooManyFailures, first_line
from fl_sweeps.mlflow_store import quiet_client, redact
from fl_sweeps.sweep.front_metrics import describe_sweep, front_metrics
from fl_sweeps.sweep.parent_run import (
    attach_parent_run,
    close_orphan_runs,
    describe_parent_run,
    end_configuration_run,
    end_parent_run,
    open_configuration_run,
)
from fl_sweeps.sweep.pareto_table import write_pareto_front
from fl_sweeps.sweep.references import enqueue_reference_trials
from fl_sweeps.sweep.repeats import repeat_overrides, summarize
from fl_sweeps.sweep.search_space import SearchSpace, check_search_space
from fl_sweeps.sweep.trial_link import PRUNED_BECAUSE_ATTR, PRUNER_ATTR, build_pruner

log = logging.getLogger(__name__)
FAILURE_ATTR = "failure"  # a trial that failed on its own (counts toward n_trials)
INTERRUPTED_ATTR = "interrupted"  # a trial cut short by stopping the sweep (does not count; it runs again)
SURPLUS_ATTR = "surplus"  # asked after other workers had reached n_trials: never run, does not count
REPEATS_ATTR = "fl_sweeps.repeat_values"  # trial user attr: the objectives of each repeat, in seed order
CENTRALIZED_ATTR = "fl_sweeps.centralized_eval_accuracy"  # study user attr: the centralized reference's accuracy
# The jobs read the storage URL from this variable (set by the sweeper), so the URL and its password stay out of
# the job overrides that Hydra logs and saves; launchers on other hosts need it set in the job's environment.
STORAGE_ENV = "FL_SWEEPS_OPTUNA_STORAGE"
OPEN_RETRIES = 6
GRID_SAMPLERS = (optuna.samplers.GridSampler, optuna.samplers.BruteForceSampler)  # stop the study when done


def _say(message: str) -> None:
    """Sweep progress for the person watching (Hydra's logging shows only its own logger while sweeping)."""
    print(f"[fl-sweep] {message}", flush=True)


class _Heartbeat:
    """Records heartbeats of the given trials every ``interval`` seconds in a background thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: list[int], interval: float) -> None:
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


class _OpenedStudy:
    """An opened study with the storage this worker built for it (heartbeats and ids go through the storage)."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.RDBStorage, created: bool) -> None:
        self.study, self.storage, self.created = study, storage, created
        self.study_id = storage.get_study_id_from_name(study.study_name)

    def trial_id(self, trial: optuna.Trial) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)


class ParetoSweep:
    """The sweep behind the ``fl_optuna`` Hydra sweeper plugin; arguments as in ``ParetoSweeperConf``."""

    def __init__(
        self,
        *,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: list[str],
        metric_names: list[str],
        storage: str,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        heartbeat_interval: int,
        grace_period: int,
        repeats: int = 1,
        reference_trials: bool = True,
        centralized_reference: bool = True,
    ) -> None:
        self.sampler_config, self.pruner_config = sampler, pruner
        self.sampler_done = False  # a grid sampler has visited every point (``_tell_study``)
        self.directions, self.metric_names = list(direction), list(metric_names)
        self.storage_url, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = params
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.repeats, self.reference_trials = repeats, reference_trials
        self.centralized_reference = centralized_reference
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep the config and build the launcher that runs the jobs (Hydra's ``Sweeper.setup``)."""
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def check_search_space(self, arguments: list[str]) -> SearchSpace:
        """The search space, after checking it and the sweeper's own settings (one-line ``ConfigError``s).

        Args:
            arguments: The task overrides of the command line (they take precedence over ``hydra.sweeper.params``).
        """
        if not isinstance(self.storage_url, str) or "://" not in self.storage_url:
            raise ConfigError(f"hydra.sweeper.storage={self.storage_url!r} is not allowed: use a database URL")
        if not 0 <= self.max_failure_rate <= 1:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate} is not allowed: use 0 to 1")
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={self.n_trials}, n_jobs={self.n_jobs}: both must be >= 1")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ConfigError(f"hydra.sweeper.repeats={self.repeats} is not allowed: use an integer >= 1")
        if len(self.directions) != len(self.metric_names):
            raise ConfigError(
                f"hydra.sweeper.direction={self.directions} and metric_names={self.metric_names} must be as long"
            )
        self._sampler()
        build_pruner(self.pruner_config)
        params = [f"{key}={value}" for key, value in (self.params or {}).items()]
        return check_search_space([*params, *arguments], self.config, self.hydra_context.config_loader)

    def _sampler(self) -> optuna.samplers.BaseSampler:
        """A new sampler as ``hydra.sweeper.sampler`` describes it."""
        try:
            sampler = instantiate(self.sampler_config)
        except (InstantiationException, ValueError, TypeError) as error:
            raise ConfigError(f"hydra.sweeper.sampler is not usable: {first_line(error.__cause__ or error)}") from None
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            raise ConfigError(f"hydra.sweeper.sampler: {self.sampler_config.get('_target_')} is not an Optuna sampler")
        return sampler

    def _open_study(self) -> _OpenedStudy:
        """Open (or create) the study; also say whether this worker created it (then it owns the parent run).

        Workers starting at the same instant race to create the schema and the study; the storage settles it (a
        unique study name), and a worker that loses a schema race retries.
        """
        for attempt in range(1, OPEN_RETRIES + 1):
            try:
                with _heartbeats_are_experimental():
                    storage = optuna.storages.RDBStorage(
                        self.storage_url, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period
                    )
                sampler = self._sampler()
                try:
                    study = optuna.create_study(
                        study_name=self.study_name, storage=storage, sampler=sampler, directions=self.directions
                    )
                    created = True
                except optuna.exceptions.DuplicatedStudyError:
                    study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=sampler)
                    created = False
                with _heartbeats_are_experimental():  # set_metric_names is experimental too
                    study.set_metric_names(self.metric_names)
                return _OpenedStudy(study, storage, created=created)
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

    def _drop_surplus(self, study: optuna.Study, asked: list[optuna.Trial]) -> list[optuna.Trial]:
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

    def sweep(self, arguments: list[str]) -> None:
        """Run trials until the study holds ``n_trials`` (Hydra's ``Sweeper.sweep``)."""
        space = self.check_search_space(arguments)
        opened = self._open_study()
        study = opened.study
        if not opened.created:
            # A worker joining a study (or resuming it) must not replay the seeded sampler's stream: workers started
            # with the same seed would suggest the same parameters as each other and as the trials already run.
            study.sampler.reseed_rng()
        study.set_user_attr(PRUNER_ATTR, OmegaConf.to_container(self.pruner_config, resolve=True))
        os.environ[STORAGE_ENV] = self.storage_url  # for the jobs (see STORAGE_ENV)
        mlflow_cfg = self.config.mlflow
        parent_run_id = attach_parent_run(
            study=study,
            created_study=opened.created,
            tracking_uri=mlflow_cfg.tracking_uri,
            experiment=mlflow_cfg.experiment,
            storage_url=self.storage_url,
        )
        self._describe(study, space, parent_run_id)
        if opened.created:
            self._start_study(study, space, parent_run_id)
        self._warn_if_pruning_cannot_start()
        self._fail_dead_trials(study, mlflow_cfg.tracking_uri, parent_run_id)
        _say(
            f"study {study.study_name!r} in {redact(self.storage_url)}: {self._trials_counted(study)} of "
            f"{self.n_trials} trials already there; objectives {self.metric_names} {self.directions}"
        )
        finished = failed = 0
        allowed_failures = math.floor(self.max_failure_rate * max(0, self.n_trials - self._trials_counted(study)))
        open_trials: list[optuna.Trial] = []
        status = "FAILED"
        waiting_said = False
        try:
            while not self.sampler_done:
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
                finished += len(open_trials)
                failed += self._run_batch(opened, space, open_trials, parent_run_id)
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
            running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            for trial in open_trials:  # interrupted mid-batch: leave nothing RUNNING
                if trial.number in running:
                    trial.set_user_attr(INTERRUPTED_ATTR, True)
                    study.tell(trial, state=TrialState.FAIL)
            write_pareto_front(
                study,
                sweep_dir=Path(self.config.hydra.sweep.dir),
                tracking_uri=mlflow_cfg.tracking_uri,
                parent_run_id=parent_run_id,
                eval_split=str(self.config.eval.split),
            )
            self._describe(study, space, parent_run_id)
            end_parent_run(tracking_uri=mlflow_cfg.tracking_uri, run_id=parent_run_id, status=status)

    def _describe(self, study: optuna.Study, space: SearchSpace, parent_run_id: str) -> None:
        """Write the study, what it sweeps, its trials and its front (``front/*`` metrics) to its parent run."""
        metrics = front_metrics(study)
        describe_parent_run(
            tracking_uri=self.config.mlflow.tracking_uri,
            run_id=parent_run_id,
            description=describe_sweep(
                study, distributions=space.distributions, n_trials=self.n_trials, repeats=self.repeats, metrics=metrics
            ),
            metrics=metrics,
        )

    def _parallel_jobs(self) -> int:
        """How many of this worker's trials run at once on its machine: its batch, or fewer if the launcher
        runs fewer at a time (``n_jobs`` of a local pool such as joblib's; a launcher without it runs one)."""
        launcher_jobs = self.config.hydra.launcher.get("n_jobs", 1)
        if launcher_jobs is None or launcher_jobs == 0:
            launcher_jobs = os.cpu_count() or 1
        elif launcher_jobs < 0:  # joblib's convention: -1 is every core, -2 all but one, ...
            launcher_jobs = max(1, (os.cpu_count() or 1) + 1 + launcher_jobs)
        return max(1, min(self.n_jobs, int(launcher_jobs)))

    def _link_overrides(self, study_name: str, trial_number: int, parent_run_id: str) -> tuple[str, ...]:
        return (
            f"trial.storage='${{oc.env:{STORAGE_ENV}}}'",
            f"trial.study_name='{study_name}'",
            f"trial.number={trial_number}",
            f"trial.parent_run_id={parent_run_id}",
            f"trial.parallel_jobs={self._parallel_jobs()}",
        )

    def _start_study(self, study: optuna.Study, space: SearchSpace, parent_run_id: str) -> None:
        """A new study's first work: enqueue its reference trials and train its centralized reference."""
        if self.reference_trials:
            names = enqueue_reference_trials(study, space, self.config)
            if names:
                _say(f"reference trials first: {', '.join(names)} (hydra.sweeper.reference_trials=false: none)")
        if self.centralized_reference:
            self._run_centralized_reference(study, parent_run_id)

    def _run_centralized_reference(self, study: optuna.Study, parent_run_id: str) -> None:
        """Launch the job that trains the model on the pooled data and record its accuracy, the ceiling of the
        front, in the study and as a metric of the parent run; the sweep goes on without it if it fails."""
        overrides = [
            (
                "trial.centralized_reference=true",
                f"trial.parent_run_id={parent_run_id}",
                f"trial.parallel_jobs={self._parallel_jobs()}",
                "hydra.sweep.subdir=centralized_reference",
            )
        ]
        (ret,) = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        self.job_idx += 1
        try:
            accuracies = {name: float(value) for name, value in ret.return_value.items()}
        except Exception as error:  # noqa: BLE001 - the reference is worth having, not worth stopping the sweep
            _say(f"centralized reference failed ({first_line(error)}); the sweep goes on without it")
            return
        study.set_user_attr(CENTRALIZED_ATTR, accuracies["eval_accuracy"])
        client = quiet_client(self.config.mlflow.tracking_uri)
        for name, accuracy in accuracies.items():  # reference/centralized_{eval,validation,test}_accuracy
            client.log_metric(parent_run_id, f"reference/centralized_{name}", accuracy)
        shown = ", ".join(
            f"{name.removesuffix('_accuracy')} {value:.4f}"
            for name, value in accuracies.items()
            if name != "eval_accuracy"
        )
        _say(f"centralized reference (the same model trained on the pooled training data): accuracy {shown}")

    def _warn_if_pruning_cannot_start(self) -> None:
        """One line when ``training.rounds`` ends before the pruner's warm-up does (no trial can be pruned)."""
        warmup = (self.pruner_config or {}).get("n_warmup_steps")
        rounds = self.config.training.rounds
        if isinstance(warmup, int) and isinstance(rounds, int) and rounds <= warmup:
            _say(
                f"warning: training.rounds={rounds} is too short for hydra.sweeper.pruner.n_warmup_steps={warmup}: "
                "no trial will be pruned (a trial is never pruned at its last round)"
            )

    def _run_batch(
        self, opened: _OpenedStudy, space: SearchSpace, trials: list[optuna.Trial], parent_run_id: str
    ) -> int:
        """Run one batch of trials, each ``repeats`` times (one repeat after another, the trials of a repeat
        together), and tell Optuna how each ended. A trial leaves ``trials`` once told, so what is left there
        after an interrupt is this sweep's to mark failed. Returns how many failed."""
        study, tracking_uri = opened.study, self.config.mlflow.tracking_uri
        suggested = {t.number: tuple(f"{key}={value}" for key, value in space.suggest(t).items()) for t in trials}
        runs_under = {t.number: parent_run_id for t in trials}
        if self.repeats > 1:
            runs_under = {
                t.number: open_configuration_run(
                    tracking_uri=tracking_uri,
                    parent_run_id=parent_run_id,
                    study_name=study.study_name,
                    trial_number=t.number,
                    repeats=self.repeats,
                )
                for t in trials
            }
        values: dict[int, list[list[float]]] = {t.number: [] for t in trials}
        failed = 0
        heartbeat = _Heartbeat(opened.storage, [opened.trial_id(t) for t in trials], self.heartbeat_interval)
        try:
            for repeat in range(self.repeats):
                batch = list(trials)
                overrides = [
                    (
                        *suggested[t.number],
                        *self._link_overrides(study.study_name, t.number, runs_under[t.number]),
                        *(repeat_overrides(self.config, repeat) if self.repeats > 1 else ()),
                    )
                    for t in batch
                ]
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
                self.job_idx += len(returns)
                for trial, ret in zip(batch, returns, strict=True):
                    outcome = self._outcome(ret)
                    if isinstance(outcome, list):
                        values[trial.number].append(outcome)
                        if repeat < self.repeats - 1:
                            continue
                    told = values[trial.number] if isinstance(outcome, list) else outcome
                    ended = _ending(told)
                    if self.repeats > 1:  # before Optuna hears of it: another worker that finds the trial finished
                        # and its run still RUNNING would end that run as orphaned (close_orphan_runs)
                        self._end_configuration_run(runs_under[trial.number], values[trial.number], ended)
                    self._tell(opened, trial, told)
                    failed += ended == "failed"
                    trials.remove(trial)
        finally:
            heartbeat.stop()
        return failed

    def _outcome(self, ret: JobReturn) -> list[float] | BaseException:
        """A job's objective values, or what it raised (``TrialPruned`` when pruned)."""
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):  # Hydra says which job failed; not worth saying for a pruned one
                returned = ret.return_value  # re-raises the job's exception when it failed
        except Exception as raised:  # noqa: BLE001 - whatever the job raised, the trial is told
            if not isinstance(raised, optuna.TrialPruned):
                sys.stderr.write(said.getvalue())
            return raised
        values = _objective_values(returned) if ret.status == JobStatus.COMPLETED else None
        if values is not None and len(values) == len(self.directions):
            return values
        return ValueError(f"trial returned {returned!r}, not {len(self.directions)} finite numbers")

    def _tell(self, opened: _OpenedStudy, trial: optuna.Trial, outcome: list[list[float]] | BaseException) -> None:
        """Tell Optuna how a trial ended (``_ending``): the means of its repeats' values, pruned (saying why), or
        failed."""
        study = opened.study
        if isinstance(outcome, optuna.TrialPruned):
            attrs = opened.storage.get_trial(opened.trial_id(trial)).user_attrs
            round_num = getattr(outcome, "round", None)
            _say(f"trial {trial.number} pruned at round {round_num}: {attrs.get(PRUNED_BECAUSE_ATTR, 'by the pruner')}")
            self._tell_study(study, trial, state=TrialState.PRUNED)
            return
        if isinstance(outcome, BaseException):
            trial.set_user_attr(FAILURE_ATTR, f"{type(outcome).__name__}: {outcome}"[:1000])
            self._tell_study(study, trial, state=TrialState.FAIL)
            log.warning(f"trial {trial.number} failed: {type(outcome).__name__}: {outcome}")
            return
        means, _ = summarize(outcome, self.metric_names)
        if self.repeats > 1:
            trial.set_user_attr(REPEATS_ATTR, outcome)
        self._tell_study(study, trial, values=means)

    def _tell_study(self, study: optuna.Study, trial: optuna.Trial, **outcome: Any) -> None:
        """``study.tell``, letting a grid sampler end its grid.

        ``GridSampler`` and ``BruteForceSampler`` call ``study.stop()`` once every point was visited, which Optuna
        allows only inside ``optimize`` (a ``RuntimeError`` with ask and tell). Optuna has stored the trial by then
        (``tell`` stores it in a ``finally``), so the sweep notes that the sampler is done and ends.
        """
        try:
            study.tell(trial, **outcome)
        except RuntimeError:
            if not isinstance(study.sampler, GRID_SAMPLERS):
                raise
            self.sampler_done = True

    def _end_configuration_run(self, run_id: str, values: list[list[float]], ended: str) -> None:
        """End the MLflow run of a configuration with its repeats' summary (when they all completed)."""
        summary = summarize(values, self.metric_names)[1] if ended == "complete" else {}
        status = {"complete": "FINISHED", "pruned": "KILLED"}.get(ended, "FAILED")
        tracking_uri = self.config.mlflow.tracking_uri
        end_configuration_run(
            tracking_uri=tracking_uri, run_id=run_id, summary=summary, trial_state=ended, status=status
        )


def _ending(outcome: list[list[float]] | BaseException) -> str:
    """How a trial ended: ``complete`` (its repeats' values), ``pruned`` or ``failed`` (what it raised)."""
    if isinstance(outcome, optuna.TrialPruned):
        return "pruned"
    return "failed" if isinstance(outcome, BaseException) else "complete"


def _objective_values(returned: Any) -> list[float] | None:
    """A job's return value as finite objective values, or None if it is not a sequence of finite numbers."""
    try:
        values = [float(value) for value in returned]
    except (TypeError, ValueError):
        return None
    return values if all(math.isfinite(value) for value in values) else None


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
