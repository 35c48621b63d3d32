"""What each client keeps across the rounds of one run, by client id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fl_sweeps.compression.catch_up import CatchUpLedger


@dataclass
class ClientState:
    """One client's state.

    Attributes:
        residual: Error feedback: what its compressed updates have not carried yet (None before its first round).
        held_round: Delta broadcast: the round whose reference model it holds (None: never sampled).
        held_model: Difference catch-up: the model it rebuilt when last sampled, which the server keeps a copy of
            (None: never sampled; it holds the run's initial model). Anchor catch-up: the anchor it holds.
        held_anchor: Anchor catch-up: the number of the anchor it holds (None: never sampled; anchor 0, drawn from
            the run's seed).
    """

    residual: list[Any] | None = None
    held_round: int | None = None
    held_model: Any = None
    held_anchor: int | None = None

    def round_input(self, start: Mapping[str, Any]) -> dict[str, Any]:
        """What goes into a round with the client's data: for each key of ``start`` (the process's
        ``initial_client_state``: ``residual``, ``held_model``, ``held_from_seed``, ``held_anchor``) the value it
        keeps, or the start's value if it has none yet."""
        held_anchor = None if self.held_anchor is None else np.int64(self.held_anchor)
        kept = {"residual": self.residual, "held_model": self.held_model, "held_anchor": held_anchor}
        values = {key: start[key] if kept.get(key) is None else kept[key] for key in start}
        if "held_from_seed" in start:
            values["held_from_seed"] = np.bool_(self.held_model is None)
        return values

    def keep(self, kept_state: Mapping[str, Any]) -> None:
        """Store what the round returned for this client (``residual``, ``held_model``, ``held_anchor``) as numpy
        arrays and an integer."""
        if "residual" in kept_state:
            self.residual = [np.asarray(r) for r in kept_state["residual"]]
        if "held_model" in kept_state:
            held = kept_state["held_model"]
            self.held_model = type(held)(
                trainable=[np.asarray(w) for w in held.trainable],
                non_trainable=[np.asarray(w) for w in held.non_trainable],
            )
        if "held_anchor" in kept_state:
            self.held_anchor = int(kept_state["held_anchor"])


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
        """Bytes the clients' states take in memory (residuals and held models; a held round is one integer)."""
        total = 0
        for state in self.values():
            total += sum(r.nbytes for r in state.residual or [])
            if state.held_model is not None:
                total += sum(w.nbytes for w in [*state.held_model.trainable, *state.held_model.non_trainable])
        return total


class _HeldRounds:
    """``client id -> held_round`` over ``ClientStates``: absent (``get`` gives None) for a client never sampled."""

    def __init__(self, states: ClientStates) -> None:
        self._states = states

    def get(self, client_id: str, default: Any = None) -> Any:
        state = self._states.get(client_id)
        return default if state is None or state.held_round is None else state.held_round

    def __setitem__(self, client_id: str, round_num: int) -> None:
        self._states.entry(client_id).held_round = round_num
