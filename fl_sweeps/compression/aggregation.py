"""Encoded aggregation of client updates: a weighted mean whose sum runs through tensor_encoding encoders."""

from __future__ import annotations

from typing import Any

from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph


def build_model_aggregator(*, encoder: NoCompression) -> Any:
    """Builds the ``model_aggregator`` for FedAvg: ``MeanFactory`` over an ``EncodedSumFactory``.

    Clients send their weighted update, encoded per tensor, and their weight; the server decodes and averages.

    Args:
        encoder: Encoder settings; ``NoCompression`` gives TFF's plain weighted mean.
    """
    import tensorflow_federated as tff
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    if type(encoder) is NoCompression:
        return tff.aggregators.MeanFactory()

    trace_tensor_encoding_without_autograph()

    def encoder_fn(spec):
        return te.encoders.as_gather_encoder(
            encoder.tensor_encoder(spec.shape.num_elements(), spec.dtype.is_floating), spec
        )

    return tff.aggregators.MeanFactory(value_sum_factory=tff.aggregators.EncodedSumFactory(encoder_fn))
