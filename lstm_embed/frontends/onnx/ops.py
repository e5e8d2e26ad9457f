"""One handler per ONNX operator on the chain's tensor (``graph.Sym``): each checks its
attributes, appends float layers to the walk and returns the node's outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from lstm_embed.frontends.onnx import recurrent
from lstm_embed.frontends.onnx.graph import (
    ELEMENTWISE,
    PASS_THROUGH,
    NodeProblem,
    Sym,
    Walk,
    broadcast_vector,
    const_of,
)
from lstm_embed.kinds.activation import ActivationLayer
from lstm_embed.kinds.batch_norm import BatchNormLayer
from lstm_embed.kinds.conv1d import Conv1DLayer
from lstm_embed.kinds.dense import DenseLayer
from lstm_embed.kinds.embedding import EmbeddingLayer
from lstm_embed.kinds.layer_norm import LayerNormLayer
from lstm_embed.kinds.pooling import PoolingLayer
from lstm_embed.kinds.reshape import ReshapeLayer
from lstm_embed.kinds.window import output_length

Handler = Callable[[Walk, Any, list, dict[str, Any]], list]


def _name(walk: Walk, node: Any) -> str:
    return walk.unique(node.name or node.op_type.lower())


def _sym(value: Any, what: str = "its input") -> Sym:
    if not isinstance(value, Sym):
        raise NodeProblem(f"{what} must be the model's data")
    return value


def _opt(inputs: list, index: int) -> Any:
    return inputs[index] if len(inputs) > index else None


def _layer_input(walk: Walk, node: Any, value: Any) -> Sym:
    """The chain's tensor feeding a new layer: current, its final state committed."""
    sym = walk.commit_final(_sym(value), node.name)
    walk.current(sym, node.name)
    return sym


def _with_feature_size(sym: Sym, axis: int, size: int, version: int) -> Sym:
    sizes = list(sym.sizes)
    sizes[axis] = size
    return replace(sym, sizes=tuple(sizes), version=version)


# ---------------------------------------------------------------------------------------------
# recurrent nodes


def _initial_state(value: Any, what: str, layout: int) -> np.ndarray | None:
    """A constant initial state [dirs, batch, H] (layout 1: [batch, dirs, H]) as one (H,)
    vector per direction, the same for every sequence; None when absent or zero."""
    if value is None:
        return None
    state = np.asarray(const_of(value, what), np.float64)
    if not state.size or not np.any(state):
        return None
    if state.ndim != 3:
        raise NodeProblem(f"{what} of rank {state.ndim}; expected 3")
    per_sequence = state if layout == 0 else state.transpose(1, 0, 2)  # [dirs, batch, H]
    if np.ptp(per_sequence, axis=1).max() > 0:
        raise NodeProblem(f"{what} differs between sequences; supported: one state for all")
    return per_sequence[:, 0]


def rnn(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    op = node.op_type
    w = const_of(_opt(inputs, 1), "W")
    r = const_of(_opt(inputs, 2), "R")
    b = _opt(inputs, 3)
    b = None if b is None else const_of(b, "B")
    dirs = w.shape[0] if w.ndim == 3 else 0
    reasons = recurrent.check_attributes(op, attrs, dirs)
    gates = recurrent.GATE_COUNT[op]
    hidden = int(attrs.get("hidden_size", r.shape[-1] if r.ndim == 3 else 0))
    if w.ndim != 3 or r.shape != (dirs, gates * hidden, hidden) or w.shape[1] != gates * hidden:
        reasons.append(f"W {w.shape} / R {r.shape} do not fit hidden_size={hidden}")
    if b is not None and b.shape != (dirs, 2 * gates * hidden):
        reasons.append(f"B {b.shape} != ({dirs}, {2 * gates * hidden})")
    if _opt(inputs, 4) is not None:
        reasons.append("sequence_lens is given (supported: absent; every sequence full length)")
    if op == "LSTM" and _opt(inputs, 7) is not None and np.any(const_of(inputs[7], "P")):
        reasons.append("peepholes P (supported: absent or zero)")
    if reasons:
        raise NodeProblem("; ".join(reasons))
    layout = int(attrs.get("layout", 0))
    h0 = _initial_state(_opt(inputs, 5), "initial_h", layout)
    c0 = _initial_state(_opt(inputs, 6), "initial_c", layout) if op == "LSTM" else None
    direction = recurrent.text(attrs.get("direction", "forward"))
    if (h0 is not None or c0 is not None) and (op != "LSTM" or direction != "forward"):
        raise NodeProblem(
            "a non-zero initial state; supported: absent or zeros, or constant for a forward LSTM"
        )
    x = _layer_input(walk, node, inputs[0])
    walk.require(x, ("B", "T", "F") if layout else ("T", "B", "F"), f"{op} layout={layout}")
    features = x.sizes[walk.labels(x).index("F")]
    if features != w.shape[2] or walk.head_size() not in (None, features):
        raise NodeProblem(f"W takes {w.shape[2]} inputs, the node gets {features}")
    name = _name(walk, node)
    layer = recurrent.build(op, name, attrs, w, r, b)
    if h0 is not None or c0 is not None:
        layer = replace(
            layer, initial_h=None if h0 is None else h0[0], initial_c=None if c0 is None else c0[0]
        )
    version = walk.append(layer)
    t, batch = x.sizes[walk.labels(x).index("T")], x.sizes[walk.labels(x).index("B")]
    unit_axis = "H" if dirs == 2 else "F"
    if layout:
        y = Sym(("B", "T", "D", unit_axis), (batch, t, dirs, hidden), version)
        y_h = Sym(("B", "D", unit_axis), (batch, dirs, hidden), version, final=True)
    else:
        y = Sym(("T", "D", "B", unit_axis), (t, dirs, batch, hidden), version)
        y_h = Sym(("D", "B", unit_axis), (dirs, batch, hidden), version, final=True)
    if direction == "reverse":  # its Y in input order has no kind; Y_h is go_backwards' last
        y = _Refused(
            "direction='reverse' with its Y output used: ONNX gives it in input order;"
            " supported: reverse with only Y_h used, or bidirectional"
        )
    y_c = _Refused("Y_c (the final cell state) is used; supported: Y and Y_h")
    return [y, y_h, y_c]


class _Refused:
    """An output that may not be used; using it raises its reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# dense, convolution, normalization


def gemm(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    if int(attrs.get("transA", 0)):
        raise NodeProblem("transA=1 (supported: 0, the data as A)")
    x = _layer_input(walk, node, inputs[0])
    weight = const_of(inputs[1], "B")
    if weight.ndim != 2:
        raise NodeProblem(f"B of rank {weight.ndim}; supported: a matrix")
    kernel = weight.T if int(attrs.get("transB", 0)) else weight
    kernel = np.asarray(kernel, np.float64) * float(attrs.get("alpha", 1.0))
    if len(x.axes) != 2:
        raise NodeProblem(f"A of rank {len(x.axes)}; supported: (batch, features)")
    walk.require(x, ("B", "F"), "Gemm")
    return [_dense(walk, node, x, kernel, _opt(inputs, 2), float(attrs.get("beta", 1.0)))]


def matmul(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _layer_input(walk, node, inputs[0])
    kernel = np.asarray(const_of(inputs[1], "the second input"), np.float64)
    if kernel.ndim != 2:
        raise NodeProblem("the second input must be a constant matrix (features, units)")
    axis = walk.feature_axis(x)
    if axis != len(x.axes) - 1:
        raise NodeProblem("the data's features are not its last axis")
    return [_dense(walk, node, x, kernel, None, 1.0)]


def _dense(walk: Walk, node: Any, x: Sym, kernel: np.ndarray, bias: Any, beta: float) -> Sym:
    axis = walk.feature_axis(x)
    units = kernel.shape[1]
    if kernel.shape[0] != x.sizes[axis]:
        raise NodeProblem(f"weights take {kernel.shape[0]} features, the data has {x.sizes[axis]}")
    vector = None
    if bias is not None:
        vector = broadcast_vector(const_of(bias, "C"), units, 2, 1)
        if vector is None:
            raise NodeProblem(f"C of shape {np.shape(bias)}; supported: one bias per unit")
        vector = np.asarray(vector, np.float64) * beta
    layer = DenseLayer(_name(walk, node), x.sizes[axis], units, kernel, vector)
    return _with_feature_size(x, axis, units, walk.append(layer))


def affine(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    """Add, Sub, Mul, Div of the data and a per-feature constant: folded into the Dense before
    it when there is one, else an affine layer (BatchNormalization with unit variance)."""
    op = node.op_type
    data = [i for i, v in enumerate(inputs) if isinstance(v, Sym)]
    if len(data) != 1:
        raise NodeProblem(
            f"{op} of two computed tensors (a merge: residual connection or gating);"
            " supported: the data and a constant"
        )
    x = _layer_input(walk, node, inputs[data[0]])
    const = np.asarray(const_of(inputs[1 - data[0]], "the other input"), np.float64)
    axis = walk.feature_axis(x)
    size = x.sizes[axis]
    vector = broadcast_vector(const, size, len(x.axes), axis)
    if vector is None:
        raise NodeProblem(f"a constant of shape {const.shape}; supported: one value per feature")
    if (op == "Div" and data[0] == 1) or (op == "Div" and np.any(vector == 0)):
        raise NodeProblem("division by the data, or by zero")
    scale, shift = np.ones(size), np.zeros(size)
    if op == "Add":
        shift = vector
    elif op == "Sub":
        shift, scale = (-vector, scale) if data[0] == 0 else (vector, -scale)
    elif op == "Mul":
        scale = vector
    else:
        scale = 1.0 / vector
    last = walk.layers[-1] if walk.layers else None
    if isinstance(last, DenseLayer) and last.activation == "linear":
        bias = np.zeros(last.units) if last.bias is None else last.bias
        walk.layers[-1] = replace(last, kernel=last.kernel * scale, bias=bias * scale + shift)
        walk.version += 1
        return [replace(x, version=walk.version)]
    layer = BatchNormLayer(
        _name(walk, node), size, scale, shift, np.zeros(size), np.ones(size), 0.0
    )
    return [replace(x, version=walk.append(layer))]


def conv(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    weight = np.asarray(const_of(inputs[1], "W"), np.float64)
    if weight.ndim != 3:
        raise NodeProblem(f"a {weight.ndim - 2}-D convolution; supported: 1-D (N, C, T)")
    reasons = []
    if int(attrs.get("group", 1)) != 1:
        reasons.append(f"group={attrs['group']} (supported: 1)")
    auto_pad = recurrent.text(attrs.get("auto_pad", "NOTSET"))
    if auto_pad not in ("NOTSET", "VALID"):
        reasons.append(f"auto_pad={auto_pad} (supported: NOTSET with pads, VALID)")
    (stride,) = attrs.get("strides", [1])
    (dilation,) = attrs.get("dilations", [1])
    left, right = attrs.get("pads", [0, 0])
    k = weight.shape[2]
    span = (k - 1) * dilation
    if (left, right) == (0, 0):
        padding = "valid"
    elif (left, right) == (span, 0):
        padding = "causal"
    elif left + right == span and left == span // 2 and stride == 1:
        padding = "same"
    else:
        padding = ""
        reasons.append(f"pads={[left, right]} (supported: none, causal, or 'same' at stride 1)")
    if reasons:
        raise NodeProblem("; ".join(reasons))
    x = _layer_input(walk, node, inputs[0])
    walk.require(x, ("B", "F", "T"), "Conv")
    bias = _opt(inputs, 2)
    bias = None if bias is None else np.asarray(const_of(bias, "B"), np.float64)
    layer = Conv1DLayer(
        name=_name(walk, node), input_size=weight.shape[1], filters=weight.shape[0],
        kernel_size=k, dilation=int(dilation), kernel=weight.transpose(2, 1, 0), bias=bias,
        padding=padding, strides=int(stride),
    )  # fmt: skip
    version = walk.append(layer)
    steps = (
        x.sizes[2]
        if padding != "valid" and stride == 1
        else output_length(x.sizes[2], span + 1, int(stride), padding)
    )
    return [Sym(x.axes, (x.sizes[0], weight.shape[0], steps), version)]


def batch_norm(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    if int(attrs.get("training_mode", 0)):
        raise NodeProblem("training_mode=1 (supported: 0, inference)")
    x = _layer_input(walk, node, inputs[0])
    labels = walk.labels(x)
    if len(labels) < 2 or (labels[1] not in ("F",) and not labels[1].startswith("x")):
        raise NodeProblem("its channel axis (1) is not the features")
    if labels[1].startswith("x"):
        walk.require(x, ("B", "F", "T")[: len(labels)], "BatchNormalization")
    gamma, beta, mean, var = (np.asarray(const_of(v, "a parameter"), np.float64)
                              for v in inputs[1:5])  # fmt: skip
    eps = float(attrs.get("epsilon", 1e-5))
    layer = BatchNormLayer(_name(walk, node), x.sizes[1], gamma, beta, mean, var, eps)
    return [replace(x, version=walk.append(layer))]


def layer_norm(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _layer_input(walk, node, inputs[0])
    axis = int(attrs.get("axis", -1)) % len(x.axes)
    if axis != len(x.axes) - 1 or walk.labels(x)[axis] != "F":
        raise NodeProblem(f"axis={attrs.get('axis', -1)} (supported: the last, the features)")
    size = x.sizes[axis]
    gamma = np.asarray(const_of(inputs[1], "Scale"), np.float64).reshape(-1)
    beta = _opt(inputs, 2)
    beta = np.zeros(size) if beta is None else np.asarray(const_of(beta, "B"), np.float64)
    eps = float(attrs.get("epsilon", 1e-5))
    layer = LayerNormLayer(_name(walk, node), size, gamma, beta.reshape(-1), eps)
    return [replace(x, version=walk.append(layer))]


# ---------------------------------------------------------------------------------------------
# activations, pooling


def _activation(walk: Walk, node: Any, x: Sym, function: str, **options: Any) -> list:
    x = _layer_input(walk, node, x)
    size = x.sizes[walk.feature_axis(x)] if function == "softmax" else walk.head_size()
    if size is None:
        raise NodeProblem("an activation before any layer (on the model input)")
    layer = ActivationLayer(_name(walk, node), size, function, type_name=node.op_type, **options)
    return [replace(x, version=walk.append(layer))]


def elementwise(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    return _activation(walk, node, inputs[0], ELEMENTWISE[node.op_type])


def leaky_relu(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    slope = float(attrs.get("alpha", 0.01))
    return _activation(walk, node, inputs[0], "relu", negative_slope=slope)


def clip(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    low = _opt(inputs, 1)
    high = _opt(inputs, 2)
    low = attrs.get("min") if low is None else float(const_of(low, "min"))
    high = attrs.get("max") if high is None else float(const_of(high, "max"))
    if low != 0.0:
        raise NodeProblem(f"min={low} (supported: 0, a ReLU with an optional maximum)")
    return _activation(walk, node, inputs[0], "relu", max_value=high)


def softmax(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _layer_input(walk, node, inputs[0])
    axis = int(attrs.get("axis", -1)) % len(x.axes)
    if walk.labels(x)[axis] != "F":
        raise NodeProblem(f"axis={attrs.get('axis', -1)} (supported: the features)")
    return _activation(walk, node, x, "softmax")


def pool(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    op = node.op_type
    mode = "max" if "Max" in op else "average"
    x = _layer_input(walk, node, inputs[0])
    walk.require(x, ("B", "F", "T"), op)
    name = _name(walk, node)
    if op.startswith("Global"):
        layer = PoolingLayer(name, x.sizes[1], mode, op, whole=True)
        version = walk.append(layer)
        return [Sym((x.axes[0], x.axes[1], "1"), (x.sizes[0], x.sizes[1], 1), version)]
    reasons = []
    (k,) = attrs.get("kernel_shape", [0])
    (stride,) = attrs.get("strides", [1])
    if any(attrs.get("pads", [0, 0])) or recurrent.text(attrs.get("auto_pad", "NOTSET")) not in (
        "NOTSET", "VALID"
    ):  # fmt: skip
        reasons.append("padding (supported: none)")
    if int(attrs.get("ceil_mode", 0)) or any(d != 1 for d in attrs.get("dilations", [1])):
        reasons.append("ceil_mode or dilations (supported: 0 and 1)")
    if reasons:
        raise NodeProblem("; ".join(reasons))
    layer = PoolingLayer(name, x.sizes[1], mode, op, int(k), int(stride), "valid")
    version = walk.append(layer)
    steps = output_length(x.sizes[2], int(k), int(stride), "valid")
    return [Sym(x.axes, (x.sizes[0], x.sizes[1], steps), version)]


# ---------------------------------------------------------------------------------------------
# shape operators on the data


def transpose(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _sym(inputs[0])
    perm = attrs.get("perm") or list(range(len(x.axes)))[::-1]
    if sorted(perm) != list(range(len(x.axes))):
        raise NodeProblem(f"perm={perm} for rank {len(x.axes)}")
    axes = tuple(x.axes[p] for p in perm)
    return [replace(x, axes=axes, sizes=tuple(x.sizes[p] for p in perm))]


def _axes_input(inputs: list, attrs: dict[str, Any]) -> list[int] | None:
    value = _opt(inputs, 1)
    if value is not None:
        return [int(a) for a in np.asarray(const_of(value, "axes")).reshape(-1)]
    return list(attrs["axes"]) if "axes" in attrs else None


def squeeze(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _sym(inputs[0])
    axes = _axes_input(inputs, attrs)
    rank = len(x.axes)
    drop = (
        [i for i, s in enumerate(x.sizes) if s == 1] if axes is None else [a % rank for a in axes]
    )
    if any(x.sizes[a] != 1 for a in drop):
        raise NodeProblem("squeezes an axis whose size is not 1")
    keep = [i for i in range(rank) if i not in drop]
    for a in drop:
        if walk.label(x.axes[a]) in ("B", "T") or x.axes[a].startswith("x"):
            raise NodeProblem(
                f"squeezes the {walk.label(x.axes[a])} axis; supported: size-1 axes other than"
                " the batch and the timesteps"
            )
    return [replace(x, axes=tuple(x.axes[i] for i in keep), sizes=tuple(x.sizes[i] for i in keep))]


def unsqueeze(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _sym(inputs[0])
    axes, sizes = list(x.axes), list(x.sizes)
    rank = len(axes) + len(_axes_input(inputs, attrs) or [])
    for a in sorted(a % rank for a in _axes_input(inputs, attrs) or []):
        axes.insert(a, "1")
        sizes.insert(a, 1)
    return [replace(x, axes=tuple(axes), sizes=tuple(sizes))]


def gather(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    if isinstance(inputs[1], Sym):  # rows of a constant table picked by the input's ids
        return [_embedding(walk, node, inputs[0], inputs[1], int(attrs.get("axis", 0)))]
    x = _sym(inputs[0])
    index = np.asarray(const_of(inputs[1], "indices"))
    axis = int(attrs.get("axis", 0)) % len(x.axes)
    if index.ndim:
        raise NodeProblem("indices are not one number; supported: one scalar index")
    return [_pick(walk, node, x, axis, int(index))]


def _embedding(walk: Walk, node: Any, table: Any, ids: Sym, axis: int) -> Sym:
    """Gather(table, ids): nn.Embedding as both torch exporters write it, on the model's
    (batch, timesteps) token-id input -> (batch, timesteps, embedding_dim)."""
    if not walk.ids or ids.version != 0 or walk.layers:
        raise NodeProblem("gathers by computed indices; supported: a table's rows picked by"
                          " the model's integer input (nn.Embedding, the first layer)")  # fmt: skip
    table = np.asarray(const_of(table, "the table"))
    if table.ndim != 2 or axis != 0 or table.dtype.kind != "f":
        raise NodeProblem(f"a table of shape {table.shape} gathered on axis {axis}; supported:"
                          " a float (num_embeddings, embedding_dim) table, axis 0")  # fmt: skip
    walk.require(ids, ("B", "T"), "Gather")
    layer = EmbeddingLayer(_name(walk, node), 1, np.asarray(table, np.float64))
    version = walk.append(layer)
    return Sym((*ids.axes, "F"), (*ids.sizes, table.shape[1]), version)


def _pick(walk: Walk, node: Any, x: Sym, axis: int, index: int) -> Sym:
    """x with one element of ``axis`` taken (and the axis removed)."""
    label, size = walk.label(x.axes[axis]), x.sizes[axis]
    two = (label == "D" and size == 2 and x.final) or (label == "S" and x.dirs == 2)
    if two and index % size in (size - 2, size - 1):  # h_n[-2], h_n[-1]: a direction
        direction = "backward" if index % size == size - 1 else "forward"
        rest = [i for i in range(len(x.axes)) if i != axis]
        return replace(
            x, axes=tuple(x.axes[i] for i in rest), sizes=tuple(x.sizes[i] for i in rest),
            stacked=0, dirs=1, direction=direction,
        )  # fmt: skip
    if index not in (-1, size - 1) and not (size == 1 and index == 0):
        what = {"T": "timestep", "S": "layer's final state"}.get(label, "element")
        raise NodeProblem(f"takes {what} {index} of {size}; supported: the last")
    rest_axes = x.axes[:axis] + x.axes[axis + 1 :]
    rest_sizes = x.sizes[:axis] + x.sizes[axis + 1 :]
    if label == "S":
        return replace(x, axes=rest_axes, sizes=rest_sizes, stacked=0)
    if size == 1 and label not in ("B",) and not x.axes[axis].startswith("x"):
        return replace(x, axes=rest_axes, sizes=rest_sizes)
    if label == "D":
        raise NodeProblem("takes one direction of a bidirectional layer's output")
    if label != "T":
        raise NodeProblem(f"selects along the {label} axis; supported: the last timestep")
    x = walk.commit_final(x, node.name)
    walk.current(x, node.name)
    walk.select_last(node.name)
    return replace(x, axes=rest_axes, sizes=rest_sizes, version=walk.version)


def slice_(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _sym(inputs[0])
    starts = [int(v) for v in np.asarray(const_of(inputs[1], "starts")).reshape(-1)]
    ends = [int(v) for v in np.asarray(const_of(inputs[2], "ends")).reshape(-1)]
    axes_in = _opt(inputs, 3)
    axes = list(range(len(starts))) if axes_in is None else [
        int(a) for a in np.asarray(const_of(axes_in, "axes")).reshape(-1)
    ]  # fmt: skip
    steps_in = _opt(inputs, 4)
    steps = [1] * len(starts) if steps_in is None else [
        int(s) for s in np.asarray(const_of(steps_in, "steps")).reshape(-1)
    ]  # fmt: skip
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= len(x.axes)
        size = x.sizes[axis]
        picked = range(size)[slice(start, end, step)]
        if list(picked) == list(range(size)):
            continue  # the whole axis
        if len(picked) == 1 and picked[0] == size - 1:
            x = _pick(walk, node, x, axis, -1)
            axes = (*x.axes[:axis], "1", *x.axes[axis:])
            x = replace(x, axes=axes, sizes=(*x.sizes[:axis], 1, *x.sizes[axis:]))
            continue
        raise NodeProblem(
            f"takes [{start}:{end}:{step}] of the {walk.label(x.axes[axis])} axis (size {size});"
            " supported: the whole axis or its last element"
        )
    return [x]


def reshape(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _sym(inputs[0])
    target = [int(v) for v in np.asarray(const_of(inputs[1], "shape")).reshape(-1)]
    if not int(attrs.get("allowzero", 0)):
        target = [x.sizes[i] if d == 0 and i < len(x.sizes) else d for i, d in enumerate(target)]
    total = int(np.prod(x.sizes))
    if target.count(-1) == 1:
        known = int(np.prod([d for d in target if d != -1]))
        target = [total // known if d == -1 and known else d for d in target]
    if int(np.prod(target)) != total:
        raise NodeProblem(f"shape {target} does not hold {list(x.sizes)}")
    return [_regroup(walk, node, x, target)]


def flatten(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _sym(inputs[0])
    axis = int(attrs.get("axis", 1)) % (len(x.axes) + 1)
    target = [int(np.prod(x.sizes[:axis])), int(np.prod(x.sizes[axis:]))]
    return [_regroup(walk, node, x, target)]


def _regroup(walk: Walk, node: Any, x: Sym, target: list[int]) -> Sym:
    """Reshape as a regrouping of adjacent axes: each target dimension takes consecutive
    source axes whose sizes multiply to it."""
    axes: list[str] = []
    i, n = 0, len(x.axes)
    before = walk.version
    for dim in target:
        if dim == 1:
            if i < n and x.sizes[i] == 1:
                axes.append(x.axes[i])
                i += 1
            else:
                axes.append("1")
            continue
        group, product = [], 1
        while i < n and product < dim:
            group.append(i)
            product *= x.sizes[i]
            i += 1
        if product != dim:
            raise NodeProblem(f"reshapes {list(x.sizes)} to {target}: not a regrouping of axes")
        axes.append(_merged(walk, node, x, group))
    if any(x.sizes[j] != 1 for j in range(i, n)):
        raise NodeProblem(f"reshapes {list(x.sizes)} to {target}: not a regrouping of axes")
    version = walk.version if walk.version != before else x.version  # a Flatten layer added
    return replace(
        x,
        axes=tuple(axes),
        sizes=tuple(target),
        version=version,
        final=x.final and version == x.version,
    )


def _merged(walk: Walk, node: Any, x: Sym, group: list[int]) -> str:
    """The label of axes ``group`` merged into one."""
    big = [j for j in group if x.sizes[j] != 1]
    labels = [walk.label(x.axes[j]) for j in big]
    if len(big) <= 1:
        return x.axes[big[0]] if big else x.axes[group[0]]
    if labels == ["D", "H"]:
        return "F"
    if labels == ["T", "F"]:  # Flatten of (batch, timesteps, features): a Flatten layer
        x = walk.commit_final(x, node.name)
        walk.current(x, node.name)
        steps = walk.timesteps_at_end()
        size = walk.head_size() or 0
        if steps is None:
            raise NodeProblem("flattens the timesteps of a model with any number of them")
        walk.append(ReshapeLayer(_name(walk, node), size, "flatten", 1, steps * size,
                                 "Flatten", steps))  # fmt: skip
        return "F"
    raise NodeProblem(
        f"merges the axes ({''.join(labels)}); supported: directions with units, or"
        " timesteps with features (Flatten)"
    )


def concat(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    syms = [v for v in inputs if isinstance(v, Sym)]
    axis = int(attrs.get("axis", 0))
    if all(s.final for s in syms) and len(syms) == len(inputs) and syms:
        rank = len(syms[0].axes)
        axis %= rank
        dirs = syms[-1].sizes[axis]
        if walk.label(syms[0].axes[axis]) == "D" and all(s.sizes[axis] == dirs for s in syms):
            last = syms[-1]
            walk.current(last, node.name)
            sizes = list(last.sizes)
            sizes[axis] = dirs * len(syms)
            axes = list(last.axes)
            axes[axis] = "S"
            stack = replace(last, axes=tuple(axes), sizes=tuple(sizes), stacked=len(syms))
            return [replace(stack, dirs=dirs)]
        pair = [s.direction for s in syms] == ["forward", "backward"]
        if pair and walk.label(syms[0].axes[axis]) == "H" and syms[0].version == syms[1].version:
            walk.current(syms[1], node.name)
            axes, sizes = list(syms[0].axes), list(syms[0].sizes)
            axes[axis], sizes[axis] = "F", sizes[axis] * 2
            return [replace(syms[0], axes=tuple(axes), sizes=tuple(sizes), direction="")]
    raise NodeProblem(
        "concatenates computed tensors (a merge); supported: the final states of stacked"
        " layers (h_n), of which the last is used, and a bidirectional layer's two final"
        " states, forward then backward (torch.cat((h_n[-2], h_n[-1]), dim=1))"
    )


def pass_through(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    return [inputs[0], None]


def cast(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    if int(attrs.get("to", 1)) not in (1, 10, 11, 16):
        raise NodeProblem(f"Cast of the data to ONNX type {attrs.get('to')} (supported: floats)")
    return [inputs[0]]


def shape(walk: Walk, node: Any, inputs: list, attrs: dict[str, Any]) -> list:
    x = _sym(inputs[0])
    sizes = np.array(x.sizes, np.int64)
    start, end = attrs.get("start", 0), attrs.get("end", len(sizes))
    return [sizes[start:end]]


HANDLERS: dict[str, Handler] = {
    "LSTM": rnn,
    "GRU": rnn,
    "RNN": rnn,
    "Gemm": gemm,
    "MatMul": matmul,
    "Add": affine,
    "Sub": affine,
    "Mul": affine,
    "Div": affine,
    "Conv": conv,
    "BatchNormalization": batch_norm,
    "LayerNormalization": layer_norm,
    **{op: elementwise for op in ELEMENTWISE},
    "LeakyRelu": leaky_relu,
    "Clip": clip,
    "Softmax": softmax,
    "MaxPool": pool,
    "AveragePool": pool,
    "GlobalMaxPool": pool,
    "GlobalAveragePool": pool,
    "Transpose": transpose,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Gather": gather,
    "Slice": slice_,
    "Reshape": reshape,
    "Flatten": flatten,
    "Concat": concat,
    "Cast": cast,
    "Shape": shape,
    **{op: pass_through for op in PASS_THROUGH},
}
