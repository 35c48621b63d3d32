"""The bits a delta broadcast costs each sampled client: what it needs to rebuild the current reference model.

With ``broadcast_encoder.delta=true`` (``fl_sweeps.compression.delta_broadcast``) a client holds the reference model
of the last round it was sampled in, and nothing else. Sampled again in round t after last holding round r's, it
receives the change messages of rounds r+1..t, or the whole reference uncompressed when that is fewer bits; a client
never sampled before receives the whole reference. The ledger keeps, per client id, the round it last held (in the
run's ``ClientStates``) and the running sum of the change messages' measured bits, so a catch-up costs one
subtraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class HeldRounds(Protocol):
    """Round each client last held the reference of, by client id: ``get`` gives None for one never sampled."""

    def get(self, client_id: str, default: Any = None) -> Any: ...

    def __setitem__(self, client_id: str, round_num: int) -> None: ...


class CatchUpLedger:
    """Running sum of each round's change-message bits, and the catch-up bits of the clients sampled in a round."""

    def __init__(self) -> None:
        self._sent_through = [0]  # [t]: bits of the change messages of rounds 1..t

    def charge(
        self,
        held_rounds: HeldRounds,
        client_ids: Sequence[str],
        round_num: int,
        change_bits: int,
        full_model_bits: int,
    ) -> int:
        """Bits the server sends the clients ``client_ids`` in round ``round_num``, and records that they now hold it.

        Args:
            held_rounds: Round each client last held the reference of, by client id (absent: never sampled);
                updated for ``client_ids``.
            client_ids: The round's sampled clients.
            round_num: The round, counted from 1, one call per round in order.
            change_bits: Bits of this round's change message.
            full_model_bits: Bits of the whole reference model, uncompressed.

        Returns:
            The sum over ``client_ids`` of each client's catch-up: the whole model, or the change messages it missed.
        """
        if round_num != len(self._sent_through):
            expected = len(self._sent_through)
            raise ValueError(f"rounds must be charged in order from 1: expected {expected}, got {round_num}")
        self._sent_through.append(self._sent_through[-1] + int(change_bits))
        total = 0
        for client_id in client_ids:
            held = held_rounds.get(client_id)
            missed = None if held is None else self._sent_through[round_num] - self._sent_through[held]
            total += int(full_model_bits) if missed is None else min(int(full_model_bits), missed)
            held_rounds[client_id] = round_num
        return total
