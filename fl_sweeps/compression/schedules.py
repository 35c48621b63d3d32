"""Compression schedules: which value one numeric setting of an encoder takes in each round.

The ``schedule`` config group picks one by ``_target_``: ``Constant`` (no schedule: the encoders as configured),
``Steps`` (fixed values from given rounds on, e.g. 2 bits early, 8 later) and ``Plateau`` (a ladder of values,
one step up whenever the training loss stops falling). A schedule names the encoder (``side``,
``aggregate_encoder`` or ``broadcast_encoder``) and its setting (``bits``, ``fraction``, ``levels``). Each round
the trial writes that round's value into the server state of one process (the setting is an input of it,
``fl_sweeps.compression.settings_state``); a setting that is not (the ``fraction`` of ``topk_uniform``) gets a
process per value, all carrying the same server state (``fl_sweeps.trainer.process.BuiltProcess``).

A schedule is a pure function of the round and the records of the rounds before it, so a run repeats exactly.
What a schedule needs to travel is counted (``Schedule.control_bits``): nothing for one fixed before round 1, the
clients' losses and the value in effect for one that adapts to them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fl_sweeps.compression.bits import BitsPerClient
from fl_sweeps.records import RoundRecord

LOSS_BITS = 32  # a client's mean training loss as float32 (its weight already travels with its update)


@dataclass(frozen=True)
class Schedule:
    """A schedule of ``side``'s ``setting`` over ``values``; the base gives no value (the configured encoders).

    Attributes:
        name: The option's name.
        side: The encoder whose setting changes: ``aggregate_encoder`` or ``broadcast_encoder`` (None: none).
        setting: Its setting that changes: ``bits``, ``fraction`` or ``levels``.
        values: The values the setting takes, in the order given.
    """

    name: str = "constant"
    side: str | None = None
    setting: str | None = None
    values: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        for name in ("side", "setting"):  # a config's enum member (``ScheduledSide``) as its plain name
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else str(value))
        object.__setattr__(self, "values", tuple(self.values))

    @property
    def key(self) -> str | None:
        """The scheduled setting as ``<side>.<setting>`` (None: nothing is scheduled)."""
        return f"{self.side}.{self.setting}" if self.side and self.values else None

    def value(self, round_num: int, history: Sequence[RoundRecord]) -> Any | None:
        """The setting's value in round ``round_num`` (from 1), given the records of rounds ``1 .. round_num-1``
        (None: the configured encoders)."""
        return None

    def planned(self, round_num: int) -> Any | None:
        """The value of round ``round_num`` before any round has run: exact for a schedule that reads no records,
        the lowest rung for one that only moves up from it (what a sweep plans a trial's bits with)."""
        return self.value(round_num, ())

    @property
    def control_bits(self) -> BitsPerClient:
        """What the schedule adds to each participating client's messages in a round, besides the encoders': nothing
        for a schedule both sides know before round 1."""
        return BitsPerClient(broadcast=0, aggregate=0)


@dataclass(frozen=True)
class Constant(Schedule):
    """No schedule: every round uses the encoders as configured."""


@dataclass(frozen=True)
class Steps(Schedule):
    """``values[i]`` from round ``from_rounds[i]`` on (``from_rounds`` strictly increasing from 1).

    Attributes:
        from_rounds: The first round of each value.
    """

    name: str = "steps"
    from_rounds: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "from_rounds", tuple(self.from_rounds))

    def value(self, round_num: int, history: Sequence[RoundRecord]) -> Any:
        current = self.values[0]
        for first, value in zip(self.from_rounds, self.values, strict=True):
            if round_num >= first:
                current = value
        return current


@dataclass(frozen=True)
class Plateau(Schedule):
    """Start at ``values[0]`` and move one step up the ladder ``values`` when the training loss has stalled.

    The loss has stalled when the last ``patience`` rounds did not lower it by at least ``min_improvement``
    (relative) from the loss ``patience`` rounds earlier; only rounds since the last move count (the round before
    the move included), so each value gets ``patience`` rounds before the next move. The last value stays.

    Attributes:
        patience: Rounds the loss may stall before the next step up.
        min_improvement: The relative fall of the loss over ``patience`` rounds that counts as progress.
    """

    name: str = "plateau"
    patience: int = 2
    min_improvement: float = 0.01

    def value(self, round_num: int, history: Sequence[RoundRecord]) -> Any:
        losses = {record.round: record.train_loss for record in history}
        level, moved_at = 0, 1  # the current rung, and the first round that used it
        for round_t in range(2, round_num + 1):  # replay each decision from the records before it
            reference = round_t - 1 - self.patience
            if level == len(self.values) - 1 or reference < max(1, moved_at - 1):
                continue
            if round_t - 1 not in losses:  # not run yet (a plan): no further move
                break
            latest, before = losses[round_t - 1], losses[reference]
            if latest > before * (1 - self.min_improvement):
                level, moved_at = level + 1, round_t
        return self.values[level]

    @property
    def control_bits(self) -> BitsPerClient:
        """The rule reads the training loss, so each client sends its mean loss (``LOSS_BITS``); a client cannot
        know the rung in effect (it saw no other round's loss), so each receives its index in the ladder, which both
        sides know before round 1."""
        rung = math.ceil(math.log2(len(self.values))) if len(self.values) > 1 else 0
        return BitsPerClient(broadcast=rung, aggregate=LOSS_BITS)
