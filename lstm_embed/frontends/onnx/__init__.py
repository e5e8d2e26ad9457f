"""ONNX frontend: an .onnx file -> the float IR the Keras frontend builds, read with the
``onnx`` package (protobuf) only: no onnxruntime, torch or TensorFlow.

    model = load_model("model.onnx")          # ir.Model; OnnxError names node and operator
    reading = read_onnx("model.onnx")         # every node's problem too (for inspect)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.frontends.onnx.fold import FOLDERS, FoldError, fold
from lstm_embed.frontends.onnx.graph import (
    BATCH_PLACEHOLDER,
    SUPPORTED_OPS,
    NodeProblem,
    Sym,
    Unknown,
    Walk,
    attributes,
)
from lstm_embed.frontends.onnx.loader import OnnxFileError, Tensors, load_proto
from lstm_embed.frontends.onnx.ops import HANDLERS, _Refused
from lstm_embed.ir.model import Model, sequence_out, timesteps_after
from lstm_embed.kinds import FloatLayer, IRError, fold_chain

OLDEST_OPSET = 14


class OnnxError(ValueError):
    """The model cannot be converted; one line naming the file, node and operator."""


@dataclass
class Reading:
    """What the walk found: the layers, each refused node (name, operator, reason), facts."""

    source: str
    name: str
    layers: list[FloatLayer] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    input_shape: tuple = ()
    timesteps: int | None = None
    input_size: int | None = None
    meta: dict[str, str] = field(default_factory=dict)
    walk: Walk | None = None

    def problem_lines(self) -> list[str]:
        return [f"node '{name}' ({op}): {why}" for name, op, why in self.problems]


def is_onnx(path: str | Path) -> bool:
    return str(path).lower().endswith(".onnx")


def _opset(proto: Any, source: str) -> int:
    import onnx

    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    others = sorted({o.domain for o in proto.opset_import if o.domain not in ("", "ai.onnx")})
    opset = max(versions) if versions else 0
    newest = onnx.defs.onnx_opset_version()
    if not OLDEST_OPSET <= opset <= newest:
        raise OnnxError(
            f"{source}: opset {opset}; supported: {OLDEST_OPSET} to {newest} (re-export with"
            f" opset_version={max(OLDEST_OPSET, min(opset, newest))})"
        )
    used = {n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")}
    if used:
        raise OnnxError(
            f"{source}: operators of domain {sorted(used)[0]!r} (of {others}); supported: the"
            " standard ONNX domain"
        )
    return opset


def _order(nodes: list, outputs: list[str], source: str) -> list:
    """The nodes that the graph outputs need, in an order where inputs come first; a cycle is
    refused (the spec requires a topological order, hostile files may not keep it)."""
    producer = {}
    for node in nodes:
        for name in node.output:
            if name:
                producer[name] = node
    needed, order, state = [], [], {}
    stack = [(producer[o], False) for o in outputs if o in producer]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            state[key] = 2
            order.append(node)
            continue
        if state.get(key) == 2:
            continue
        if state.get(key) == 1:
            raise OnnxError(f"{source}: the graph has a cycle through node '{node.name}'")
        state[key] = 1
        stack.append((node, True))
        for name in node.input:
            parent = producer.get(name)
            if parent is not None:
                if state.get(id(parent)) == 1:
                    raise OnnxError(f"{source}: the graph has a cycle through node '{parent.name}'")
                if state.get(id(parent)) != 2:
                    stack.append((parent, False))
    del needed
    return order


# ONNX element types of a token-id input, by their numpy names (onnxruntime is fed those)
ID_TYPES = {6: "int32", 7: "int64"}


def _dims(value_info: Any) -> tuple[list[int], list[bool]]:
    dims, symbolic = [], []
    for d in value_info.type.tensor_type.shape.dim:
        known = d.HasField("dim_value") and d.dim_value > 0
        dims.append(int(d.dim_value) if known else BATCH_PLACEHOLDER)
        symbolic.append(not known)
    return dims, symbolic


def read_onnx(path: str | Path) -> Reading:
    """Walk the file's graph as far as it goes; file-level problems raise OnnxError."""
    source = str(path)
    try:
        proto = load_proto(Path(path))
        return _walk(proto, Path(path), source)
    except OnnxFileError as error:
        raise OnnxError(str(error)) from None


def _walk(proto: Any, path: Path, source: str) -> Reading:
    _opset(proto, source)
    graph = proto.graph
    tensors = Tensors(path.parent, source)
    values: dict[str, Any] = {"": None}
    for init in graph.initializer:
        values[init.name] = tensors.array(init)
    inputs = [i for i in graph.input if i.name not in values]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxError(
            f"{source}: {len(inputs)} inputs and {len(graph.output)} outputs; supported: one"
            " input (batch, timesteps, features) and one output"
        )
    dims, symbolic = _dims(inputs[0])
    ids = inputs[0].type.tensor_type.elem_type in ID_TYPES
    if len(dims) != (2 if ids else 3):
        raise OnnxError(
            f"{source}: input '{inputs[0].name}' has rank {len(dims)}; supported: rank 3"
            " (batch, timesteps, features) in any order, or rank 2 (batch, timesteps) of"
            " integer token ids into a Gather of an embedding table (nn.Embedding)"
        )
    axes = tuple(f"x{i}" for i in range(len(dims)))
    walk = Walk(source, axes, tuple(dims), tuple(symbolic), ids=ids)
    values[inputs[0].name] = Sym(axes, tuple(dims), 0)
    name = path.stem.split(".")[0]
    reading = Reading(source, name if name.isidentifier() else "model", walk=walk)
    reading.meta = {
        "file_format": f"onnx (opset {_opset(proto, source)})",
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "onnx_input": inputs[0].name,
        "onnx_input_dtype": ID_TYPES.get(inputs[0].type.tensor_type.elem_type, "float32"),
    }
    nodes = _order(list(graph.node), [o.name for o in graph.output], source)
    if not any(n.op_type in ("LSTM", "GRU", "RNN") for n in nodes):
        raise OnnxError(
            f"{source}: the graph has no LSTM, GRU or RNN node; supported: recurrent models"
            " (torch's dynamo exporter unrolls nn.RNN into per-timestep MatMul/Add/Tanh:"
            " export it with torch.onnx.export(..., dynamo=False))"
        )
    for node in nodes:
        _node(walk, node, values, tensors, reading)
    out = values.get(graph.output[0].name)
    reading.layers = walk.layers
    if not reading.problems:
        _finish(walk, out, reading)
    return reading


def _node(walk: Walk, node: Any, values: dict, tensors: Tensors, reading: Reading) -> None:
    label = node.name or f"{node.op_type}:{node.output[0] if node.output else ''}"
    args = [values.get(name, Unknown()) for name in node.input]
    outputs: list = []
    try:
        attrs = attributes(node)
        if any(isinstance(a, Unknown) for a in args):
            if node.op_type not in HANDLERS and node.op_type not in FOLDERS:
                raise NodeProblem(
                    f"operator {node.op_type} is not supported (supported: {SUPPORTED_OPS})"
                )
            outputs = [Unknown() for _ in node.output]
        else:
            refused = [a for a in args if isinstance(a, _Refused)]
            if refused:
                raise NodeProblem(refused[0].reason)
            outputs = _evaluate(walk, node, args, attrs, tensors)
    except (NodeProblem, IRError) as error:
        reading.problems.append((label, node.op_type, str(error)))
        outputs = [Unknown() for _ in node.output]
    except OnnxFileError as error:
        raise OnnxError(str(error)) from None
    except Exception as error:  # a malformed node (missing attribute, bad shapes): one line
        detail = f"{type(error).__name__}: {error}"[:200]
        reading.problems.append((label, node.op_type, f"cannot be read ({detail})"))
        outputs = [Unknown() for _ in node.output]
    for name, value in zip(node.output, outputs, strict=False):
        if name:
            values[name] = value


def _evaluate(walk: Walk, node: Any, args: list, attrs: dict, tensors: Tensors) -> list:
    op = node.op_type
    if op == "Constant":
        return [_constant(attrs, tensors, node)]
    data = [a for a in args if isinstance(a, Sym)]
    if not data and op not in ("LSTM", "GRU", "RNN"):
        try:
            return [fold(op, args, attrs)]
        except FoldError as error:
            if op not in HANDLERS:
                raise NodeProblem(
                    f"operator {op} is not supported (supported: {SUPPORTED_OPS})"
                ) from None
            raise NodeProblem(str(error)) from None
    handler = HANDLERS.get(op)
    if handler is None:
        raise NodeProblem(f"operator {op} is not supported (supported: {SUPPORTED_OPS})")
    return handler(walk, node, args, attrs)


def _constant(attrs: dict, tensors: Tensors, node: Any) -> np.ndarray:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            value = np.asarray(attrs[key])
            tensors.count(f"constant '{node.name}'", int(value.size))
            return value
    raise NodeProblem("a Constant without a numeric value (supported: value, value_float(s),"
                      " value_int(s))")  # fmt: skip


def _finish(walk: Walk, out: Any, reading: Reading) -> None:
    """The graph output: the chain's end, as (batch, timesteps, features) or (batch, features)."""
    if isinstance(out, Sym):
        try:
            out = walk.commit_final(out, "output")
            walk.current(out, "output")
        except NodeProblem as error:
            reading.problems.append(("output", "graph", str(error)))
            return
    if not isinstance(out, Sym) or not walk.layers:
        reading.problems.append(("output", "graph", "the output is not computed from the input"))
        return
    labels = [walk.label(a) for a, s in zip(out.axes, out.sizes, strict=True)
              if not (s == 1 and walk.label(a) in ("1", "D"))]  # fmt: skip
    unresolved = [a for a in walk.input_axes if walk.label(a).startswith("x")]
    if unresolved or sorted(labels) not in (["B", "F", "T"], ["B", "F"]):
        reading.problems.append(
            (
                "output",
                "graph",
                f"output axes ({''.join(labels)}); supported: batch, (timesteps,)"
                " features, in any order",
            )
        )
        return
    order = [walk.label(a) for a in walk.input_axes]
    reading.meta["onnx_input_axes"] = "".join(order)
    reading.meta["onnx_output_axes"] = "".join(
        walk.label(a) if walk.label(a) in ("B", "T", "F") else "1" for a in out.axes
    )
    reading.input_size = 1 if walk.ids else walk.input_sizes[order.index("F")]
    reading.timesteps = walk.time_size()
    reading.input_shape = (reading.timesteps, reading.input_size)


def build_model(reading: Reading) -> Model:
    if reading.problems:
        raise OnnxError(f"{reading.source}: " + "; ".join(reading.problem_lines()))
    layers, folding = fold_chain(list(reading.layers))
    if folding:
        raise OnnxError(f"{reading.source}: " + "; ".join(folding))
    whole = next((la for la in layers if not getattr(la, "streaming", True)), None)
    if reading.timesteps is None and whole is not None:
        raise OnnxError(
            f"{reading.source}: layer '{whole.name}' needs the whole window"
            f" ({whole.whole_window_reason}), which the C holds in buffers sized by the"
            " model's timesteps; the file's time axis is dynamic: export with a fixed number"
            " of timesteps (no dynamic_axes / dynamic_shapes entry for the time axis)"
        )
    try:
        return Model(
            reading.name, int(reading.input_size or 0), reading.timesteps, tuple(layers),
            reading.source, dict(reading.meta),
        )  # fmt: skip
    except IRError as error:
        text = str(error)
        prefix = "" if text.startswith(reading.source) else f"{reading.source}: "
        raise OnnxError(prefix + text) from error


def load_model(path: str | Path) -> Model:
    """An .onnx file -> IR; OnnxError (one line) when it cannot be converted."""
    return build_model(read_onnx(path))


def inspect_rows(reading: Reading, weight_bits: tuple[int, ...] = (8,)) -> list[dict[str, Any]]:
    """One row per layer the walk made, then one per refused node."""
    rows = []
    steps: Any = reading.timesteps
    sequence = True
    for index, layer in enumerate(reading.layers):
        steps = timesteps_after((layer,), steps)[-1] if steps is not None else None
        sequence = sequence_out(layer, sequence)
        summary = layer.summary()
        shape = ["N", steps, layer.output_size] if sequence else ["N", layer.output_size]
        rows.append({
            "name": layer.name, "activation": None, "units": None,
            "input_size": layer.input_size, "params": layer.params,
            "flash_bytes": layer.flash_bytes(weight_bits[min(index, len(weight_bits) - 1)]),
            "unsupported": "", "output_shape": shape, **summary,
        })  # fmt: skip
    for name, op, why in reading.problems:
        rows.append({
            "name": name, "type": op, "activation": None, "units": None, "input_size": None,
            "params": 0, "flash_bytes": None, "unsupported": why, "output_shape": "?",
        })  # fmt: skip
    return rows


__all__ = ["OnnxError", "Reading", "build_model", "inspect_rows", "is_onnx", "load_model",
           "read_onnx"]  # fmt: skip
