"""``compression.verify_coding``: code every entropy-coded message of a round with a real coder and check it.

The computation counts an entropy-coded part as its computed coded length (``fl_sweeps.compression.bit_packing``)
and sends a stand-in; with ``verify_coding`` it also hands each message's coded parts out with the round's
measurements (``fl_sweeps.compression.coded_messages``). Here each part is coded with constriction's ANS coder
(public API: ``constriction.stream.model.Categorical``, ``constriction.stream.stack.AnsCoder``) and decoded again:

- packed symbols: read from the message's words (``bits`` a symbol, the first in the lowest bits), coded under
  their own histogram; produced = the ANS stream's 32-bit words plus the histogram as the count sends it
  (``2**bits`` counts of ``ceil(log2(N + 1))`` bits);
- top-k's positions: the ``d``-value map of kept positions, coded under "kept with probability ``k/d``" (which
  the receiver knows, so no model travels); the values then travel in position order.

The decoded symbols must equal the message's and produced must not exceed counted, or the run stops with one line
(``CodingCheckError``). Counted bits and training are untouched; ``check_round`` returns the round's sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fl_sweeps.compression.coded_messages import CODED_MESSAGES_KEY
from fl_sweeps.errors import CodingCheckError

SIDES = {"distributor": "broadcast", "aggregator": "aggregation"}  # where a part's measurements sit in the metrics


@dataclass(frozen=True)
class CodedBits:
    """The coded parts of one round's messages: bits a real coder produced and bits counted for them.

    Attributes:
        produced: Bits of the coders' streams (and the histograms that travel with them).
        counted: Bits the computation counted for the same parts (in the round's bits).
        parts: How many coded parts were checked.
    """

    produced: int
    counted: int
    parts: int


def check_round(metrics: MutableMapping, round_num: int) -> CodedBits | None:
    """Code, decode and check every coded part in a round's ``metrics``, taking them out of the metrics.

    Returns:
        The round's sums, or None if the metrics carry no coded parts (``verify_coding`` off).

    Raises:
        CodingCheckError: A part decodes to other symbols than the message's, or its stream is longer than counted.
    """
    produced = counted = parts = 0
    found = False
    for side, coded in _take_coded(metrics):
        found = True
        for where, part_produced, part_counted in _check_parts(coded):
            place = f"round {round_num}, {side} {where}"
            if part_produced > part_counted:
                raise CodingCheckError(
                    f"compression.verify_coding: {place}: the coder produced {part_produced} bits, more than the "
                    f"{part_counted} counted"
                )
            produced, counted, parts = produced + part_produced, counted + part_counted, parts + 1
    return CodedBits(produced, counted, parts) if found else None


def _take_coded(metrics: MutableMapping, side: str = "") -> Iterator[tuple[str, Any]]:
    """``(side, coded parts)`` for every ``CODED_MESSAGES_KEY`` in the nested ``metrics``, each removed."""
    for key in list(metrics):
        value = metrics[key]
        if key == CODED_MESSAGES_KEY:
            del metrics[key]
            yield side or "message", value
        elif isinstance(value, MutableMapping):
            yield from _take_coded(value, side or SIDES.get(str(key), str(key)))


def _check_parts(coded: Any) -> Iterator[tuple[str, int, int]]:
    """``(which part, produced, counted)`` for each part of one ``coded_parts`` structure, each checked."""
    words = np.asarray(coded["packed_words"])
    ends = np.cumsum(np.asarray(coded["packed_word_counts"], np.int64))
    for index, (end, count, num_values, bits, counted) in enumerate(
        zip(
            ends,
            coded["packed_word_counts"],
            coded["packed_num_values"],
            coded["packed_bits"],
            coded["packed_counted"],
            strict=True,
        )
    ):
        where = f"packed symbols {index}"
        symbols = unpack_symbols(words[end - count : end], int(num_values), int(bits), where)
        yield where, packed_produced_bits(symbols, int(bits), where), int(counted)
    positions = np.asarray(coded["positions"])
    ends = np.cumsum(np.asarray(coded["position_counts"], np.int64))
    for index, (end, count, size, counted) in enumerate(
        zip(ends, coded["position_counts"], coded["position_sizes"], coded["positions_counted"], strict=True)
    ):
        where = f"top-k positions {index}"
        yield where, positions_produced_bits(positions[end - count : end], int(size), where), int(counted)


def unpack_symbols(words: np.ndarray, num_values: int, bits: int, where: str = "packed symbols") -> np.ndarray:
    """The ``num_values`` symbols of ``bits`` bits packed end to end in 32-bit ``words``, the first in the lowest
    bits (``fl_sweeps.compression.bit_packing``)."""
    if len(words) != math.ceil(num_values * bits / 32):
        raise CodingCheckError(
            f"compression.verify_coding: {where}: {len(words)} words cannot hold {num_values} symbols of {bits} bits"
        )
    stream = np.unpackbits(np.asarray(words, np.int32).astype("<i4").view(np.uint8), bitorder="little")
    fields = stream[: num_values * bits].reshape(num_values, bits).astype(np.int64)
    return fields @ (np.int64(1) << np.arange(bits, dtype=np.int64))


def packed_produced_bits(symbols: np.ndarray, bits: int, where: str = "packed symbols") -> int:
    """Bits of ``symbols`` (an alphabet of ``2**bits``) coded by ANS under their own histogram, plus the histogram
    as counted; the stream is decoded and checked against ``symbols``."""
    counts = np.bincount(symbols, minlength=1 << bits)
    stream_bits = ans_stream_bits(symbols, counts / counts.sum(), where)
    return stream_bits + (1 << bits) * math.ceil(math.log2(symbols.size + 1))


def positions_produced_bits(positions: np.ndarray, size: int, where: str = "top-k positions") -> int:
    """Bits of the map of kept ``positions`` among ``size`` values coded by ANS under "kept with probability
    ``k/size``"; the stream is decoded and checked against the positions."""
    positions = np.asarray(positions, np.int64)
    kept = np.zeros(size, np.int32)
    if positions.size and (positions.min() < 0 or positions.max() >= size):
        raise CodingCheckError(f"compression.verify_coding: {where}: a position is outside the {size} values")
    kept[positions] = 1
    if int(kept.sum()) != positions.size:
        raise CodingCheckError(f"compression.verify_coding: {where}: a position is sent twice")
    stream_bits = ans_stream_bits(kept, np.array([size - positions.size, positions.size]) / size, where)
    return stream_bits


def ans_stream_bits(symbols: np.ndarray, probabilities: np.ndarray, where: str) -> int:
    """Bits of constriction's ANS stream of ``symbols`` under the static ``probabilities``, after checking that
    the stream decodes to ``symbols`` (``check_decodes``)."""
    stream = ans_encode(symbols, probabilities)
    check_decodes(stream, symbols, probabilities, where)
    return int(stream.size) * 32


def ans_encode(symbols: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """constriction's ANS stream (uint32 words) of ``symbols`` under the static ``probabilities``."""
    import constriction

    model = constriction.stream.model.Categorical(np.asarray(probabilities, np.float64), perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.asarray(symbols, np.int32), model)
    return coder.get_compressed()


def check_decodes(stream: np.ndarray, symbols: np.ndarray, probabilities: np.ndarray, where: str) -> None:
    """Raise ``CodingCheckError`` unless ``stream`` decodes under ``probabilities`` to ``symbols``."""
    import constriction

    model = constriction.stream.model.Categorical(np.asarray(probabilities, np.float64), perfect=False)
    decoded = constriction.stream.stack.AnsCoder(np.asarray(stream, np.uint32)).decode(model, symbols.size)
    if not np.array_equal(decoded, symbols):
        differ = int(np.count_nonzero(decoded != symbols))
        raise CodingCheckError(
            f"compression.verify_coding: {where}: the coded stream decodes to other symbols than the message's "
            f"({differ} of {symbols.size} differ)"
        )
