"""fl-sweeps compiles computations for the TFF worker exactly as TFF's native backend does, Grappler once per graph.

Real TFF processes built by the real trainer; the compiled computations are compared with TFF's own compiler's.
"""

from __future__ import annotations

import re

import pytest
from test_algorithm import BASE, COMPRESSION

from fl_sweeps.tff_runtime.compiler import WORKER_COMPILER, WorkerCompiler
from fl_sweeps.workbench import Workbench

pytestmark = pytest.mark.slow


def _proto_text(computation) -> str:
    from tensorflow_federated.python.core.impl.computation import computation_impl

    return str(computation_impl.ConcreteComputation.get_proto(computation))


def _canonical(computation) -> str:
    """The computation's structure as text: TFF's randomly generated local names numbered in order of use, and
    the TensorFlow graphs and their ids left out (ours place ops on the CPU before Grappler, so Grappler fuses)."""
    names: dict[str, int] = {}
    text = re.sub(r'value: "(?:[^"\\]|\\.)*"', "value: <graph>", _proto_text(computation))
    text = re.sub(r"cache_key \{\s*id: \d+\s*\}", "cache_key { id: <id> }", text)
    return re.sub(r'"(_[a-z]{3}\d+)"', lambda m: f'"local {names.setdefault(m.group(1), len(names))}"', text)


@pytest.fixture(scope="module")
def processes(compose_config, workbench: Workbench):
    quantized = compose_config([*BASE, *COMPRESSION["quantized"]])
    # rounding is traced (a new aggregation part); bits would not be: it is an input of the process
    other = compose_config([*BASE, *COMPRESSION["quantized"], "aggregate_encoder.rounding=stochastic"])
    return workbench.build_trial(quantized).process, workbench.build_trial(other).process


def test_compiles_as_tffs_native_backend(processes):
    from tensorflow_federated.python.core.backends.native import compiler

    for process in processes:
        for computation in (process.next, process.initialize, process.set_hparams):
            ours = _canonical(WORKER_COMPILER.compile(computation))
            assert ours == _canonical(compiler.desugar_and_transform_to_native(computation))
            assert "cache_key" in ours  # compiled to the end: graphs have their ids


def test_local_training_runs_fused_kernels(processes):
    """Ops are placed on the CPU before Grappler, so its remapper fuses the model's layers (TFF's graphs carry no
    device and come out unfused); the loop over batches is in the graph Grappler sees, not a tf.data function."""
    from tensorflow_federated.python.core.backends.native import compiler

    process = processes[0]
    ours = _proto_text(WORKER_COMPILER.compile(process.next))
    assert "_FusedConv2D" in ours
    assert "_FusedMatMul" in ours
    assert "_FusedMatMul" not in _proto_text(compiler.desugar_and_transform_to_native(process.next))
    assert "ReduceDataset" not in ours


def test_a_process_sharing_parts_reuses_their_optimized_graphs(processes):
    first, other = processes
    compiler = WorkerCompiler()
    compiler.compile(first.next)
    optimized = compiler.counts["optimized"]
    assert optimized > 0
    reused = compiler.counts["reused"]
    compiler.compile(first.next)
    assert compiler.counts["optimized"] == optimized  # the same computation: every graph from the cache
    assert compiler.counts["reused"] > reused
    before = dict(compiler.counts)
    compiler.compile(other.next)  # only the aggregation differs
    new = compiler.counts["optimized"] - before["optimized"]
    assert 0 < new < compiler.counts["reused"] - before["reused"]
