"""Passes over a freshly traced graph, before it is checked and written: what the tracer writes
that a runtime cannot load, or loads less well than it could."""

from __future__ import annotations


def resolve_static_squeezes(model) -> int:
    """Replace each If the tracer writes for ``squeeze(dim)`` on a dimension it could not size
    (PixArt's output after a ``view(batch, -1, width)``) by the branch that ran: Identity, as the
    dimension is a token count, not 1. Its squeezing branch is invalid for any other size, so
    ONNX Runtime refuses to load the graph with it. Only the batch is dynamic in these graphs, so
    only a squeeze of another axis is resolved; were the dimension 1 after all, the output's shape
    would differ and the parity gate refuse the export. Returns how many were replaced."""
    import onnx

    replaced = 0
    for index, node in enumerate(list(model.graph.node)):
        branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
        if node.op_type != "If" or len(branches) != 2:
            continue
        squeeze, identity = branches["then_branch"].node, branches["else_branch"].node
        if [n.op_type for n in identity] != ["Identity"] or [n.op_type for n in squeeze] != [
            "Constant",
            "Squeeze",
        ]:
            continue
        axes = onnx.numpy_helper.to_array(squeeze[0].attribute[0].t).ravel().tolist()
        if 0 in axes or squeeze[1].input[0] != identity[0].input[0]:
            continue
        model.graph.node.remove(node)
        model.graph.node.insert(
            index, onnx.helper.make_node("Identity", [identity[0].input[0]], list(node.output))
        )
        replaced += 1
    return replaced


def share_scalar_constants(model) -> int:
    """Point every use of an equal scalar Constant (same type and value) at the first one, and drop
    the others. The tracer writes one per use: each quantized layer its own zero point, so that
    to_q, to_k and to_v quantize their shared input three times over, to ONNX Runtime (which merges
    equal nodes only where their inputs are the same values) as to the reader. Shared, those
    become one QuantizeLinear: 24 fewer nodes in the digits UNet's ort-cpu graph, 6% of a call at
    batch 1 (2-core AMD EPYC). Returns how many were dropped."""
    from onnx import numpy_helper

    first: dict[tuple, str] = {}
    renamed: dict[str, str] = {}
    kept = []
    outputs = {output.name for output in model.graph.output}  # keep their names
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if (
            node.op_type == "Constant"
            and value is not None
            and _is_scalar(value)
            and node.output[0] not in outputs
        ):
            key = (value.data_type, tuple(value.dims), numpy_helper.to_array(value).tobytes())
            if key in first:
                renamed[node.output[0]] = first[key]
                continue
            first[key] = node.output[0]
        kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    _rename_inputs(model.graph, renamed)
    return len(renamed)


def _is_scalar(tensor) -> bool:
    return len(tensor.dims) == 0 or list(tensor.dims) == [1]


def _rename_inputs(graph, renamed: dict[str, str]) -> None:
    """Rewrite node inputs by ``renamed``, in subgraphs (If branches) too: they may read the outer
    graph's values."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                _rename_inputs(subgraph, renamed)
