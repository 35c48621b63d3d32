"""The end-of-sweep report as a Hydra callback: when a sweep's jobs are done, analyse its runs from MLflow.

Configured in the sweep overlays (``conf/sweep/*.yaml``), so the sweeper never calls the analysis::

    hydra:
      callbacks:
        sweep_report:
          _target_: analysis.sweep_report.SweepReport
          tracking_uri: ${mlflow.tracking_uri}
          experiment: ${mlflow.experiment}
          study: ${hydra.sweeper.study_name}
          out_dir: ${hydra.sweep.dir}/report

Hydra calls ``on_multirun_end`` after the sweeper returned, so the sweep's parent run is already ended and holds
every trial; the report's files are logged to it under ``report/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from analysis.report import write_report
from analysis.runs import LoadError


class SweepReport(Callback):
    """Write ``fl-sweep-report``'s report of a study into ``out_dir`` and log it to the study's parent run.

    Args:
        tracking_uri: MLflow tracking URI of the sweep.
        experiment: MLflow experiment holding the sweep's parent run.
        study: The sweep's study name (its parent run carries it as a tag).
        out_dir: Folder to write the report into.
    """

    def __init__(self, *, tracking_uri: str, experiment: str, study: str, out_dir: str) -> None:
        self.tracking_uri, self.experiment, self.study, self.out_dir = tracking_uri, experiment, study, Path(out_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the report; a sweep's results are already recorded, so a report that cannot be made only warns."""
        try:
            summary = write_report(
                self.tracking_uri, experiment=self.experiment, study=self.study, out_dir=self.out_dir
            )
        except LoadError as error:  # e.g. no trial finished
            print(f"[fl-sweep] no report: {error}", flush=True)
            return
        except Exception as error:  # noqa: BLE001 - never lose a finished sweep over its report
            print(f"[fl-sweep] the report failed ({type(error).__name__}: {error}); the runs are in MLflow", flush=True)
            return
        print(f"[fl-sweep] report with plots: {summary.parent}", flush=True)
