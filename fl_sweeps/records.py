"""What one federated round produced: the record the trainer yields and the MLflow tracker logs.

A neutral module so that ``tracking`` takes the record without importing the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RoundRecord:
    """What one round produced. Bits are for this round, all participating clients, exactly as encoded.

    ``scheduled`` holds the value in effect this round of each setting a compression schedule changes, by
    ``<side>.<setting>`` (``{"aggregate_encoder.bits": 4}``; empty without a schedule).
    """

    round: int
    train_loss: float
    train_accuracy: float
    eval_loss: float | None
    eval_accuracy: float | None
    broadcast_bits: int
    aggregate_bits: int
    cumulative_bits: int
    seconds: float
    client_state_bytes: int | None = None  # clients' residuals and held models after the round, in memory
    server_state_bytes: int | None = None  # the server's models for the anchor catch-up (None: it keeps none)
    scheduled: dict[str, Any] = field(default_factory=dict)
    coded_produced_bits: int | None = None  # compression.verify_coding: a real coder's bits of the coded parts
    coded_counted_bits: int | None = None  # ... and the bits counted for the same parts (None: not verified)
