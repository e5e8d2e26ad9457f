"""Integer reference of a graph: each node over the whole window in topological order, as the
generated run() does (a node depends only on its inputs, so the order of timesteps across
nodes does not change the integers). The oracle of the graph's C."""

from __future__ import annotations

import numpy as np

from lstm_embed.kinds.common import run_window
from lstm_embed.kinds.masking import masked_window
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.graph_quantizer import QGraph


def run(qgraph: QGraph, inputs_q: dict[str, np.ndarray]) -> list[np.ndarray]:
    """int16 inputs by name -> int16 outputs in the graph's order."""
    graph = qgraph.graph
    values = {t.name: np.asarray(inputs_q[t.name], np.int64) for t in graph.inputs}
    for node in graph.nodes:
        layer = node.layer
        xs = [values[t] for t in node.inputs]
        if node.mask and not layer.recurrent:  # a layer that reads the mask itself
            values[node.outputs[0]] = layer.window_masked(xs, values[node.mask])
            continue
        if layer.arity is None:
            values[node.outputs[0]] = layer.apply(xs)
            continue
        state = layer.initial_state(len(xs[0]))
        if node.mask:
            y = masked_window(layer, xs[0], values[node.mask], state, qgraph.tables)
        else:
            y = run_window(layer, xs[0], state, qgraph.tables)
        values[node.outputs[0]] = y
        if node.mask_output:
            values[node.mask_output] = layer.integer_mask(xs[0])
        if node.returns_state:
            for name, value in zip(node.outputs[1:], layer.final_state(state), strict=True):
                values[name] = value
    return [values[name].astype(np.int16) for name in graph.outputs]


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
