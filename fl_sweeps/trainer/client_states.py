"""What each client keeps across the rounds of one run, by client id."""

from __future__ import annotations

from typing import Any


class ClientStates(dict[str, Any]):
    """Per-client state that lives across rounds, keyed by client id; a new, empty one starts every run.

    Nothing keeps state yet. Stateful compression (error feedback's residuals, the model a client last received)
    keeps a client's entry here between the rounds the client is sampled in: the round loop passes this, with the
    round's sampled client ids, to ``BuiltProcess.next``. A sweep that reuses a built process still starts each
    trial with no state, since the state belongs to the run, not to the process.
    """
