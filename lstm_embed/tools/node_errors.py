"""compare --report's rows per node, the same for a chain and a graph: each node's output
tensors (its output; a recurrent layer's returned states too), the integer reference (equal to
the C bit for bit) in real units against the float forward pass of the same weights, with the
node's inputs named. A chain is the one-path graph: its input tensor is ``input``, each
layer's output is named after the layer (``ir.graph.Graph.from_chain``). After a Masking layer,
the masked timesteps of sequence tensors are left out (set to zero on both sides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_embed.emit.report import errors
from lstm_embed.ir.float_model import forward as chain_forward
from lstm_embed.ir.graph import Graph
from lstm_embed.ir.graph_forward import forward as graph_forward
from lstm_embed.ir.model import Model
from lstm_embed.kinds.masking import masking_index
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.graph_quantizer import QGraph
from lstm_embed.quantize.qir import QModel
from lstm_embed.reference import graph_run
from lstm_embed.reference import interpreter as reference
from lstm_embed.reference.trace import CHAIN_INPUT


@dataclass(frozen=True)
class NodeInfo:
    """What a row names: the node, its layer type, the tensors it reads and writes."""

    name: str
    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class TensorValues:
    """Every tensor's value by name: the float forward pass's, and the integer reference's in
    real units (integers times the tensor's scale per feature)."""

    nodes: list[NodeInfo]
    inputs: list[str]
    float: dict[str, np.ndarray]
    real: dict[str, np.ndarray]


def chain_values(ir: Model, qmodel: QModel, x: np.ndarray) -> TensorValues:
    x = np.asarray(x, np.float32)
    x_q = fp.quantize_input(x, qmodel.input_inv_scale)
    outputs: list[np.ndarray] = []
    reference.run(qmodel, x_q, layer_outputs=outputs)
    _, traces = chain_forward(ir, x.astype(np.float64))
    floats = {CHAIN_INPUT: x.astype(np.float64)}
    real = {CHAIN_INPUT: x_q * qmodel.input_scale.astype(np.float64)}
    nodes, src = [], CHAIN_INPUT
    for layer, qlayer, trace, y in zip(ir.layers, qmodel.layers, traces, outputs, strict=True):
        nodes.append(NodeInfo(layer.name, layer.summary()["type"], (src,), (layer.name,)))
        floats[layer.name] = layer.chain_output(trace)
        real[layer.name] = np.asarray(y) * np.asarray(qlayer.output_feature_scale, np.float64)
        src = layer.name
    index = masking_index(qmodel.layers)
    if index is not None:
        padding = qmodel.layers[index].float_mask(x)
        for layer in qmodel.layers[index:]:
            floats[layer.name], real[layer.name] = (
                without_padding(v, padding) for v in (floats[layer.name], real[layer.name])
            )
    return TensorValues(nodes, [CHAIN_INPUT], floats, real)


def without_padding(values: np.ndarray, padding: np.ndarray) -> np.ndarray:
    """A sequence tensor after a Masking layer with its masked timesteps (``padding`` (N, T),
    True there) set to zero: the recurrent layers skip them, so nothing reads their values;
    other tensors as they are."""
    if values.ndim != 3 or values.shape[1] != padding.shape[1]:
        return values
    return np.where(padding[..., None], 0.0, values)


def graph_values(graph: Graph, qgraph: QGraph, x: dict[str, np.ndarray]) -> TensorValues:
    x32 = {k: np.asarray(v, np.float32) for k, v in x.items()}
    ints = graph_run.run_tensors(qgraph, graph_run.quantize_inputs(qgraph, x32))
    _, _, floats = graph_forward(graph, {k: v.astype(np.float64) for k, v in x32.items()})
    real = {name: np.asarray(v) * qgraph.scales[name] for name, v in ints.items()}
    nodes = [
        NodeInfo(n.name, n.layer.summary()["type"], tuple(n.inputs), tuple(n.outputs))
        for n in graph.nodes
    ]
    return TensorValues(nodes, [t.name for t in graph.inputs], floats, real)


def tensor_row(node: str, kind: str, inputs: tuple, tensor: str, values: TensorValues) -> dict:
    want, got = values.float[tensor], values.real[tensor]
    row: dict[str, Any] = {"node": node, "type": kind, "inputs": list(inputs), "tensor": tensor,
                           "shape": list(want.shape[1:])}  # fmt: skip
    if want.shape != got.shape:  # not expected; shown rather than hidden
        return row | {"note": f"integer shape {got.shape[1:]} != float {want.shape[1:]}"}
    return row | {"float_max_abs": float(np.max(np.abs(want))), **errors(want, got)}


def node_rows(values: TensorValues) -> list[dict[str, Any]]:
    """One row per tensor: the model inputs (their int16 quantization), then every node's
    outputs in topological order."""
    rows = [tensor_row(name, "Input", (), name, values) for name in values.inputs]
    for node in values.nodes:
        rows += [tensor_row(node.name, node.type, node.inputs, t, values) for t in node.outputs]
    return rows


def mark_outputs(rows: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
    """Add to the rows of the model's output tensors what compare measured on them: the host
    C against the oracle and whether the C equals the reference bit for bit."""
    for k, output in enumerate(outputs):
        for row in rows:
            if row["tensor"] == output["tensor"] and row["type"] != "Input":
                row["output"] = f"output_{k}"
                row["c_vs_oracle_max_abs_error"] = output["max_abs_error"]
                row["c_equals_reference"] = output["c_equals_reference"]
