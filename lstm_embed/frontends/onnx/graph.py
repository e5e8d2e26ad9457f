"""Walk an ONNX graph into a chain of float layers.

Every value of the graph is a constant (numpy; folded as soon as its inputs are constants), or
a ``Sym``: the model input after the chain's layers so far, in some axis order. A Sym's axes are
labelled B (batch), T (timesteps), F (features), D and H (a recurrent node's directions and
units, before they are merged into F), 1 (a size-1 axis), S (stacked final states), or x0..x2
(model-input axes whose meaning the first layer that reads them decides). Only the Sym of the
chain's current end may feed a layer (``version``): anything else is a branch or a merge,
which the chain IR cannot hold, and is refused naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lstm_embed.frontends.onnx import recurrent
from lstm_embed.kinds import FloatLayer
from lstm_embed.kinds.bidirectional import BidirectionalLayer
from lstm_embed.kinds.common import RecurrentOptions
from lstm_embed.kinds.reshape import ReshapeLayer

BATCH_PLACEHOLDER = 1  # a symbolic batch dimension is folded with this size
# kinds that act on each timestep alone and hold no state: a last-timestep selection after
# them may move before them (out[:, -1] of Dense(h) == Dense(h[:, -1]))
PER_STEP_KINDS = ("dense", "activation", "batch_norm", "layer_norm")
ELEMENTWISE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
PASS_THROUGH = ("Identity", "Dropout")
SUPPORTED_OPS = (
    "LSTM, GRU, RNN, Gemm, MatMul, Add, Sub, Mul, Div, Conv (1-D), Relu, Sigmoid, Tanh,"
    " LeakyRelu, Clip, Softmax, BatchNormalization, LayerNormalization, Flatten, Reshape,"
    " Transpose, Squeeze, Unsqueeze, Slice, Gather, Concat, Identity, Dropout, Cast, MaxPool,"
    " AveragePool, GlobalMaxPool, GlobalAveragePool, and on constants Shape, ConstantOfShape,"
    " Expand, Equal, Where, Range"
)


class NodeProblem(ValueError):
    """What one node does that lstm-embed cannot convert (the walker adds node and operator)."""


@dataclass(frozen=True)
class Sym:
    axes: tuple[str, ...]
    sizes: tuple[int, ...]
    version: int
    final: bool = False  # Y_h: the last state of the chain's end (a recurrent layer)
    stacked: int = 0  # S axis: final states of this many layers; only the last is the chain's
    dirs: int = 1  # S axis: directions per layer (2: bidirectional, [.., fw, bw] last)
    direction: str = ""  # one direction of a bidirectional final state: forward or backward


class Unknown:
    """The output of a node that could not be converted (inspect goes on past it)."""


@dataclass
class Walk:
    source: str
    input_axes: tuple[str, ...]
    input_sizes: tuple[int, ...]
    input_symbolic: tuple[bool, ...]
    ids: bool = False  # the input is (batch, timesteps) integer token ids (nn.Embedding)
    layers: list[FloatLayer] = field(default_factory=list)
    version: int = 0
    meaning: dict[str, str] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)

    # -- axes ---------------------------------------------------------------------------------

    def label(self, axis: str) -> str:
        return self.meaning.get(axis, axis)

    def labels(self, sym: Sym) -> tuple[str, ...]:
        return tuple(self.label(a) for a in sym.axes)

    def require(self, sym: Sym, wanted: tuple[str, ...], what: str) -> None:
        """The axes of ``sym`` must mean ``wanted`` (model-input axes take that meaning)."""
        if len(sym.axes) != len(wanted):
            raise NodeProblem(f"{what}: input of rank {len(sym.axes)}, expected {len(wanted)}")
        for axis, want in zip(sym.axes, wanted, strict=True):
            have = self.label(axis)
            if have.startswith("x"):
                if want in self.meaning.values():
                    raise NodeProblem(f"{what}: the model input's axes do not fit {wanted}")
                self.meaning[axis] = want
            elif have != want:
                named = "".join(self.labels(sym))
                raise NodeProblem(
                    f"{what}: its input's axes are ({named}), expected ({''.join(wanted)})"
                    " (B batch, T timesteps, F features)"
                )

    def feature_axis(self, sym: Sym) -> int:
        labels = self.labels(sym)
        if "F" not in labels:
            raise NodeProblem(f"no feature axis in ({''.join(labels)}) (after the model input?)")
        return labels.index("F")

    # -- the chain ----------------------------------------------------------------------------

    def unique(self, name: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_") or "layer"
        candidate, k = base, 1
        while candidate in self.names:
            k += 1
            candidate = f"{base}_{k}"
        self.names.add(candidate)
        return candidate

    def current(self, sym: Sym, node: str) -> None:
        if sym.version != self.version:
            raise NodeProblem(
                "its input is not the end of the chain so far (the graph branches or merges"
                f" here, node '{node}'); supported: one path from input to output"
            )

    def append(self, layer: FloatLayer) -> int:
        self.layers.append(layer)
        self.version += 1
        return self.version

    def head_size(self) -> int | None:
        return self.layers[-1].output_size if self.layers else None

    def recurrent_index(self) -> int | None:
        found = [i for i, la in enumerate(self.layers) if la.recurrent]
        return found[-1] if found else None

    def commit_final(self, sym: Sym, node: str) -> Sym:
        """A Y_h used: the chain's recurrent end returns its last state (not sequences)."""
        if not sym.final:
            return sym
        self.current(sym, node)
        if sym.stacked:
            raise NodeProblem("stacked final states of several layers are used as one tensor")
        if sym.direction:
            raise NodeProblem(
                f"uses the {sym.direction} direction of a bidirectional layer's final state"
                " alone; supported: both, concatenated forward then backward"
            )
        index = len(self.layers) - 1
        layer = self.layers[index]
        labels = self.labels(sym)
        if "D" in labels and sym.sizes[labels.index("D")] > 1:
            raise NodeProblem(
                "uses one direction of a bidirectional layer's Y_h; supported: both merged"
                " (transposed to batch first and reshaped to (batch, 2 * hidden))"
            )
        self.layers[index] = recurrent.with_sequences(layer, False)
        self.version += 1
        return replace(sym, version=self.version, final=False)

    def select_last(self, node: str) -> None:
        """out[:, -1]: the chain's output at its last timestep only."""
        r = self.recurrent_index()
        if r is None:
            raise NodeProblem("selects the last timestep before any recurrent layer")
        layer = self.layers[r]
        after = self.layers[r + 1 :]
        plain = not isinstance(layer, BidirectionalLayer | RecurrentOptions)
        if plain and all(la.kind in PER_STEP_KINDS for la in after):
            self.layers[r] = recurrent.with_sequences(layer, False)
            self.version += 1
            return
        steps = self.timesteps_at_end()
        if steps is None:
            raise NodeProblem(
                "selects the last timestep after a bidirectional or reverse layer of a model"
                " with any number of timesteps; supported: a fixed number of timesteps"
            )
        size = self.head_size() or 0
        name = self.unique(f"{node}_last")
        self.append(ReshapeLayer(name, size, "last", 1, size, "LastTimestep", steps))

    def timesteps_at_end(self) -> int | None:
        from lstm_embed.ir.model import timesteps_after

        steps = self.time_size()
        return timesteps_after(tuple(self.layers), steps)[-1] if self.layers else steps

    def time_size(self) -> int | None:
        for axis, size, symbolic in zip(
            self.input_axes, self.input_sizes, self.input_symbolic, strict=True
        ):
            if self.label(axis) == "T":
                return None if symbolic else size
        return None


def attributes(node: Any) -> dict[str, Any]:
    import onnx

    out: dict[str, Any] = {}
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR:
            out[attribute.name] = onnx.numpy_helper.to_array(attribute.t)
        elif attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            out[attribute.name] = None  # subgraphs (If, Loop, Scan): refused by operator
        else:
            out[attribute.name] = onnx.helper.get_attribute_value(attribute)
    return out


def const_of(value: Any, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    raise NodeProblem(f"{what} must be a constant (an initializer or folded from constants)")


def broadcast_vector(value: np.ndarray, size: int, rank: int, axis: int) -> np.ndarray | None:
    """A constant that broadcasts along one feature axis only, as a (size,) vector."""
    shape = list(value.shape)
    if len(shape) > rank:
        return None
    shape = [1] * (rank - len(shape)) + shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return np.broadcast_to(value.reshape(-1), (size,)) if value.size in (1, size) else None
