"""Trace tensor_encoding's code as plain graph code, without AutoGraph.

tensor_encoding (tensorflow-model-optimization) was written for graph mode: its Python ``if`` and ``for`` run on
static values (shapes, bit widths, settings) and it uses TensorFlow ops for everything that depends on data. When
TFF traces an encoder inside ``tf.function``, AutoGraph still converts every tensor_encoding function it calls,
which is pure cost: 1.5 to 10 s per built broadcast or aggregation, against 0.6 to 1.4 s without
(BENCHMARKS.md). Excluding the package from conversion changes no op in the traced graph; tests/test_bits.py and
the equivalence tests check the encoded results.
"""

from __future__ import annotations

_PACKAGE = "tensorflow_model_optimization"


def trace_tensor_encoding_without_autograph() -> None:
    """Add tensor_encoding's package to AutoGraph's do-not-convert rules (idempotent)."""
    from tensorflow.python.autograph.core import config, config_lib

    if not any(isinstance(r, config_lib.DoNotConvert) and r.matches(_PACKAGE) for r in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config_lib.DoNotConvert(_PACKAGE), *config.CONVERSION_RULES)
