"""trace: every tensor and every gate of every step of the integer reference, as arrays (equal
to the C), for a chain (``qmodel.npz``) and for a graph (``qgraph.npz``) alike."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.ir.model import leaves
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.graph_quantizer import check_inputs
from lstm_embed.quantize.qgraph_file import QGRAPH_FILE, load_qgraph
from lstm_embed.quantize.qir import QMODEL_FILE, load_qmodel
from lstm_embed.reference import graph_run
from lstm_embed.reference import interpreter as reference

CHAIN_INPUT = "input"  # the tensor name of a chain's input (``Graph.from_chain``'s)


def layer_steps(trace: reference.Trace, layer: str) -> list[Any]:
    """The step traces of the layer named ``layer``, one per timestep (a layer kind's own
    dataclass: LSTM z, gates_q15, c, h_q15; GRU z, gates_q15, h_q15)."""
    return [s for step in trace.steps for s in step if s.layer == layer]


def gate_arrays(layers: list[Any], trace_of: dict[str, reference.Trace]) -> dict[str, np.ndarray]:
    """Per recurrent layer k (a Bidirectional's directions apart, each in its processing
    order; ``trace_of``: the trace holding each layer's steps, by name): every field of its
    step trace stacked over time as ``k_<name>.<field>``."""
    arrays: dict[str, np.ndarray] = {}
    recurrent = [leaf for layer in layers for leaf in leaves(layer) if leaf.recurrent]
    for index, layer in enumerate(recurrent):
        steps = layer_steps(trace_of[layer.name], layer.name)
        if not steps:
            continue
        prefix = f"{index}_{layer.name}"
        for field in fields(steps[0]):
            if field.name == "layer":
                continue
            values = np.stack([getattr(s, field.name) for s in steps], axis=1)
            arrays[f"{prefix}.{field.name}"] = values.astype(np.int32)
    return arrays


def trace_to_arrays(out_dir: Path, x: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per recurrent layer k: ``k_<name>.<field>`` (N, T, ...) (``gate_arrays``): LSTM ``z``
    (N, T, units, 4) gate pre-activations (Z16), ``gates_q15`` (i, f, g, o), ``c`` and
    ``h_q15`` (N, T, units); GRU ``z`` (N, T, units, rows: z, r, hx, hh or z, r, h),
    ``gates_q15`` (z, r, candidate) and ``h_q15``. Per tensor: ``tensor.<name>``, its integer
    values as the next layer reads them (a chain's input is ``input``, each layer's output is
    named after the layer; a graph's tensors as ``inspect`` names them). A chain also gives
    ``x_q`` and ``y_q``. ``x``: (N, T, m) for a chain ((N, T) token ids, (N, T, F, C) frames
    too); by input name (or one array for one input) for a graph."""
    out_dir = Path(out_dir)
    if (out_dir / QGRAPH_FILE).is_file():
        return graph_trace(out_dir, x)
    path = out_dir / QMODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: no {QMODEL_FILE}; convert again with this version")
    if isinstance(x, dict):
        raise ValueError(f"{out_dir} holds a chain: give its input as one (N, T, m) array")
    qmodel = load_qmodel(path)
    x = np.asarray(x)
    x = x.reshape(*x.shape[:2], -1) if x.ndim > 3 else x  # (T, F, C) frames, row-major
    if qmodel.layers[0].takes_ids and x.ndim == 2:  # (N, T) token ids: one "feature" each
        x = x[..., None]
    x_q = fp.quantize_input(x, qmodel.input_inv_scale)
    trace = reference.Trace()
    outputs: list[np.ndarray] = []
    y_q = reference.run(qmodel, x_q, trace, layer_outputs=outputs)
    arrays: dict[str, np.ndarray] = {"x_q": x_q, "y_q": y_q}
    arrays |= gate_arrays(list(qmodel.layers), {la.name: trace for la in qmodel.leaf_layers})
    arrays[f"tensor.{CHAIN_INPUT}"] = x_q.astype(np.int32)
    for layer, y in zip(qmodel.layers, outputs, strict=True):
        arrays[f"tensor.{layer.name}"] = np.asarray(y).astype(np.int32)
    return arrays


def graph_trace(out_dir: Path, x: Any) -> dict[str, np.ndarray]:
    qgraph = load_qgraph(out_dir / QGRAPH_FILE)
    names = [t.name for t in qgraph.graph.inputs]
    if not isinstance(x, dict) and len(names) != 1:
        raise ValueError(f"{out_dir}: the model has inputs {names}: give one array per name")
    given = x if isinstance(x, dict) else {names[0]: x}
    inputs = check_inputs(qgraph.graph, given, "--input")
    traces: dict[str, list] = {}
    values = graph_run.run_tensors(qgraph, graph_run.quantize_inputs(qgraph, inputs), traces)
    trace_of = {}
    for node in qgraph.graph.nodes:
        trace = reference.Trace()
        trace.add_layer(traces.get(node.name, []))
        trace_of |= {leaf.name: trace for leaf in leaves(node.layer)}
    arrays = gate_arrays(list(qgraph.graph.layers), trace_of)
    return arrays | {f"tensor.{k}": np.asarray(v).astype(np.int32) for k, v in values.items()}
