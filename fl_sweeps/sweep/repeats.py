"""Repeats of one configuration over seeds: the seed overrides of each repeat, and the summary told and recorded.

``hydra.sweeper.repeats=k`` runs each sampled configuration with the seeds ``seed``, ``seed + 1``, ...,
``seed + k - 1``: the trial seed draws the initial weights, the clients sampled each round, their shuffling and the
random choices of the compressors (stochastic rounding), while the data set's partition keeps the sweep's seed, so
the repeats of every configuration see the same clients' data. Optuna is told the means; MLflow gets the mean,
standard deviation and a 95% confidence interval (Student's t) of each objective.
"""

from __future__ import annotations

import math
import statistics

from omegaconf import DictConfig

CONFIDENCE = 0.95


def repeat_overrides(config: DictConfig, repeat: int) -> tuple[str, ...]:
    """The overrides of repeat ``repeat`` (0 first): its trial seed, the data set's seed kept at the sweep's."""
    overrides = [f"trial.repeat={repeat}", f"seed={config.seed + repeat}"]
    if "seed" in config.data:
        overrides.append(f"data.seed={config.data.seed}")
    return tuple(overrides)


def summarize(values: list[list[float]], metric_names: list[str]) -> tuple[list[float], dict[str, float]]:
    """The objectives' means over the repeats, and the metrics recorded for them.

    Args:
        values: One list of objective values per repeat.
        metric_names: The objectives' names (``eval_accuracy``, ``total_bits``).

    Returns:
        The means (what Optuna is told) and ``final/<name>`` (mean), ``repeats/<name>_mean``, ``_std``,
        ``_ci95_low``, ``_ci95_high`` for each objective plus ``repeats/count``.
    """
    from scipy import stats

    count = len(values)
    means, summary = [], {"repeats/count": float(count)}
    for index, name in enumerate(metric_names):
        column = [repeat[index] for repeat in values]
        mean = statistics.fmean(column)
        std = statistics.stdev(column) if count > 1 else 0.0
        half = float(stats.t.ppf((1 + CONFIDENCE) / 2, count - 1)) * std / math.sqrt(count) if count > 1 else 0.0
        means.append(mean)
        summary |= {
            f"final/{name}": mean,
            f"repeats/{name}_mean": mean,
            f"repeats/{name}_std": std,
            f"repeats/{name}_ci95_low": mean - half,
            f"repeats/{name}_ci95_high": mean + half,
        }
    return means, summary
