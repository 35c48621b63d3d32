"""The base of every ``broadcast_encoder``/``aggregate_encoder`` option: ``none``, tensors sent as they are.

Each option is what a config file's ``_target_`` builds: a frozen dataclass, compared by its settings (built
processes are kept by it), that knows which tensors it compresses and builds the tensor_encoding ``Encoder`` for
one tensor (TensorFlow imported only then). Every other option is a ``StageChain``
(``fl_sweeps.compression.chain``). Bits are not computed here: they are measured from the encoded messages
(``fl_sweeps.compression.measure``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NoCompression:
    """Send every tensor as it is.

    Attributes:
        name: The option's name (for tables and messages).
        error_feedback: Aggregation only: clients keep state that makes up for what compression drops
            (``fl_sweeps.compression.error_feedback``); not allowed for ``none``.
        error_feedback_rule: Aggregation only: ``ef14`` (a residual added to the next update) or ``ef21`` (the
            client sends the compressed difference between its update and its last estimate of it).
        delta: Broadcast only: send the compressed change of the global model, not the model
            (``fl_sweeps.compression.delta_broadcast``).
        delta_receivers: Broadcast only, with ``delta``: ``sampled`` (a client receives only in the rounds it is
            sampled in, and catches up then: cross-device) or ``all`` (every client receives every round's change:
            cross-silo).
        catch_up: Broadcast only, with ``delta`` to sampled receivers: how a sampled client catches up,
            ``messages`` (every change it missed, or the model if fewer bits; ``fl_sweeps.compression.catch_up``) or
            ``difference`` (one message, the compressed difference between the server's model and the one it holds;
            ``fl_sweeps.compression.difference_catch_up``) or ``anchors`` (the server keeps at most ``anchors``
            reference models; a client rebuilds the newest from what it holds and receives one correction;
            ``fl_sweeps.compression.anchor_catch_up``).
        anchors: Broadcast only, with ``catch_up=anchors``: how many anchor models the server keeps (K >= 1).
        anchor_every: Broadcast only, with ``catch_up=anchors``: a new anchor every this many rounds (>= 1).
        verify_coding: Set by ``compression.verify_coding``, not in an option's YAML: the entropy-coded parts of
            every message also go out of the computation, to be coded for real (``fl_sweeps.compression.coding_check``).
    """

    name: str = "none"
    error_feedback: bool = False
    error_feedback_rule: str = "ef14"
    delta: bool = False
    delta_receivers: str = "sampled"
    catch_up: str = "messages"
    anchors: int = 4
    anchor_every: int = 5
    verify_coding: bool = False

    @property
    def sends_difference(self) -> bool:
        """Whether the broadcast sends each sampled client one difference from the model it holds (the delta
        broadcast with ``catch_up=difference``)."""
        return self.delta and self.catch_up == "difference"

    @property
    def sends_anchors(self) -> bool:
        """Whether the broadcast brings each sampled client to the newest of at most ``anchors`` server models and
        sends it one correction (the delta broadcast with ``catch_up=anchors``)."""
        return self.delta and self.catch_up == "anchors"

    def compresses(self, num_elements: int, is_float: bool) -> bool:
        """Whether a tensor of this size and kind is encoded (never)."""
        return False

    def check_shapes(self, side: str, shapes: Any) -> None:
        """Raise ``ConfigError`` if the option cannot encode tensors of ``shapes`` (the model's) on ``side``; every
        option can but PowerSGD with a rank above a matrix's smaller side (``StageChain.check_shapes``)."""

    def sparsifies(self) -> bool:
        """Whether the option sends only a subset of a tensor's values (not allowed for the broadcast of weights)."""
        return False

    def built_key(self) -> NoCompression:
        """What a process built with this option depends on (``StageChain`` leaves out the settings that are inputs
        of the process)."""
        return self

    def tensor_settings(self, num_elements: int, is_float: bool) -> tuple[Any, ...]:
        """What ``tensor_encoder`` for one tensor depends on besides its size, without the settings that are inputs
        of the process: a cache key, with the tensor's shape (a rotation's seed also depends on the size)."""
        return ("identity",)

    def tensor_encoder(self, num_elements: int, is_float: bool) -> Any:
        """The tensor_encoding ``Encoder`` for one tensor."""
        from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

        return te.encoders.identity()


Encoder = NoCompression  # every encoder option is a NoCompression or a subclass of it
