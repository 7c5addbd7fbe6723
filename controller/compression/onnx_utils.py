"""Small ONNX graph queries shared by the ONNX-level techniques."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load(path: Path) -> Any:
    """Load an ONNX model with its weights."""
    import onnx

    return onnx.load(str(path))


def op_counts(path: Path) -> dict[str, int]:
    """Op type → node count."""
    counts: dict[str, int] = {}
    for node in load(path).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def weight_nodes(model: Any, op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")) -> list[tuple[Any, str]]:
    """(node, weight initializer name) for every node of ``op_types`` whose input 1 is an initializer."""
    inits = {i.name for i in model.graph.initializer}
    return [(n, n.input[1]) for n in model.graph.node
            if n.op_type in op_types and len(n.input) > 1 and n.input[1] in inits]


def param_count(model: Any) -> int:
    """Number of scalars in all initializers."""
    return int(sum(int(np.prod(i.dims)) if i.dims else 1 for i in model.graph.initializer))


def quick_latency_ratio(reference: Path, candidate: Path, inputs: list[dict[str, np.ndarray]],
                        threads: int = 1) -> float:
    """p50 latency ratio candidate / reference on a short interleaved run (used to refuse slow outputs)."""
    from controller.evaluation.latency import compare_latency

    return compare_latency(reference, candidate, inputs[:8], threads=threads, batch=1, budget_s=1.5,
                           min_runs=8, max_runs=60)["ratio_p50"]


def gemm_to_matmul(model: Any) -> list[str]:
    """Rewrite ``Gemm(A, B_const[, C])`` (alpha = beta = 1, no transA) as ``MatMul`` + ``Add`` in place.

    Torch exports 2-D ``nn.Linear`` as Gemm, which ORT's INT4 ``MatMulNBits`` cannot take; the
    rewrite is exact and lets classifier heads be packed too. Returns the rewritten node names.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, done = [], []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        w_name = f"{node.name}_matmul_weight"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), w_name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.name}_matmul_out" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=f"{node.name}_MatMul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_Add"))
        done.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    return done


def topological_sort(graph: Any) -> None:
    """Re-order ``graph.node`` topologically in place (Kahn's algorithm; stable for ready nodes)."""
    from collections import deque

    available = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    producers = {o: idx for idx, n in enumerate(graph.node) for o in n.output}
    nodes = list(graph.node)
    waiting = [0] * len(nodes)
    consumers: dict[int, list[int]] = {}
    for idx, node in enumerate(nodes):
        needed = [*node.input, *_outer_references(node)]  # an If/Loop body may read outer-scope tensors
        deps = {producers[i] for i in needed if i not in available and i in producers and producers[i] != idx}
        waiting[idx] = len(deps)
        for dep in deps:
            consumers.setdefault(dep, []).append(idx)
    ready = deque(i for i, w in enumerate(waiting) if w == 0)
    order = []
    while ready:
        idx = ready.popleft()
        order.append(idx)
        for nxt in consumers.get(idx, []):
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    placed = set(order)
    order += [i for i in range(len(nodes)) if i not in placed]  # cycles / outer-scope names: keep
    sorted_nodes = [nodes[i] for i in order]
    del graph.node[:]
    graph.node.extend(sorted_nodes)


def _outer_references(node: Any) -> set[str]:
    """Tensor names a node's subgraphs (If branches, Loop/Scan bodies) read from the enclosing graph."""
    from onnx import AttributeProto

    refs: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            local = {i.name for i in graph.initializer} | {i.name for i in graph.input}
            local |= {o for n in graph.node for o in n.output}
            for inner in graph.node:
                refs |= {i for i in inner.input if i and i not in local}
                refs |= _outer_references(inner) - local
    return refs
