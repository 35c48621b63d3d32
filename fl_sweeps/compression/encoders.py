"""Encoder settings, one class per ``broadcast_encoder``/``aggregate_encoder`` option, with their wire sizes.

Each class is what a config file's ``_target_`` builds. It knows (1) which tensors it compresses, (2) how to build
the tensor_encoding ``Encoder`` for one tensor (TensorFlow imported only then), and (3) how many bits one encoded
tensor occupies on the wire, by formula from the settings, which ``fl_sweeps.compression.bits`` adds up per round.

Wire format of a compressed tensor with ``n`` float32 elements: flatten → [Hadamard rotation in blocks of a power
of two, ``m = rows * block`` values, ``fl_sweeps.compression.seeded_hadamard``] → uniform quantization to ``bits``
(tensor_encoding's stage) → bit-packing end to end into 32-bit words (``fl_sweeps.compression.bit_packing``):
``ceil(m * bits / 32)`` words, plus ``min`` and ``max`` as two float32; ``m = n`` without rotation. The rotation's
seed (two int64: the tensor's size and the round number) travels with the tensor on broadcast, and from server to
clients as encode parameters on aggregation. Tensors with at most ``threshold`` elements, and non-float tensors,
travel unencoded at their dtype's width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fl_sweeps.compression.bit_packing import WORD_BITS, dense_bitpacking_stage, packed_words
from fl_sweeps.compression.seeded_hadamard import rotation_layout, seeded_hadamard_stage

Rounding = Literal["deterministic", "stochastic"]
MIN_MAX_BITS = 2 * 32  # quantization range, two float32
SEED_BITS = 2 * 64  # Hadamard rotation seed, two int64


@dataclass(frozen=True)
class NoCompression:
    """Send every tensor as it is."""

    name: str = "none"

    def compresses(self, num_elements: int, is_float: bool) -> bool:
        """Whether a tensor of this size and kind is encoded (never)."""
        return False

    def payload_bits(self, num_elements: int, dtype_bits: int, is_float: bool = True) -> int:
        """Bits of the message carrying one tensor."""
        return num_elements * dtype_bits

    def seed_bits(self, num_elements: int, is_float: bool = True) -> int:
        """Bits of random seed that must reach the other side to decode one tensor."""
        return 0

    def tensor_settings(self, num_elements: int, is_float: bool) -> tuple[Any, ...]:
        """What ``tensor_encoder`` for one tensor depends on besides its size: a cache key, with the tensor's shape
        (a rotation's seed also depends on the size)."""
        return ("identity",)

    def tensor_encoder(self, num_elements: int, is_float: bool) -> Any:
        """The tensor_encoding ``Encoder`` for one tensor."""
        from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

        return te.encoders.identity()


@dataclass(frozen=True)
class UniformQuantization(NoCompression):
    """Uniform quantization to ``bits`` bits of float tensors with more than ``threshold`` elements.

    Attributes:
        bits: Quantization levels are ``2**bits``; 1 to 16.
        threshold: Tensors with at most this many elements are sent unencoded (biases, small layers).
        rounding: ``deterministic`` (round to nearest) or ``stochastic`` (unbiased randomized rounding).
    """

    name: str = "uniform"
    bits: int = 8
    threshold: int = 20000
    rounding: Rounding = "deterministic"

    rotate = False  # Hadamard rotation before quantization (subclass switches it on)

    def compresses(self, num_elements: int, is_float: bool) -> bool:
        return is_float and num_elements > self.threshold

    def encoded_length(self, num_elements: int) -> int:
        """Number of values quantized for a tensor of ``num_elements`` (padded to whole blocks when rotated)."""
        if self.rotate:
            rows, block = rotation_layout(num_elements)
            return rows * block
        return num_elements

    def payload_bits(self, num_elements: int, dtype_bits: int, is_float: bool = True) -> int:
        if not self.compresses(num_elements, is_float):
            return num_elements * dtype_bits
        return packed_words(self.encoded_length(num_elements), self.bits) * WORD_BITS + MIN_MAX_BITS

    def seed_bits(self, num_elements: int, is_float: bool = True) -> int:
        return SEED_BITS if self.rotate and self.compresses(num_elements, is_float) else 0

    def tensor_settings(self, num_elements: int, is_float: bool) -> tuple[Any, ...]:
        if not self.compresses(num_elements, is_float):
            return ("identity",)
        return (type(self).__name__, self.bits, self.rounding)

    def tensor_encoder(self, num_elements: int, is_float: bool) -> Any:
        from tensorflow_model_optimization.python.core.internal import tensor_encoding as te
        from tensorflow_model_optimization.python.core.internal.tensor_encoding.stages import stages_impl as st

        if not self.compresses(num_elements, is_float):
            return te.encoders.identity()
        composer = te.core.EncoderComposer(dense_bitpacking_stage(self.bits)).add_parent(
            st.UniformQuantizationEncodingStage(self.bits, stochastic=self.rounding == "stochastic"),
            st.UniformQuantizationEncodingStage.ENCODED_VALUES_KEY,
        )
        if self.rotate:
            rotation = seeded_hadamard_stage(salt=num_elements)
            composer = composer.add_parent(rotation, st.HadamardEncodingStage.ENCODED_VALUES_KEY)
        return composer.add_parent(st.FlattenEncodingStage(), st.FlattenEncodingStage.ENCODED_VALUES_KEY).make()


@dataclass(frozen=True)
class HadamardQuantization(UniformQuantization):
    """Random Hadamard rotation, then uniform quantization: spreads outliers so fewer bits lose less."""

    name: str = "hadamard"
    rotate = True


Encoder = NoCompression  # every encoder option is a NoCompression or a subclass of it
