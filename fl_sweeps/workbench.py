"""What the trials of one process share: built trials, their parts, loaded data sets and eval models.

A sweep runs many trials in one process. Most differ from an earlier one only in learning rates, seeds or training
settings, so their built TFF process is reused; others share parts of one (client work, encoded broadcast and
aggregation, server update, eval model, the seed's initial weights) or at least the data set. ``Workbench`` keeps
all of these, least recently used dropped first, and builds a trial from a config. ``fl_sweeps.experiment`` holds the
one the CLI uses; tests and benchmarks may make their own.
"""

from __future__ import annotations

import copy
import functools
import gc
import sys
import weakref
from typing import Any

from cachetools import LRUCache
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fl_sweeps.built_parts import BuiltParts
from fl_sweeps.compression.schedules import Constant, Schedule
from fl_sweeps.data.federated_data import FederatedData
from fl_sweeps.errors import DataError
from fl_sweeps.trainer import BuiltProcess, FederatedTrial, RunSettings, TrainingSettings, build_evaluator
from fl_sweeps.validation import check_clients_per_round

# Built trials kept by structure. Few, since each holds a TFF process and its data.
MAX_BUILT = 4
# Data sets kept by data config (a sweep usually has one).
MAX_LOADED = 2
# Built parts kept; a trial's process has about six.
MAX_PARTS = 32


class Workbench:
    """Builds trials from configs and keeps what later trials can reuse.

    - Built trials by structure (``structure_key``: data, model, optimizer kinds, algorithm, encoders, the values
      a compression schedule can take, eval mode), rerun by later trials that differ only in learning rates, seeds,
      training settings or how a schedule picks among the same values (``set_hparams``, ``BuiltProcess.select``).
    - Parts of built processes (``parts``), reused by trials of another structure that share a part: a trial that
      changes one encoder traces that encoder alone.
    - Data sets by data config, for trials of other structures on the same data.
    - The TFF worker's growth between trials (``recycle_worker_if_grown``).

    ``cfg.reuse_built_process=false`` builds every trial afresh and keeps nothing of it.
    """

    def __init__(self, *, max_built: int = MAX_BUILT, max_loaded: int = MAX_LOADED, max_parts: int = MAX_PARTS) -> None:
        self.built: LRUCache[str, FederatedTrial] = LRUCache(maxsize=max_built)
        self.loaded: LRUCache[str, FederatedData] = LRUCache(maxsize=max_loaded)
        self.parts = BuiltParts(max_items=max_parts)
        self._trials: weakref.WeakSet[FederatedTrial] = weakref.WeakSet()  # every trial built, for ``release``
        self._worker_growth: Any = None

    def build_trial(
        self, cfg: DictConfig, data: FederatedData | None = None, *, parallel_jobs: int = 1
    ) -> FederatedTrial:
        """The trial ``cfg`` describes: a kept one of the same structure, or one built now (and kept).

        Building starts the TFF worker if needed. ``data`` is the trial's data set if already loaded (default: load
        it, or take the kept one); ``parallel_jobs`` is how many trials run at once on this machine (their share of
        the cores).

        Raises:
            DataError: The data set cannot be read or partitioned as asked.
            ConfigError: More clients per round than the data set has clients.
        """
        key = self.structure_key(cfg) if cfg.reuse_built_process else None
        trial = self.built.get(key) if key is not None else None
        if trial is not None:
            data = trial.data
        elif data is None:
            data = self.data(cfg)
        check_clients_per_round(cfg.training.clients_per_round, data.num_clients, f"data set {data.name}")
        if trial is None:
            built = self.build_process(cfg, data, parallel_jobs=parallel_jobs)
            trial = FederatedTrial(built, build_evaluator(cfg.eval.mode, built))
            self._trials.add(trial)
            if key is not None:
                self.built[key] = trial
        return trial

    def build_process(
        self, cfg: DictConfig, data: FederatedData, *, algorithm: Any = None, parallel_jobs: int = 1
    ) -> BuiltProcess:
        """Build the TFF process of ``cfg`` on ``data`` (with this workbench's parts unless
        ``cfg.reuse_built_process`` is false), starting the TFF worker if needed.

        ``algorithm`` replaces the ``algorithm`` config group's builder (same keyword arguments), e.g. to compare
        with a reference implementation.
        """
        from fl_sweeps import quiet, tff_runtime

        quiet.quiet_absl()
        tff_runtime.install_signal_handlers()
        tff_runtime.share_cores(parallel_jobs)
        tff_runtime.ensure_worker()
        reuse = bool(cfg.reuse_built_process)
        built = self.as_built(cfg)
        encoders = {side: instantiate(built[side]) for side in ("broadcast_encoder", "aggregate_encoder")}
        schedule = self.schedule(cfg)
        variants = self.encoder_variants(cfg, schedule)
        algorithm = algorithm or instantiate(cfg.algorithm)
        if cfg.compression.verify_coding:  # validation allows it with fedavg_core only
            algorithm = functools.partial(algorithm, verify_coding=True)
        return BuiltProcess(
            data=data,
            model_builder=instantiate(cfg.model),
            client_optimizer=instantiate(cfg.client_optimizer),
            server_optimizer=instantiate(cfg.server_optimizer),
            **encoders,
            algorithm=algorithm,
            parts=self.parts if reuse else None,
            model_key=self.model_key(cfg) if reuse else None,
            variants=variants,
            variant_setting=schedule.key or "",
        )

    @staticmethod
    def schedule(cfg: DictConfig) -> Schedule:
        """The compression schedule of ``cfg`` (``schedule`` config group; ``Constant`` if the config has none)."""
        return instantiate(cfg.schedule) if "schedule" in cfg else Constant()

    @staticmethod
    def encoder_variants(cfg: DictConfig, schedule: Schedule) -> dict[Any, dict[str, Any]]:
        """The scheduled encoder for each value ``schedule`` can take: ``{4: {"aggregate_encoder": encoder}}``.

        Each is instantiated from ``cfg`` with the setting changed, so the option's stages that refer to it
        (``bits: ${...bits}``) change with it.
        """
        side, setting = str(schedule.side), str(schedule.setting)
        variants = {}
        for value in schedule.values:
            changed = copy.deepcopy(cfg)
            changed[side][setting] = value
            variants[value] = {side: instantiate(changed[side])}
        return variants

    def data(self, cfg: DictConfig) -> FederatedData:
        """The trial's data set, loaded once per data config when built processes are reused."""
        if not cfg.reuse_built_process:
            return self.load_data(cfg.data)
        key = OmegaConf.to_yaml(OmegaConf.to_container(cfg.data, resolve=True))
        if key not in self.loaded:
            self.loaded[key] = self.load_data(cfg.data)
        return self.loaded[key]

    @staticmethod
    def load_data(node: DictConfig) -> FederatedData:
        """Instantiate the data loader of the ``data`` config ``node``, re-raising its ``DataError`` as is (Hydra
        wraps it in a multi-line error)."""
        try:
            return instantiate(node)
        except InstantiationException as error:
            if isinstance(error.__cause__, DataError):
                raise error.__cause__ from None
            raise

    def forget(self, cfg: DictConfig) -> FederatedTrial | None:
        """Stop keeping the built trial of ``cfg``'s structure; returns it (None if none was kept)."""
        return self.built.pop(self.structure_key(cfg), None)

    @staticmethod
    def structure_key(cfg: DictConfig) -> str:
        """What a built TFF process depends on; everything else is set per run (the encoders' settings that are
        inputs of the process too: ``built_key``)."""

        def plain(node: Any) -> Any:
            return OmegaConf.to_container(node, resolve=True)

        def built(node: Any) -> str:
            return repr(instantiate(node).built_key())

        key = {
            "data": plain(cfg.data),
            "model": plain(cfg.model),
            "client_optimizer": cfg.client_optimizer._target_,
            "server_optimizer": cfg.server_optimizer._target_,
            "algorithm": plain(cfg.algorithm),
            "broadcast_encoder": built(cfg.broadcast_encoder),
            "aggregate_encoder": built(cfg.aggregate_encoder),
            "eval_mode": cfg.eval.mode,
            "verify_coding": cfg.compression.verify_coding,
        }
        schedule = OmegaConf.select(cfg, "schedule", default=None)
        if schedule is not None and "side" in schedule:  # a process per value; the configured one never runs
            side, setting, values = str(schedule.side), str(schedule.setting), list(schedule["values"])
            key[side] = built(Workbench.as_built(cfg)[side])
            key["schedule"] = {"setting": f"{side}.{setting}", "values": sorted(set(values), key=str)}
        return OmegaConf.to_yaml(key)

    @staticmethod
    def as_built(cfg: DictConfig) -> DictConfig:
        """``cfg`` as its process is built: a scheduled setting at the schedule's first value (the configured value
        may never run), so the option's stages that refer to it (``bits: ${...bits}``) follow; else ``cfg``."""
        schedule = OmegaConf.select(cfg, "schedule", default=None)
        if schedule is None or "side" not in schedule or not schedule["values"]:
            return cfg
        built = copy.deepcopy(cfg)
        built[str(schedule.side)][str(schedule.setting)] = schedule["values"][0]
        return built

    @staticmethod
    def model_key(cfg: DictConfig) -> str:
        """What the model a trial trains depends on: its config and the data's (input shape, classes)."""
        return OmegaConf.to_yaml({name: OmegaConf.to_container(cfg[name], resolve=True) for name in ("data", "model")})

    @staticmethod
    def optimizer_hparams(node: DictConfig) -> dict[str, float]:
        """An optimizer config as TFF hyperparameters (``lr`` is TFF's ``learning_rate``)."""
        return {("learning_rate" if k == "lr" else k): float(v) for k, v in node.items() if k != "_target_"}

    @classmethod
    def run_settings(cls, cfg: DictConfig) -> RunSettings:
        """What ``cfg`` sets per run of a built trial: training settings, seed, eval period, learning rates, and the
        encoders (whose settings that are inputs of the process are written into its state)."""
        schedule = cls.schedule(cfg)
        return RunSettings(
            training=TrainingSettings(**OmegaConf.to_container(cfg.training)),
            seed=cfg.seed,
            eval_every=cfg.eval.every,
            eval_split=str(cfg.eval.split),
            client_hparams=cls.optimizer_hparams(cfg.client_optimizer),
            server_hparams=cls.optimizer_hparams(cfg.server_optimizer),
            schedule=schedule,
            encoders={side: instantiate(cfg[side]) for side in ("broadcast_encoder", "aggregate_encoder")},
            scheduled_encoders=cls.encoder_variants(cfg, schedule),
        )

    def recycle_worker_if_grown(self, max_growth: float | None) -> bool:
        """Between trials: restart the TFF worker if it has grown more than ``max_growth`` (a fraction) since the
        warm-up trials (never before TFF is imported). Returns whether it restarted it."""
        if "tensorflow_federated" not in sys.modules:
            return False
        from fl_sweeps import tff_runtime

        if self._worker_growth is None:
            self._worker_growth = tff_runtime.WorkerGrowth()
        return self._worker_growth.recycle_if_grown(max_growth)

    def release(self) -> None:
        """Drop every kept trial, part, data set and eval function; call when no computation is running.

        Kept parts hold TensorFlow functions, and a TensorFlow function still alive when the interpreter tears its
        modules down fails in ``__del__`` ("Exception ignored in AtomicFunction.__del__"). Freeing them while TFF's
        thread still runs a computation (a signal mid-round) is not safe, so only a program that ends normally and
        tears its modules down calls this (the test session); ``fl-sweep`` ends without the teardown
        (``tff_runtime.exit_now``). Trials built here cannot evaluate afterwards.
        """
        for trial in list(self._trials):
            trial.evaluator.release()
        self.built.clear()
        self.loaded.clear()
        self.parts.clear()
        gc.collect()
