"""A study's Pareto front in numbers, and its description, for its MLflow parent run: MLflow's own runs table and
Compare then show studies side by side.

The sweep may not import ``analysis`` (layer contract ``sweep``), so the front's hypervolume and knee are computed
here, on the completed trials' Optuna values, the same way as ``analysis.pareto`` does on the MLflow runs
(``tests/test_compare.py`` checks that the two agree): accuracy against ``log10`` bits, the reference point accuracy 0
and the next power of ten above the most bits of a completed trial, the knee furthest beyond the line joining the
front's ends with both objectives scaled to the front.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState


def front_metrics(study: optuna.Study) -> dict[str, float]:
    """``front/points``, ``front/hypervolume`` and ``front/reference_bits`` (when a trial completed with positive
    bits), and ``front/knee_accuracy`` and ``front/knee_mbit`` (when the front has a knee).

    Args:
        study: A study of the sweep (objectives: accuracy maximized, bits minimized).
    """
    front = [(float(t.values[0]), float(t.values[1])) for t in study.best_trials]
    metrics = {"front/points": float(len(front))}
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    most_bits = max((t.values[1] for t in completed if t.values[1] > 0), default=None)
    if most_bits is not None:
        reference = float(10 ** (math.floor(math.log10(most_bits)) + 1))
        metrics |= {"front/hypervolume": hypervolume(front, reference), "front/reference_bits": reference}
    knee = knee_point(front)
    if knee is not None:
        metrics |= {"front/knee_accuracy": knee[0], "front/knee_mbit": knee[1] / 1e6}
    return metrics


def hypervolume(front: list[tuple[float, float]], reference_bits: float) -> float:
    """Area (accuracy x decades of bits) the front's ``(accuracy, bits)`` points dominate up to accuracy 0 and
    ``reference_bits``; points outside that box add nothing."""
    inside = sorted((bits, accuracy) for accuracy, bits in front if accuracy > 0 and 0 < bits < reference_bits)
    edges = [math.log10(bits) for bits, _ in inside] + [math.log10(reference_bits)]
    return float(sum(accuracy * (edges[i + 1] - edges[i]) for i, (_, accuracy) in enumerate(inside)))


def knee_point(front: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The front's ``(accuracy, bits)`` point furthest beyond the line joining its ends (accuracy and log10 bits
    scaled to [0, 1] over the front); None with fewer than three distinct points or none beyond the line."""
    points = sorted(set(front), key=lambda point: (point[1], -point[0]))  # distinct, cheapest first
    if len(points) < 3:
        return None
    accuracy = np.array([a for a, _ in points])
    cost = np.log10([b for _, b in points])
    if np.ptp(accuracy) == 0 or np.ptp(cost) == 0:
        return None
    beyond = (accuracy - accuracy.min()) / np.ptp(accuracy) + (cost.max() - cost) / np.ptp(cost) - 1
    best = int(np.argmax(beyond))
    return points[best] if beyond[best] / math.sqrt(2) > 1e-12 else None


def describe_sweep(
    study: optuna.Study,
    *,
    distributions: dict[str, BaseDistribution],
    n_trials: int,
    repeats: int,
    metrics: dict[str, float],
) -> str:
    """The parent run's description (Markdown, MLflow's ``mlflow.note.content``): the study, what it sweeps, its
    trials and repeats, and its front when it has one.

    Args:
        study: The sweep's study.
        distributions: The swept keys and what each is sampled from (``SearchSpace.distributions``).
        n_trials: The study's planned total (``hydra.sweeper.n_trials``).
        repeats: Seeds each configuration runs with.
        metrics: The study's ``front_metrics``.
    """
    counts = {state: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.FAIL]
    seeds = f"each configuration trained with {repeats} seeds (the runs hold their mean)" if repeats > 1 else "one seed"
    swept = ", ".join(f"`{key}` {_sampled(distribution)}" for key, distribution in distributions.items()) or "nothing"
    lines = [
        f"Sweep of study **{study.study_name}**: {done} of {n_trials} trials done ({counts[TrialState.COMPLETE]} "
        f"completed, {counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed); {seeds}.",
        "",
        f"Swept: {swept}.",
    ]
    if "front/hypervolume" in metrics:
        knee = (
            f"knee at accuracy {metrics['front/knee_accuracy']:.4f}, {_significant(metrics['front/knee_mbit'])} Mbit"
            if "front/knee_accuracy" in metrics
            else "no knee (fewer than three distinct points, or none beyond the line joining its ends)"
        )
        lines += [
            "",
            f"Pareto front: {_count(int(metrics['front/points']), 'point')}, hypervolume "
            f"{metrics['front/hypervolume']:.4f} "
            f"(accuracy x decades of bits, against accuracy 0 and "
            f"{_significant(metrics['front/reference_bits'] / 1e6)} Mbit); {knee}.",
        ]
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _sampled(distribution: BaseDistribution) -> str:
    """``choice(none, uniform)``, ``0.02 to 0.5 (log scale)``, ``2 to 8 step 2``."""
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(str(choice) for choice in distribution.choices)})"
    low, high = _significant(distribution.low), _significant(distribution.high)
    step = getattr(distribution, "step", None)
    if distribution.log:
        return f"{low} to {high} (log scale)"
    return f"{low} to {high}" + (f" step {_significant(step)}" if step not in (None, 1) else "")


def _significant(value: float) -> str:
    """3 significant digits without exponent (``2000``, ``0.0153``)."""
    return np.format_float_positional(value, precision=3, unique=False, fractional=False, trim="-")
