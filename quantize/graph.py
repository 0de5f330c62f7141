"""Walking an ONNX graph: who writes a tensor, who reads it, what lies downstream.

The quantisers (int8, fp16) pick the nodes to leave in float by their place in
the graph, and the TensorRT checker traces weights back to initializers; they
all read the graph through these few functions.
"""

from __future__ import annotations

from typing import Any, Iterator


def producers(proto) -> dict[str, Any]:
    """Tensor name -> the node that writes it."""
    return {o: n for n in proto.graph.node for o in n.output}


def consumers(proto) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it, in graph order."""
    out: dict[str, list[Any]] = {}
    for n in proto.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def downstream(proto, sources: list[str]) -> Iterator[Any]:
    """Every node that reads, directly or not, one of the tensors ``sources``,
    once each, breadth-first (nearest first)."""
    readers = consumers(proto)
    frontier, seen = list(sources), set()
    while frontier:
        for n in readers.get(frontier.pop(0), []):
            if id(n) in seen:
                continue
            seen.add(id(n))
            yield n
            frontier.extend(n.output)


def first_downstream(proto, sources: list[str], op_type: str):
    """The first node of ``op_type`` reached breadth-first from the tensors ``sources``; None if none."""
    return next((n for n in downstream(proto, sources) if n.op_type == op_type), None)
