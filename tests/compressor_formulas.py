"""Hand-written wire sizes of the built-in compressor options: the independent check of the measured bits.

Each formula gives the bits of one float32 tensor of ``n`` elements above the option's threshold, as
``(message bits, server→client parameter bits on aggregation)``, from the wire formats docs/compressors.md documents.
"""

from __future__ import annotations

import math
from typing import Any

from fl_sweeps.compression.seeded_hadamard import rotation_layout

WORD = 32
FLOAT = 32
SEED64 = 64


def words(values: int, bits: int) -> int:
    """Bits of ``values`` values of ``bits`` bits packed end to end into 32-bit words."""
    return math.ceil(values * bits / WORD) * WORD


def kept(n: int, fraction: float) -> int:
    return max(1, min(n, math.ceil(round(fraction * n, 9))))


def positions(n: int, k: int, coded: bool) -> int:
    """Bits of the positions of ``k`` kept values of ``n``: int32 indices, or (``coded``) the ``n``-bit map of kept
    positions coded under the static model "kept with probability k/n", in whole 32-bit words."""
    if not coded:
        return 32 * k
    information = n * math.log2(n) - sum(c * math.log2(c) for c in (k, n - k) if c)
    return math.ceil((information + 64 + n / 1024) / WORD) * WORD


def rotated(n: int) -> int:
    rows, block = rotation_layout(n)
    return rows * block


# The options fl-sweeps ships, each with its formula below. An option a user adds to conf/ has none: the tests check
# it against its measured messages alone.
BUILT_IN_OPTIONS = (
    "drive",
    "hadamard",
    "none",
    "nonuniform",
    "qsgd",
    "randk",
    "rotated_topk",
    "sign",
    "terngrad",
    "topk",
    "topk_uniform",
    "uniform",
)


def formula(encoder: Any, n: int) -> tuple[int, int]:
    """(message, encode-parameter) bits of one compressed float32 tensor of ``n`` elements."""
    name = encoder.name
    bits, fraction, levels = (getattr(encoder, key, None) for key in ("bits", "fraction", "levels"))
    coded = bool(getattr(encoder, "entropy_coding", False))
    if coded and name not in ("topk", "rotated_topk"):  # coded symbols: their length depends on the values
        raise KeyError(f"no formula for option {name} with entropy_coding")
    if name == "none":
        return n * FLOAT, 0
    if name == "uniform":
        return words(n, bits) + 2 * FLOAT, 0
    if name == "hadamard":
        return words(rotated(n), bits) + 2 * FLOAT, 2 * 64  # the shared seed: two int64
    if name == "sign":
        return words(n, 1) + FLOAT, 0
    if name == "terngrad":
        return words(n, 2) + FLOAT, 0
    if name == "qsgd":
        return words(n, math.ceil(math.log2(2 * levels + 1))) + FLOAT, 0
    if name == "drive":
        return words(rotated(n), 1) + FLOAT + SEED64, 0
    if name == "nonuniform":
        return words(n, bits) + 2**bits * FLOAT, 0
    if name == "topk":
        return kept(n, fraction) * FLOAT + positions(n, kept(n, fraction), coded), 0
    if name == "randk":
        return kept(n, fraction) * FLOAT + SEED64, 0
    if name == "topk_uniform":
        k = kept(n, fraction)
        return k * 32 + words(k, bits) + 2 * FLOAT, 0
    if name == "rotated_topk":
        k = kept(rotated(n), fraction)
        return k * FLOAT + positions(rotated(n), k, coded) + SEED64, 0
    raise KeyError(f"no formula for option {name}")
