"""Integer reference of a graph: each node over the whole window in topological order, as the
generated run() does (a node depends only on its inputs, so the order of timesteps across
nodes does not change the integers). The oracle of the graph's C."""

from __future__ import annotations

import numpy as np

from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.graph_quantizer import QGraph
from lstm_embed.quantize.graph_rounding import node_output


def run(qgraph: QGraph, inputs_q: dict[str, np.ndarray]) -> list[np.ndarray]:
    """int16 inputs by name -> int16 outputs in the graph's order."""
    values = run_tensors(qgraph, inputs_q)
    return [values[name].astype(np.int16) for name in qgraph.graph.outputs]


def run_tensors(
    qgraph: QGraph, inputs_q: dict[str, np.ndarray], traces: dict[str, list] | None = None
) -> dict[str, np.ndarray]:
    """int16 inputs by name -> every tensor's integer values by name (inputs, each node's
    output and returned states); ``traces`` receives each node's step traces (in processing
    order) by node name."""
    graph = qgraph.graph
    values = {t.name: np.asarray(inputs_q[t.name], np.int64) for t in graph.inputs}
    for node in graph.nodes:
        steps: list = []
        node_output(node.layer, node, values, qgraph.tables, steps)
        windowed = node.layer.arity is None or (node.mask and not node.layer.recurrent)
        if traces is not None and not windowed:  # the nodes that run step by step
            traces[node.name] = steps
    return values


def quantize_inputs(qgraph: QGraph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        t.name: fp.quantize_input(inputs[t.name], qgraph.inv_scale(t.name))
        for t in qgraph.graph.inputs
    }


def dequantize(qgraph: QGraph, outputs_q: list[np.ndarray]) -> list[np.ndarray]:
    """int16 outputs -> float32, y_q * scale per feature in float32 (as the C)."""
    return [
        np.asarray(y, np.float32) * qgraph.scales[name].astype(np.float32)
        for name, y in zip(qgraph.graph.outputs, outputs_q, strict=True)
    ]


def run_float(qgraph: QGraph, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The float entry points: quantize every input, integer run, dequantize every output."""
    return dequantize(qgraph, run(qgraph, quantize_inputs(qgraph, inputs)))
