"""Shared by the fidelity benchmarks: compose an fl-sweeps config, build its trial, train it round by round.

Every round is appended to a JSON-lines file as soon as it finishes, so a run cut short (deadline, Ctrl-C) still
leaves its data. Not a benchmark itself; ``fedavg_paper.py`` and ``bits_to_accuracy.py`` use it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import fl_sweeps.quiet  # noqa: F401  (before TF)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def compose(overrides: Sequence[str]) -> Any:
    """The project's config with ``overrides``, composed as the CLI would (schemas registered)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from fl_sweeps.cli import config_dir
    from fl_sweeps.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def build(cfg: Any, data: Any = None) -> Any:
    """Validate ``cfg`` and build its ``FederatedTrial`` on ``data`` (default: load it) with the CLI's workbench
    (starts our TFF worker)."""
    from fl_sweeps.experiment import WORKBENCH
    from fl_sweeps.validation import validate

    validate(cfg)
    return WORKBENCH.build_trial(cfg, data)


def settings(cfg: Any) -> Any:
    """The ``RunSettings`` of ``cfg``, as ``run_trial`` makes them."""
    from fl_sweeps.workbench import Workbench

    return Workbench.run_settings(cfg)


def train_logged(
    trial: Any,
    cfg: Any,
    *,
    out: Path,
    label: str,
    stop_at: float | None = None,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Train ``trial`` with ``cfg``'s settings, appending one JSON line per round to ``out``.

    Args:
        trial: A built ``FederatedTrial``.
        cfg: The composed config (training settings, seed, learning rates).
        out: JSON-lines file; each line has ``label``, the round record and the wall time since start.
        label: Name of the variant, written on every line.
        stop_at: Stop after the first eval accuracy at or above this.
        deadline: ``time.time()`` after which no new round starts.

    Returns:
        The rounds' rows.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    started = time.time()
    for record in trial.run(settings(cfg)):
        row = {"label": label, **asdict(record), "wall_s": round(time.time() - started, 2)}
        rows.append(row)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        acc = record.eval_accuracy
        print(
            f"[{label}] round {record.round}: eval acc {acc if acc is None else f'{acc:.4f}'}, "
            f"{record.cumulative_bits / 1e9:.3f} Gbit, {record.seconds:.1f} s",
            flush=True,
        )
        if stop_at is not None and acc is not None and acc >= stop_at:
            break
        if deadline is not None and time.time() > deadline:
            print(f"[{label}] deadline reached after round {record.round}", flush=True)
            break
    return rows


def rounds_to(rows: Sequence[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first row whose eval accuracy reaches ``target`` (its round and cumulative bits), or None."""
    for row in rows:
        if row["eval_accuracy"] is not None and row["eval_accuracy"] >= target:
            return {
                "round": row["round"],
                "accuracy": row["eval_accuracy"],
                "cumulative_bits": row["cumulative_bits"],
                "wall_s": row["wall_s"],
            }
    return None


def ended_run(round_num: int, accuracies: Sequence[float], targets: Sequence[float], max_rounds: int) -> bool:
    """Whether a variant of ``bits_to_accuracy.py`` ends after ``round_num``: the mean of its last 5 evaluated
    accuracies reached the highest target (nothing more to measure), or it ran ``max_rounds``."""
    last5 = list(accuracies)[-5:]
    return round_num >= max_rounds or (len(last5) == 5 and sum(last5) / 5 >= max(targets))


def read_rows(path: Path, label: str | None = None) -> list[dict[str, Any]]:
    """Rows of a JSON-lines result file (of one ``label`` if given)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if label is None or r["label"] == label]
