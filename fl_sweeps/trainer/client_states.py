"""What each client keeps across the rounds of one run, by client id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fl_sweeps.compression.catch_up import CatchUpLedger


@dataclass
class ClientState:
    """One client's state.

    Attributes:
        residual: Error feedback: what its compressed updates have not carried yet (None before its first round).
        held_round: Delta broadcast: the round whose reference model it holds (None: never sampled).
    """

    residual: list[Any] | None = None
    held_round: int | None = None


class ClientStates(dict[str, ClientState]):
    """Per-client state that lives across rounds, keyed by client id; a new, empty one starts every run.

    The round loop passes it, with the round's sampled client ids, to ``BuiltProcess.next``, which reads and
    updates the sampled clients' entries. A sweep that reuses a built process still starts each trial with no
    state, since the state belongs to the run, not to the process.

    Attributes:
        catch_up: Delta broadcast: the run's change messages, to charge each sampled client its catch-up.
    """

    def __init__(self) -> None:
        super().__init__()
        self.catch_up = CatchUpLedger()

    def entry(self, client_id: str) -> ClientState:
        """The client's state, created empty if it has none."""
        return self.setdefault(client_id, ClientState())

    def held_rounds(self) -> _HeldRounds:
        """A mapping view ``client id -> held_round`` (for ``CatchUpLedger.charge``)."""
        return _HeldRounds(self)

    def nbytes(self) -> int:
        """Bytes the clients' states take in memory (the residuals; a held round is one integer)."""
        return sum(sum(r.nbytes for r in s.residual) for s in self.values() if s.residual is not None)


class _HeldRounds:
    """``client id -> held_round`` over ``ClientStates``: absent (``get`` gives None) for a client never sampled."""

    def __init__(self, states: ClientStates) -> None:
        self._states = states

    def get(self, client_id: str, default: Any = None) -> Any:
        state = self._states.get(client_id)
        return default if state is None or state.held_round is None else state.held_round

    def __setitem__(self, client_id: str, round_num: int) -> None:
        self._states.entry(client_id).held_round = round_num
