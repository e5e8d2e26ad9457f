"""Quantizer of a graph: float graph + calibration inputs (one array per model input) ->
the same graph over quantized layers, with the real value of one LSB of every tensor.

Nodes quantize in topological order, each with the feature scales of its inputs (a merge sees
every input's: ``QuantContext.input_scales``). Inputs are int16 per feature as in a chain
(``quantizer.input_scale``); returned states keep their layer's formats (h Q0.15, an LSTM's
cell int16 with its power-of-two scale). Weights are rounded as ``--rounding`` says, node by
node (``graph_rounding``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lstm_embed.ir.graph import Graph, Node
from lstm_embed.ir.graph_forward import forward
from lstm_embed.kinds.base import QLayer, QuantContext, QuantizeError
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.graph_rounding import GraphRounding
from lstm_embed.quantize.quantizer import QuantizeOptions, check_finite, input_scale


@dataclass(frozen=True)
class QGraph:
    """A graph of quantized layers; ``scales``: each tensor's real LSB per feature."""

    graph: Graph
    scales: dict[str, np.ndarray]
    tables: dict[str, fp.ActivationTable] = field(default_factory=dict)
    params: int = 0
    rounding: dict = field(default_factory=dict)  # what GraphRounding.record() says

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def source(self) -> str:
        return self.graph.source

    def inv_scale(self, tensor: str) -> np.ndarray:
        return (1.0 / self.scales[tensor].astype(np.float64)).astype(np.float32)

    @property
    def streaming(self) -> bool:
        return all(layer.streaming for layer in self.graph.layers)

    @property
    def macs_per_step(self) -> int:
        return sum(layer.macs for layer in self.graph.layers)


def check_inputs(graph: Graph, inputs: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """One finite float array per model input, all with the same number of rows, shaped as
    the input declares: (N, T, m) or (N, m)."""
    missing = [t.name for t in graph.inputs if t.name not in inputs]
    if missing:
        names = ", ".join(t.name for t in graph.inputs)
        raise QuantizeError(f"{what}: no array for input {missing[0]!r} (the inputs: {names})")
    out, rows = {}, set()
    for spec in graph.inputs:
        x = np.asarray(inputs[spec.name])
        if x.dtype.kind != "f":
            raise QuantizeError(f"{what} {spec.name!r}: dtype {x.dtype}, expected floating point")
        want = len(spec.shape) + 1
        declared = tuple(spec.shape)
        sizes = x.shape[1:]
        fits = all(d is None or d == s for d, s in zip(declared, sizes, strict=False))
        ok = x.ndim == want and fits
        if not ok or x.shape[0] < 1:
            shape = ", ".join("T" if d is None else str(d) for d in declared)
            raise QuantizeError(f"{what} {spec.name!r} has shape {x.shape}; expected (N, {shape})")
        if not np.all(np.isfinite(x)):
            raise QuantizeError(f"{what} {spec.name!r} contains NaN or Inf")
        rows.add(x.shape[0])
        out[spec.name] = x.astype(np.float64)
    if len(rows) > 1:
        raise QuantizeError(f"{what}: the inputs have different numbers of rows {sorted(rows)}")
    return out


def _check_states_used(graph: Graph, states: tuple[str, ...], qlayer: QLayer) -> None:
    """Refuse a returned state that a node reads or the graph returns, where the C cannot
    hand it on (an int16-weight LSTM's int32 cell); an unused one costs nothing."""
    read = {name for node in graph.nodes for name in node.inputs} | set(graph.outputs)
    for index, name in enumerate(states):
        problem = qlayer.state_problem(index)
        if problem is not None and name in read:
            raise QuantizeError(problem)


def quantize_graph(
    graph: Graph,
    calibration: dict[str, np.ndarray],
    options: QuantizeOptions | None = None,
    rounding_record: list | None = None,
) -> QGraph:
    """Float graph + calibration inputs -> QGraph, the weights rounded as ``options.rounding``
    says (``GraphRounding``, which ``rounding_record`` receives when given)."""
    options = options or QuantizeOptions()
    x = check_inputs(graph, calibration, "calibration data")
    with np.errstate(over="ignore", invalid="ignore"):
        _, traces, values = forward(graph, x)
    scales: dict[str, np.ndarray] = {}
    for spec in graph.inputs:
        seq = x[spec.name] if spec.sequence else x[spec.name][:, None, :]
        scales[spec.name] = input_scale(seq, options).astype(np.float64)
    x_q = {t.name: fp.quantize_input(x[t.name], _inv(scales[t.name])) for t in graph.inputs}
    rounder = GraphRounding.start(graph, x_q, options)
    qlayers = []
    count = len(graph.nodes)
    for index, node in enumerate(graph.nodes):
        layer = node.layer
        check_finite(layer, values[node.outputs[0]])
        ctx = QuantContext(
            scales[node.inputs[0]],
            values[node.inputs[0]],
            traces[node.name],
            options.bits_of(index, count),
            options,
            input_scales=tuple(scales[t] for t in node.inputs),
        )
        qlayer = rounder.quantize(node, ctx)
        scales[node.outputs[0]] = np.asarray(qlayer.output_feature_scale, np.float64)
        if node.returns_state:
            _check_states_used(graph, node.outputs[1:], qlayer)
            for name, scale in zip(node.outputs[1:], qlayer.state_scales(), strict=True):
                scales[name] = np.asarray(scale, np.float64)
        if node.mask_output:  # a mask: one flag per timestep, 0 or 1
            scales[node.mask_output] = np.ones(1)
        qlayers.append(qlayer)
    qlayers = rounder.finish(qlayers, scales, values)
    if rounding_record is not None:
        rounding_record.append(rounder)
    nodes = [Node(q, n.inputs, n.outputs, n.mask) for q, n in zip(qlayers, graph.nodes,
                                                                   strict=True)]  # fmt: skip
    qgraph = Graph(graph.name, graph.inputs, tuple(nodes), graph.outputs, graph.source,
                   dict(graph.meta))  # fmt: skip
    layers = qgraph.layers
    needed = {"tanh"} | {fp.TABLE_OF[f] for la in layers for f in la.tables_needed()}
    log2 = options.log2_table_entries(count)
    tables = {name: fp.build_table(name, log2) for name in sorted(needed)}
    return QGraph(qgraph, scales, tables, graph.params, rounder.record())


def _inv(scale: np.ndarray) -> np.ndarray:
    return (1.0 / scale.astype(np.float64)).astype(np.float32)  # as QGraph.inv_scale


def with_layers(qgraph: QGraph, layers: list) -> QGraph:
    """The same quantized graph with other quantized layers of the same scales (the nearest
    rounded ones beside those error feedback fitted)."""
    graph = qgraph.graph
    nodes = tuple(Node(q, n.inputs, n.outputs) for q, n in zip(layers, graph.nodes, strict=True))
    return replace(qgraph, graph=replace(graph, nodes=nodes))
