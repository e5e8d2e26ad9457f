"""Float IR -> an ONNX graph (onnx.helper), the inverse of the reader for the kinds ONNX has
as operators: the fuzzer writes random models as ONNX files, reads them back and holds their C
to the integer reference; the tests hold onnxruntime on the written file to the float model.

Written: forward (and bidirectional, concat) LSTM, GRU (both reset forms) and RNN (tanh, relu)
with sigmoid gates, and Dense (linear, relu, sigmoid, tanh, softmax). The data runs time-major
(layout 0) after one Transpose of the (batch, timesteps, features) input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.ir.model import Model
from lstm_embed.kinds.bidirectional import BidirectionalLayer
from lstm_embed.kinds.common import RecurrentOptions
from lstm_embed.kinds.dense import DenseLayer
from lstm_embed.kinds.gru import GRULayer
from lstm_embed.kinds.lstm import LSTMLayer
from lstm_embed.kinds.simple_rnn import SimpleRNNLayer

OPSET = 17
KIND_TO_ONNX_LSTM = (0, 3, 1, 2)  # ONNX i, o, f, c blocks, as the kind's block indices
ACTIVATION_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}


class NotWritable(ValueError):
    """A model with a layer or option ONNX has no operator for (here); the fuzzer skips it."""


class _Graph:
    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def const(self, value: np.ndarray, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> list[str]:
        from onnx import helper

        self.count += 1
        names = [f"v{self.count}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=f"n{self.count}_{op}", **attrs))
        return names


def _inner(layer: Any) -> Any:
    if isinstance(layer, RecurrentOptions):
        if layer.stateful:
            raise NotWritable("stateful layers")
        return layer.layer
    return layer


def _weights(layer: Any) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(op, W [G*H, I], R [G*H, H], B [2*G*H] or None, attributes) of one direction."""
    if getattr(layer, "recurrent_activation", "sigmoid") != "sigmoid":
        raise NotWritable("recurrent_activation other than sigmoid")
    if isinstance(layer, LSTMLayer):
        if layer.initial_h is not None or layer.initial_c is not None:
            raise NotWritable("initial state")

        def order(a: np.ndarray) -> np.ndarray:
            parts = np.split(a, 4, axis=0)
            return np.concatenate([parts[k] for k in KIND_TO_ONNX_LSTM], axis=0)

        bias = (
            None
            if layer.bias is None
            else np.concatenate([order(layer.bias), np.zeros(4 * layer.units)])
        )
        return "LSTM", order(layer.kernel.T), order(layer.recurrent_kernel.T), bias, {}
    if isinstance(layer, GRULayer):
        attrs = {"linear_before_reset": int(layer.reset_after)}
        bias = None
        if layer.bias is not None:
            bias = layer.bias.reshape(-1) if layer.reset_after else np.concatenate(
                [layer.bias, np.zeros(3 * layer.units)]
            )  # fmt: skip
        return "GRU", layer.kernel.T, layer.recurrent_kernel.T, bias, attrs
    if isinstance(layer, SimpleRNNLayer):
        if layer.activation not in ("tanh", "relu"):
            raise NotWritable(f"SimpleRNN activation {layer.activation}")
        bias = None if layer.bias is None else np.concatenate([layer.bias, np.zeros(layer.units)])
        act = {"activations": ["Tanh" if layer.activation == "tanh" else "Relu"]}
        return "RNN", layer.kernel.T, layer.recurrent_kernel.T, bias, act
    raise NotWritable(f"layer kind {layer.kind}")


def _recurrent(g: _Graph, layer: Any, x: str) -> str:
    """A recurrent layer on time-major x (T, B, m) -> (T, B, k), or (B, k) for its last state."""
    if isinstance(layer, BidirectionalLayer):
        if layer.merge_mode != "concat":
            raise NotWritable(f"Bidirectional merge_mode {layer.merge_mode}")
        parts = [_weights(_inner(layer.forward_layer)), _weights(_inner(layer.backward_layer))]
        direction, sequences = "bidirectional", layer.return_sequences
    else:
        wrapped = layer
        layer = _inner(layer)
        if getattr(wrapped, "go_backwards", False):
            raise NotWritable("go_backwards")
        parts = [_weights(layer)]
        direction, sequences = "forward", layer.return_sequences
    op, _, r, _, attrs = parts[0]
    w = g.const(np.stack([p[1] for p in parts]))
    rr = g.const(np.stack([p[2] for p in parts]))
    inputs = [x, w, rr]
    if any(p[3] is not None for p in parts):
        inputs.append(g.const(np.stack([p[3] if p[3] is not None else np.zeros(2 * r.shape[0])
                                        for p in parts])))  # fmt: skip
    y, y_h = g.node(op, inputs, 2, hidden_size=r.shape[1], direction=direction, **attrs)
    if sequences:
        if direction == "forward":
            return g.node("Squeeze", [y, g.const([1], np.int64)])[0]
        yt = g.node("Transpose", [y], perm=[0, 2, 1, 3])[0]
        return g.node("Reshape", [yt, g.const([0, 0, -1], np.int64)])[0]
    if direction == "forward":
        return g.node("Squeeze", [y_h, g.const([0], np.int64)])[0]
    ht = g.node("Transpose", [y_h], perm=[1, 0, 2])[0]
    return g.node("Reshape", [ht, g.const([0, -1], np.int64)])[0]


def write(model: Model, path: str | Path) -> Path:
    """``model`` as an .onnx file; NotWritable when a layer has no ONNX form here."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    x = g.node("Transpose", ["x"], perm=[1, 0, 2])[0]
    for layer in model.layers:
        if layer.recurrent:
            x = _recurrent(g, layer, x)
        elif isinstance(layer, DenseLayer):
            x = g.node("MatMul", [x, g.const(layer.kernel)])[0]
            if layer.bias is not None:
                x = g.node("Add", [x, g.const(layer.bias)])[0]
            if layer.activation in ACTIVATION_OPS:
                x = g.node(ACTIVATION_OPS[layer.activation], [x])[0]
        else:
            raise NotWritable(f"layer kind {layer.kind}")
    g.nodes.append(helper.make_node("Identity", [x], ["y"], name="output"))
    steps = model.timesteps or "timesteps"
    graph = helper.make_graph(
        g.nodes, model.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", steps, model.input_size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        g.inits,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    path = Path(path)
    onnx.save_model(proto, path)
    return path
