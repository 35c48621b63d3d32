"""Where a run stands after a round, to go on from it in another process: a long run that outlives a session.

A ``RunCheckpoint`` holds everything the next rounds read: the process state (weights, server optimizer, the
encoders' states and settings), the client sampler's generator, the clients' states (error-feedback residuals,
the rounds whose reference model each client holds, the catch-up ledger of the delta broadcast), the bits so far
and the round records (adaptive schedules read them). Randomness inside the rounds is seeded from the trial seed,
the round and the client's data, so a run resumed from a checkpoint gives the numbers of a run that never stopped
(``tests/test_run_checkpoint.py``).

Saved with ``pickle`` (the state is nested numpy arrays in TFF's and fl-sweeps' structure classes) to a temporary
file that then replaces the old one, so a run killed while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fl_sweeps.records import RoundRecord
from fl_sweeps.trainer.client_states import ClientStates


@dataclass
class RunCheckpoint:
    """A run after round ``round``.

    Attributes:
        round: The last round run (the run goes on with ``round + 1``).
        state: The process state after that round.
        sampler: The generator that samples each round's clients, as it stands after that round.
        client_states: What clients keep across rounds.
        cumulative_bits: Bits communicated in rounds 1..``round``.
        history: The records of rounds 1..``round``.
        tag: What the run is, as the caller describes it (its overrides): ``load`` refuses another tag.
    """

    round: int
    state: Any
    sampler: np.random.Generator
    client_states: ClientStates
    cumulative_bits: int
    history: list[RoundRecord] = field(default_factory=list)
    tag: str = ""

    def save(self, path: Path) -> None:
        """Write to ``path`` through a temporary file, so the previous checkpoint stays whole until this one is."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)

    @staticmethod
    def load(path: Path, tag: str) -> RunCheckpoint | None:
        """The checkpoint at ``path`` (None: there is none).

        Raises:
            ValueError: It was saved by a run described by another tag (other settings): resuming would mix runs.
        """
        if not path.exists():
            return None
        with path.open("rb") as f:
            checkpoint = pickle.load(f)
        if checkpoint.tag != tag:
            raise ValueError(
                f"{path} was saved by another run ({checkpoint.tag!r}, not {tag!r}): move it away to start afresh"
            )
        return checkpoint
