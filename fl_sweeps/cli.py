"""``fl-sweep``: the Hydra app. One trial by default, a sweep with ``--multirun``.

Kept thin: compose config → ``run_trial`` → return ``(final eval accuracy, total bits)`` to the sweeper.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import fl_sweeps.quiet  # noqa: F401  (silences TF before anything imports it)
from fl_sweeps.centralized import train_centralized
from fl_sweeps.cli_help import register_resolver
from fl_sweeps.errors import ConfigError, DataError, TrialPruned, UnsupportedVersionError
from fl_sweeps.experiment import WORKBENCH, run_trial
from fl_sweeps.mlflow_store import redact
from fl_sweeps.preflight import user_error
from fl_sweeps.schema import register_configs
from fl_sweeps.trial_line import trial_line

log = logging.getLogger("fl_sweeps.cli")


def config_dir() -> Path:
    """``conf/``: inside the package when installed from a wheel, beside it in a source checkout."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"


register_configs()
register_resolver()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _app(cfg: DictConfig) -> tuple[float, float] | dict[str, float]:
    """Hydra task: one trial; returns the objectives ``(final eval accuracy, total bits)``, the accuracy on
    ``eval.split`` (the sweep's centralized reference job returns its accuracy by split).

    Logs one compact line when the trial ends (console and the trial's ``cli.log``), however it ends.
    """
    if cfg.trial.centralized_reference:
        return train_centralized(cfg, WORKBENCH)
    hydra = HydraConfig.get()
    started = time.monotonic()

    def say(state: str, **objectives: Any) -> None:
        line = trial_line(
            number=cfg.trial.number,
            overrides=hydra.overrides.task,
            state=state,
            seconds=time.monotonic() - started,
            **objectives,
        )
        log.info(line)

    try:
        result = run_trial(cfg)
    except (ConfigError, DataError) as error:
        if hydra.mode == RunMode.MULTIRUN:
            say("failed")
            raise
        sys.exit(f"fl-sweep: error: {error}")
    except TrialPruned as pruned:
        say(f"pruned at round {pruned.round}")
        raise
    except Exception:
        say("failed")
        raise
    say("complete", accuracy_by_split=result.accuracy_by_split, total_bits=result.total_bits)
    if hydra.mode != RunMode.MULTIRUN:
        accuracies = " | ".join(f"{split} accuracy {value:.4f}" for split, value in result.accuracy_by_split.items())
        log.info(
            f"{accuracies} | {result.total_bits / 1e6:,.2f} Mbit communicated | "
            f"MLflow run {result.run_id} in {redact(cfg.mlflow.tracking_uri)} (experiment {cfg.mlflow.experiment!r})"
        )
    return result.eval_accuracy, float(result.total_bits)


def main() -> None:
    """Console entry point: run the Hydra app and stop the TFF worker however it ends.

    A run that succeeds ends without the interpreter's slow teardown of TensorFlow (``runtime.exit_now``).
    """
    try:
        from fl_sweeps import tff_runtime as runtime
    except UnsupportedVersionError as error:  # its workarounds do not fit the installed TF/TFF
        sys.exit(f"fl-sweep: error: {error}")
    try:
        runtime.install_signal_handlers()
    except ValueError as error:  # a bad FL_SWEEPS_EXIT_GRACE_SECONDS, before any work
        sys.exit(f"fl-sweep: error: {error}")
    try:
        run(sys.argv[1:])
        runtime.exit_now(0)  # stops the worker with the atexit handlers
    finally:
        runtime.stop_worker()


def run(args: list[str]) -> None:
    """Run the Hydra app on command-line ``args`` as ``fl-sweep`` does, in this interpreter, and return.

    The console script is this plus the process's exit; tests call it to run many commands in one process.

    Bad input (an override that does not parse, a wrong type, an unknown key or option, a value out of range, an
    output place that cannot be written) ends in one line naming the setting; other errors keep their traceback.
    ``HYDRA_FULL_ERROR=1`` set by the user shows Hydra's full traceback for everything.

    Raises:
        SystemExit: ``fl-sweep: error: ...`` for bad input; Hydra's own exits (``--help``, ``--cfg``).
    """
    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own multi-line report
    argv = sys.argv[1:]
    try:
        sys.argv[1:] = show_config_args(args)
        _app()
    except Exception as error:
        overrides = [arg for arg in args if not arg.startswith("-")]
        message = None if user_setting == "1" else user_error(error, overrides)
        if message is None:
            raise
        sys.exit(f"fl-sweep: error: {message}")
    finally:
        sys.argv[1:] = argv
        if user_setting is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_setting


def show_config_args(args: list[str]) -> list[str]:
    """``--multirun --cfg job`` (which Hydra refuses) as ``--cfg job hydra.mode=MULTIRUN``: the config a sweep composes.

    Search-space overrides (``choice``, ``interval``, ...) are left out: the sweeper sets those values per trial.
    Any other combination of arguments is returned unchanged.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = {"--multirun", "-m"}
    show = any(arg in ("--cfg", "-c") or arg.startswith("--cfg=") for arg in args)
    if not (show and multirun & set(args)):
        return args
    kept = [arg for arg in args if arg not in multirun]
    overrides = [arg for arg in kept if "=" in arg and not arg.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = {override.input_line for override in parsed if override.is_sweep_override()}
    return [*(arg for arg in kept if arg not in sweeps), "hydra.mode=MULTIRUN"]


if __name__ == "__main__":
    main()
