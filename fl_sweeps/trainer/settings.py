"""What may change between runs of one built trial: training settings, seed, evaluation period, hyperparameters.

No defaults here: every value comes from the config (``conf/``), the one place that holds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fl_sweeps.compression.schedules import Constant, Schedule


@dataclass(frozen=True)
class TrainingSettings:
    """The ``training`` config group.

    Attributes:
        rounds: Federated rounds to run.
        clients_per_round: Clients sampled (without replacement) each round.
        local_epochs: Passes over its data each client makes per round.
        batch_size: Local minibatch size.
        shuffle_buffer: Shuffle buffer of each client's pipeline.
    """

    rounds: int
    clients_per_round: int
    local_epochs: int
    batch_size: int
    shuffle_buffer: int


@dataclass(frozen=True)
class RunSettings:
    """What may change between runs of one built trial without rebuilding its TFF process.

    Attributes:
        training: Rounds, sampling and local-training settings.
        seed: Initial weights, client sampling and shuffling.
        eval_every: Evaluate every this many rounds (and after the last).
        eval_split: The examples rounds are evaluated on: ``validation`` or ``test``.
        client_hparams: Client optimizer hyperparameters by TFF name (``learning_rate``, ``momentum``, ...); those
            not given keep the values the optimizer was built with.
        server_hparams: Server optimizer hyperparameters by TFF name.
        schedule: The compression schedule: the value of one encoder setting in each round (the built trial holds
            a process for each value it can take that is not an input of the process).
        encoders: The run's ``broadcast_encoder``/``aggregate_encoder`` by side, where they differ from the built
            process's in settings that are inputs of it (``bits``, ``fraction``, ``levels``); absent: as built.
        scheduled_encoders: For each value of the schedule, the encoders that change with it.
    """

    training: TrainingSettings
    seed: int
    eval_every: int
    eval_split: str
    client_hparams: Mapping[str, float] = field(default_factory=dict)
    server_hparams: Mapping[str, float] = field(default_factory=dict)
    schedule: Schedule = field(default_factory=Constant)
    encoders: Mapping[str, Any] = field(default_factory=dict)
    scheduled_encoders: Mapping[Any, Mapping[str, Any]] = field(default_factory=dict)
