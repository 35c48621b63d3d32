"""A pruner for the accuracy-versus-bits sweep: stop a trial only when another trial beats it on both objectives.

Optuna's pruners judge one objective. Judging accuracy alone prunes the compressed trials that make the Pareto
front, because they often lag a little early on; judging nothing wastes the rounds of trials that cannot end on the
front. A trial's communicated bits are known before it trains (they follow from its encoders, model and rounds),
so the uncertain objective is accuracy, and a trial is hopeless when a finished trial that communicated no more
bits was clearly more accurate at the same round.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

PLANNED_BITS_ATTR = "planned_total_bits"


class ParetoPruner(optuna.pruners.BasePruner):
    """Prune a trial at a round where a finished trial with no more total bits was ``min_gap`` more accurate.

    Args:
        n_startup_trials: Finished trials needed before any trial is pruned.
        n_warmup_steps: Rounds every trial runs before it can be pruned.
        min_gap: How much more accurate (absolute, 0 to 1) the dominating trial must have been at that round.
    """

    def __init__(self, *, n_startup_trials: int = 2, n_warmup_steps: int = 3, min_gap: float = 0.02) -> None:
        if n_startup_trials < 0 or n_warmup_steps < 0 or not 0 <= min_gap <= 1:
            raise ValueError("n_startup_trials and n_warmup_steps must be >= 0 and min_gap in [0, 1]")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.min_gap = min_gap

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether ``trial`` is dominated at its last reported round (accuracy is the first objective)."""
        step = trial.last_step
        bits = trial.user_attrs.get(PLANNED_BITS_ATTR)
        if step is None or step < self.n_warmup_steps or bits is None:
            return False
        accuracy = trial.intermediate_values[step]
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(finished) < self.n_startup_trials:
            return False
        return any(
            other.values is not None
            and other.values[1] <= bits
            and other.intermediate_values.get(step, -1.0) >= accuracy + self.min_gap
            for other in finished
        )
