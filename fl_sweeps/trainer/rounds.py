"""The round loop: sample clients, run a round of the built process, check it, evaluate, count bits, yield records."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from fl_sweeps.compression.bits import BitsPerClient
from fl_sweeps.compression.coding_check import check_round
from fl_sweeps.compression.measure import SERVER_STATE_KEY, round_bits
from fl_sweeps.data.federated_data import FederatedData
from fl_sweeps.errors import DivergedError
from fl_sweeps.records import RoundRecord
from fl_sweeps.trainer.client_states import ClientStates
from fl_sweeps.trainer.evaluation import Evaluator
from fl_sweeps.trainer.process import BuiltProcess
from fl_sweeps.trainer.run_checkpoint import RunCheckpoint
from fl_sweeps.trainer.settings import RunSettings


class FederatedTrial:
    """A built FedAvg process with its evaluator, ready to run, and to run again with other ``RunSettings``.

    Attributes:
        built: The built process and what runs it.
        evaluator: Evaluates the model weights on eval rounds.
        client_states: What clients keep across the rounds of the current run, by client id (empty at its start).
        final_state: The process state after the last round of the last run.
        checkpoint: Where the current run stands after the round just yielded (``RunCheckpoint``): save it before
            asking for the next record, since the next round changes the clients' states in place.
    """

    def __init__(self, built: BuiltProcess, evaluator: Evaluator) -> None:
        self.built = built
        self.evaluator = evaluator
        self.client_states = ClientStates()
        self.final_state: Any = None
        self.checkpoint: RunCheckpoint | None = None

    @property
    def data(self) -> FederatedData:
        """The federated data set."""
        return self.built.data

    @property
    def process(self) -> Any:
        """The ``tff.learning.templates.LearningProcess``."""
        return self.built.process

    @property
    def bits_per_client(self) -> BitsPerClient:
        """Bits one participating client costs a round, in each direction, with the encoders the process was built
        with (a reused trial runs others: a run's own bits are ``planned_bits`` and its records)."""
        return self.built.bits_per_client

    @property
    def num_parameters(self) -> int:
        """Values in the model's weights."""
        return self.built.num_parameters

    def initial_state(self, settings: RunSettings) -> Any:
        """The process state a run with ``settings`` starts from (``BuiltProcess.initial_state``)."""
        return self.built.initial_state(settings)

    def model_weights(self, state: Any) -> Any:
        """The model weights of a process state (``BuiltProcess.model_weights``)."""
        return self.built.model_weights(state)

    def evaluate(self, state: Any, split: str) -> tuple[float, float]:
        """(loss, accuracy) of the state's model on all clients' examples of ``split`` (``validation`` or ``test``),
        by this trial's evaluator."""
        return self.evaluator.evaluate(self.model_weights(state), split)

    def planned_bits(self, settings: RunSettings) -> int:
        """The bits a run with ``settings`` communicates if it runs to the end, each round with the value its
        schedule plans before any round has run (``Schedule.planned``)."""
        clients = settings.training.clients_per_round
        control = settings.schedule.control_bits
        return sum(
            (self.built.bits_for(self.built.encoders_for(settings, settings.schedule.planned(round_num))) + control)
            .for_clients(clients)
            .total
            for round_num in range(1, settings.training.rounds + 1)
        )

    def run(self, settings: RunSettings, resume: RunCheckpoint | None = None) -> Iterator[RoundRecord]:
        """Train for ``settings.training.rounds`` rounds, yielding a record after each.

        Clients are sampled without replacement from a generator seeded with ``settings.seed``; evaluation runs
        every ``settings.eval_every`` rounds and after the last round. Clients start the run with no state. Each
        round runs the process built for the value ``settings.schedule`` gives it from the records before it.

        Args:
            settings: The run's settings.
            resume: Go on after this checkpoint's round (of a run with the same settings) instead of starting at
                round 1; the records of its rounds are not yielded again.

        Raises:
            DivergedError: The loss, the averaged update or the weights stopped being finite.
        """
        if resume is None:
            resume = RunCheckpoint(
                round=0,
                state=self.built.initial_state(settings),
                sampler=np.random.default_rng(settings.seed),
                client_states=ClientStates(),
                cumulative_bits=0,
            )
        else:
            self.built.seed_globals(settings.seed)  # as ``initial_state`` left them in the run that was saved
        rng, state, cumulative = resume.sampler, resume.state, resume.cumulative_bits
        self.client_states = resume.client_states
        client_ids_all = self.data.client_ids
        rounds = settings.training.rounds
        history: list[RoundRecord] = list(resume.history)
        first_round = resume.round + 1
        for round_num in range(first_round, rounds + 1):
            started = time.perf_counter()
            scheduled = settings.schedule.value(round_num, history)
            if scheduled is not None or round_num == first_round:
                state = self.built.select(scheduled, state, settings)
            chosen = rng.choice(len(client_ids_all), size=settings.training.clients_per_round, replace=False)
            client_ids = [client_ids_all[i] for i in sorted(chosen)]
            output = self.built.next(state, client_ids, round_num, settings, self.client_states)
            coded = check_round(output.metrics, round_num)  # None unless compression.verify_coding
            state = output.state
            train = output.metrics["client_work"]["train"]
            loss, accuracy = float(train["loss"]), float(train["sparse_categorical_accuracy"])
            weights = self.built.model_weights(state)
            check_finite(round_num, loss, weights, output.metrics)
            eval_loss = eval_accuracy = None
            if round_num % settings.eval_every == 0 or round_num == rounds:
                eval_loss, eval_accuracy = self.evaluator.evaluate(weights, settings.eval_split)
            # Measured from the round's messages, plus what the schedule needs sent (an adaptive rule's readings).
            bits = round_bits(output.metrics) + settings.schedule.control_bits.for_clients(len(client_ids))
            cumulative += bits.total
            record = RoundRecord(
                round=round_num,
                train_loss=loss,
                train_accuracy=accuracy,
                eval_loss=eval_loss,
                eval_accuracy=eval_accuracy,
                broadcast_bits=bits.broadcast,
                aggregate_bits=bits.aggregate,
                cumulative_bits=cumulative,
                seconds=time.perf_counter() - started,
                client_state_bytes=self.client_states.nbytes() or None,
                server_state_bytes=_server_state_bytes(output.metrics),
                scheduled={} if scheduled is None else {settings.schedule.key: scheduled},
                coded_produced_bits=None if coded is None else coded.produced,
                coded_counted_bits=None if coded is None else coded.counted,
            )
            history.append(record)
            self.checkpoint = RunCheckpoint(round_num, state, rng, self.client_states, cumulative, list(history))
            yield record
        self.final_state = state


def _server_state_bytes(metrics: Any) -> int | None:
    """Bytes of the models the server keeps for the broadcast's catch-up (``catch_up=anchors``), None without it."""
    distributor = metrics.get("distributor") if isinstance(metrics, Mapping) else None
    bytes_kept = distributor.get(SERVER_STATE_KEY) if isinstance(distributor, Mapping) else None
    return None if bytes_kept is None else int(bytes_kept)


def check_finite(round_num: int, loss: float, weights: Any, metrics: Any) -> None:
    """Stop at once when the loss, the averaged update or the weights stop being finite.

    TFF zeroes the weight of a client whose update is not finite and skips a non-finite averaged update
    (``finalizer/update_non_finite``), so a diverged trial would otherwise train on silently, unchanged.

    Raises:
        DivergedError: Naming the round and what stopped being finite.
    """
    if not math.isfinite(loss):
        raise DivergedError(f"training diverged at round {round_num}: train loss is {loss}")
    if int(metrics.get("finalizer", {}).get("update_non_finite", 0)):
        raise DivergedError(f"training diverged at round {round_num}: the averaged model update is not finite")
    if not all(np.all(np.isfinite(w)) for w in [*weights.trainable, *weights.non_trainable]):
        raise DivergedError(f"training diverged at round {round_num}: model weights are not finite")
