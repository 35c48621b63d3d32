"""Exact number of bits on the wire per round, from the encoder settings and the model's tensor shapes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fl_sweeps.compression.encoders import NoCompression

WEIGHT_BITS = 32  # each client's aggregation weight (its example count) as float32


@dataclass(frozen=True)
class TensorInfo:
    """Size and kind of one model tensor, as the bit count needs them.

    Attributes:
        num_elements: Number of elements.
        dtype_bits: Width of one element in bits.
        is_float: Whether the dtype is floating point (only those are quantized).
    """

    num_elements: int
    dtype_bits: int = 32
    is_float: bool = True


@dataclass(frozen=True)
class BitsPerClient:
    """Bits exchanged with one participating client in one round.

    Attributes:
        broadcast: Server to client: the (encoded) model, plus seeds the aggregation's encoders need.
        aggregate: Client to server: the (encoded) weighted model update plus the client's weight.
    """

    broadcast: int
    aggregate: int

    def for_clients(self, num_clients: int) -> BitsPerClient:
        """The same round's bits summed over ``num_clients`` participating clients."""
        return BitsPerClient(self.broadcast * num_clients, self.aggregate * num_clients)

    @property
    def total(self) -> int:
        """Both directions."""
        return self.broadcast + self.aggregate


def bits_per_client(
    *,
    model_tensors: Sequence[TensorInfo],
    update_tensors: Sequence[TensorInfo],
    broadcast_encoder: NoCompression,
    aggregate_encoder: NoCompression,
) -> BitsPerClient:
    """Bits exchanged with one client in one FedAvg round.

    Counts the model channel: the broadcast of the model weights and the aggregation of the client updates, with
    all side information (quantization ranges, rotation seeds, unencoded small tensors, the client weight).
    Training metrics that clients report for logging are not part of the algorithm's traffic and are not counted.

    Args:
        model_tensors: The model weights the server broadcasts (trainable then non-trainable).
        update_tensors: The update each client sends back (FedAvg: the trainable weights' delta).
        broadcast_encoder: Encoder of the server→client model broadcast.
        aggregate_encoder: Encoder of the client→server update aggregation.
    """
    down = sum(
        broadcast_encoder.payload_bits(t.num_elements, t.dtype_bits, t.is_float)
        + broadcast_encoder.seed_bits(t.num_elements, t.is_float)
        for t in model_tensors
    ) + sum(aggregate_encoder.seed_bits(t.num_elements, t.is_float) for t in update_tensors)
    up = sum(aggregate_encoder.payload_bits(t.num_elements, t.dtype_bits, t.is_float) for t in update_tensors)
    return BitsPerClient(broadcast=down, aggregate=up + WEIGHT_BITS)
