"""Float forward pass of a graph (Keras semantics): each node on its inputs' values, in
topological order. Calibration ranges come from it; tests hold it equal to Keras' predict.
A mask tensor holds (N, T) bools (True: padded); a recurrent node that reads one runs each
sequence on its unmasked timesteps (``masking.masked_forward``)."""

from __future__ import annotations

import numpy as np

from lstm_embed.ir.graph import Graph
from lstm_embed.kinds.base import LayerTrace
from lstm_embed.kinds.masking import masked_forward


def forward(
    graph: Graph, inputs: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], dict[str, LayerTrace], dict[str, np.ndarray]]:
    """inputs by name, (N, T, m) or (N, m) -> (outputs in the graph's order, each node's
    trace by node name, every tensor's value by name)."""
    values = {t.name: np.asarray(inputs[t.name], dtype=np.float64) for t in graph.inputs}
    traces: dict[str, LayerTrace] = {}
    for node in graph.nodes:
        layer = node.layer
        xs = [values[t] for t in node.inputs]
        if node.mask and layer.recurrent:
            trace = masked_forward(layer, xs[0], values[node.mask])
        elif node.mask:  # a layer that reads a mask itself (an average of unmasked steps)
            trace = layer.forward_masked(xs, values[node.mask])
        else:
            trace = layer.forward_inputs(xs)
        traces[node.name] = trace
        values[node.outputs[0]] = layer.chain_output(trace)
        if node.mask_output:
            values[node.mask_output] = layer.mask_of(xs[0])
        if node.returns_state:
            for name, value in zip(node.outputs[1:], layer.final_state(trace), strict=True):
                values[name] = value
    return [values[name] for name in graph.outputs], traces, values
