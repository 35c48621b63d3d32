"""fl-sweeps compiles computations for the TFF worker exactly as TFF's native backend does, Grappler once per graph.

Real TFF processes built by the real trainer; the compiled computations are compared with TFF's own compiler's.
"""

from __future__ import annotations

import re

import pytest
from hydra.utils import instantiate
from test_algorithm import BASE, COMPRESSION
from test_fedavg_parts import _trial

from fl_sweeps import worker_compiler
from fl_sweeps.built_parts import BuiltParts

pytestmark = pytest.mark.slow


def _canonical(computation) -> str:
    """The computation's proto as text, with TFF's randomly generated local names numbered in order of use."""
    from tensorflow_federated.python.core.impl.computation import computation_impl

    names: dict[str, int] = {}
    text = str(computation_impl.ConcreteComputation.get_proto(computation))
    return re.sub(r'"(_[a-z]{3}\d+)"', lambda m: f'"local {names.setdefault(m.group(1), len(names))}"', text)


@pytest.fixture(scope="module")
def processes(compose_config, tff_worker):
    quantized = compose_config([*BASE, *COMPRESSION["quantized"]])
    data = instantiate(quantized.data)
    parts = BuiltParts()
    other = compose_config([*BASE, *COMPRESSION["quantized"], "aggregate_encoder.bits=2"])
    return _trial(quantized, data, parts).process, _trial(other, data, parts).process


def test_compiles_as_tffs_native_backend(processes):
    from tensorflow_federated.python.core.backends.native import compiler

    for process in processes:
        for computation in (process.next, process.initialize, process.set_hparams):
            ours = _canonical(worker_compiler.compile_for_worker(computation))
            assert ours == _canonical(compiler.desugar_and_transform_to_native(computation))
            assert "cache_key" in ours  # compiled to the end: graphs have their ids


def test_a_process_sharing_parts_reuses_their_optimized_graphs(processes):
    first, other = processes
    worker_compiler._optimized.clear()
    worker_compiler.compile_for_worker(first.next)
    optimized = worker_compiler.counts["optimized"]
    reused = worker_compiler.counts["reused"]
    worker_compiler.compile_for_worker(first.next)
    assert worker_compiler.counts["optimized"] == optimized  # the same computation: every graph from the cache
    assert worker_compiler.counts["reused"] > reused
    before = dict(worker_compiler.counts)
    worker_compiler.compile_for_worker(other.next)  # only the aggregation differs
    new = worker_compiler.counts["optimized"] - before["optimized"]
    assert 0 < new < worker_compiler.counts["reused"] - before["reused"]
