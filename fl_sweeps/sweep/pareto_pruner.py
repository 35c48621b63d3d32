"""A pruner for the accuracy-versus-bits sweep: stop a trial only when another trial beats it on both objectives.

Optuna's pruners judge one objective. Judging accuracy alone prunes the compressed trials that make the Pareto
front, because they often lag a little early on; judging nothing wastes the rounds of trials that cannot end on the
front. A trial's communicated bits are known before it trains (they follow from its encoders, model and rounds),
so the uncertain objective is accuracy, and a trial is hopeless when a finished trial that communicated no more
bits was clearly more accurate at the same round. A trial far below the best accuracy (one that diverged, or learns
nothing at all at a learning rate far too small) is hopeless too, however few bits it sends: such a point would sit
on the front, but no one wants it.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

PLANNED_BITS_ATTR = "planned_total_bits"


class ParetoPruner(optuna.pruners.BasePruner):
    """Prune a trial at a round where a finished trial with no more total bits was ``min_gap`` more accurate, or
    where its accuracy was below ``relative_floor`` times the best finished trial's at that round.

    Args:
        n_startup_trials: Finished trials needed before any trial is pruned.
        n_warmup_steps: Rounds every trial runs before it can be pruned.
        min_gap: How much more accurate (absolute, 0 to 1) the dominating trial must have been at that round.
        relative_floor: Fraction (0 to 1) of the best accuracy at that round below which a trial stops whatever
            its bits; 0 switches this off.
    """

    def __init__(
        self,
        *,
        n_startup_trials: int,
        n_warmup_steps: int,
        min_gap: float,
        relative_floor: float,
    ) -> None:
        if n_startup_trials < 0 or n_warmup_steps < 0 or not 0 <= min_gap <= 1 or not 0 <= relative_floor <= 1:
            raise ValueError("n_startup_trials and n_warmup_steps must be >= 0, min_gap and relative_floor in [0, 1]")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.min_gap = min_gap
        self.relative_floor = relative_floor

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether ``trial`` is dominated at its last reported round (accuracy is the first objective)."""
        return self.reason(study, trial) is not None

    def reason(self, study: optuna.Study, trial: FrozenTrial) -> str | None:
        """Why ``trial`` should stop at its last reported round, in one line; None if it should go on."""
        step = trial.last_step
        bits = trial.user_attrs.get(PLANNED_BITS_ATTR)
        if step is None or step < self.n_warmup_steps or bits is None:
            return None
        accuracy = trial.intermediate_values[step]
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(finished) < self.n_startup_trials:
            return None
        at_step = [(other, other.intermediate_values.get(step)) for other in finished]
        at_step = [(other, other_accuracy) for other, other_accuracy in at_step if other_accuracy is not None]
        if not at_step:
            return None
        best, best_accuracy = max(at_step, key=lambda pair: pair[1])
        if accuracy < self.relative_floor * best_accuracy:
            return (
                f"accuracy {accuracy:.3f} at round {step} is below relative_floor={self.relative_floor} x "
                f"{best_accuracy:.3f} of trial {best.number}"
            )
        dominating = [
            (other, other_accuracy)
            for other, other_accuracy in at_step
            if other.values is not None and other.values[1] <= bits and other_accuracy >= accuracy + self.min_gap
        ]
        if not dominating:
            return None
        other, other_accuracy = max(dominating, key=lambda pair: pair[1])
        return (
            f"trial {other.number} ({other.values[1] / 1e6:.3g} <= {bits / 1e6:.3g} Mbit) was "
            f"{other_accuracy - accuracy:.3f} more accurate at round {step} ({other_accuracy:.3f} vs {accuracy:.3f})"
        )
