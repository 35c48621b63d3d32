"""Compile computations for the TFF worker in the steps of TFF's native backend, optimizing each graph only once.

On the first call of a computation, TFF's execution context compiles it: intrinsics are replaced by TensorFlow,
the computation is put in call-dominant form, every TensorFlow graph in it goes through Grappler, and each graph
gets an id from its bytes (the worker caches what it builds by that id). A sweep composes many processes from the
same parts (``BuiltParts``), so most graphs of a new process were already optimized for an earlier one. Here
Grappler's result is kept by the graph's bytes and the building block is not serialized and parsed in between;
the compiled computation is the one TFF's ``desugar_and_transform_to_native`` produces.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache

# Graphs kept after optimization; a trial's process holds about twenty.
MAX_OPTIMIZED_GRAPHS = 256
CPU_DEVICE = "/device:CPU:0"


def grappler_config() -> Any:
    """The static Grappler settings TFF's native backend compiles with (function inlining among them)."""
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    options = config.graph_options.rewrite_options
    aggressive = options.AGGRESSIVE
    options.memory_optimization = aggressive
    options.constant_folding = aggressive
    options.arithmetic_optimization = aggressive
    options.loop_optimization = aggressive
    options.function_optimization = aggressive
    return config


def placed_on_cpu(node: Any) -> Any:
    """The TensorFlow computation ``node`` with every op, in its graph and its functions, placed on the CPU.

    Grappler's remapper fuses ops (Conv2D or MatMul + BiasAdd + Relu into one oneDNN kernel) only on nodes placed
    on a CPU, and TFF's graphs carry no device: without this, the worker runs every op of local training unfused.
    The worker has only the CPU, so the placement changes nothing else.
    """
    from tensorflow_federated.python.core.impl.compiler import building_blocks
    from tensorflow_federated.python.tensorflow_libs import serialization_utils

    graph_def = serialization_utils.unpack_graph_def(node.proto.tensorflow.graph_def)
    op_lists = [graph_def.node, *(function.node_def for function in graph_def.library.function)]
    for ops in op_lists:
        for op in ops:
            if not op.device:
                op.device = CPU_DEVICE
    proto = copy.deepcopy(node.proto)
    proto.tensorflow.graph_def.CopyFrom(serialization_utils.pack_graph_def(graph_def))
    return building_blocks.CompiledComputation(proto, name=node.name, type_signature=node.type_signature)


class WorkerCompiler:
    """The ``compiler_fn`` of fl-sweeps' execution context, with Grappler's results kept by graph.

    Attributes:
        counts: Graphs run through Grappler (``optimized``) and taken from the cache (``reused``) by this compiler.
    """

    def __init__(self, max_graphs: int = MAX_OPTIMIZED_GRAPHS) -> None:
        self._optimized: LRUCache[bytes, Any] = LRUCache(maxsize=max_graphs)
        self.counts = {"optimized": 0, "reused": 0}

    def compile(self, computation: Any) -> Any:
        """``computation`` ready for the TFF worker, as TFF's ``desugar_and_transform_to_native`` compiles it."""
        from tensorflow_federated.python.core.environments.tensorflow_backend import (
            compiled_computation_transformations as compiled,
        )
        from tensorflow_federated.python.core.environments.tensorflow_backend import tensorflow_tree_transformations
        from tensorflow_federated.python.core.impl.compiler import (
            building_blocks,
            transformation_utils,
            transformations,
        )
        from tensorflow_federated.python.core.impl.computation import computation_impl
        from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

        desugared, _ = tensorflow_tree_transformations.replace_intrinsics_with_bodies(computation.to_building_block())
        try:
            form = transformations.to_call_dominant(desugared)
            config = grappler_config()

            def optimize(node: Any) -> tuple[Any, bool]:
                if not isinstance(node, building_blocks.CompiledComputation):
                    return node, False
                return (
                    self._optimize_once(node, lambda: compiled.optimize_tensorflow_comp(placed_on_cpu(node), config)),
                    True,
                )

            form, _ = transformation_utils.transform_postorder(form, optimize)
            form, _ = compiled.transform_tf_call_ops_to_disable_grappler(form)
            form, _ = compiled.transform_tf_add_ids(form)
        except ValueError:  # as TFF does: a computation it cannot put in native form runs desugared
            form = desugared
        return computation_impl.ConcreteComputation(
            computation_proto=form.proto, context_stack=context_stack_impl.context_stack
        )

    def _optimize_once(self, node: Any, optimize: Callable[[], Any]) -> Any:
        """The TensorFlow computation ``node`` optimized by ``optimize()``, or by an earlier call for the same graph."""
        key = hashlib.sha256(node.proto.SerializeToString(deterministic=True)).digest()
        if key in self._optimized:
            self.counts["reused"] += 1
            return self._optimized[key]
        optimized = self._optimized[key] = optimize()
        self.counts["optimized"] += 1
        return optimized

    def clear(self) -> None:
        """Drop every kept graph."""
        self._optimized.clear()


# The one compiler of this process's execution context (``worker.ensure_worker`` installs it).
WORKER_COMPILER = WorkerCompiler()
