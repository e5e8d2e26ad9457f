"""Float forward pass of a graph (Keras semantics): each node on its inputs' values, in
topological order. Calibration ranges come from it; tests hold it equal to Keras' predict."""

from __future__ import annotations

import numpy as np

from lstm_embed.ir.graph import Graph
from lstm_embed.kinds.base import LayerTrace


def forward(
    graph: Graph, inputs: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], dict[str, LayerTrace], dict[str, np.ndarray]]:
    """inputs by name, (N, T, m) or (N, m) -> (outputs in the graph's order, each node's
    trace by node name, every tensor's value by name)."""
    values = {t.name: np.asarray(inputs[t.name], dtype=np.float64) for t in graph.inputs}
    traces: dict[str, LayerTrace] = {}
    for node in graph.nodes:
        layer = node.layer
        trace = layer.forward_inputs([values[t] for t in node.inputs])
        traces[node.name] = trace
        values[node.outputs[0]] = layer.chain_output(trace)
        if node.returns_state:
            for name, value in zip(node.outputs[1:], layer.final_state(trace), strict=True):
                values[name] = value
    return [values[name] for name in graph.outputs], traces, values
