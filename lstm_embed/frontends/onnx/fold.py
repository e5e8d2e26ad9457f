"""Constant folding: the operators exporters use for shapes and constant tensors, evaluated on
numpy arrays whose inputs are all known (initializers, Constant nodes, the Shape of a tensor
whose sizes are known). Every result's size is checked before it is allocated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lstm_embed.frontends.onnx.loader import MAX_TENSOR_ELEMENTS


class FoldError(ValueError):
    """A constant operator that cannot be evaluated; the message says why (no node name)."""


def _ints(value: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _checked_size(shape: list[int]) -> list[int]:
    if any(d < 0 for d in shape):
        raise FoldError(f"shape {shape} has a negative dimension")
    if int(np.prod(shape, dtype=object)) > MAX_TENSOR_ELEMENTS:
        raise FoldError(f"shape {shape} holds more than {MAX_TENSOR_ELEMENTS} values")
    return shape


def _axes(attrs: dict[str, Any], inputs: list, index: int) -> list[int] | None:
    """Axes from an input (opset 13+) or the attribute (before)."""
    if len(inputs) > index and inputs[index] is not None:
        return _ints(inputs[index])
    return list(attrs["axes"]) if "axes" in attrs else None


def _slice(x: np.ndarray, inputs: list, attrs: dict[str, Any]) -> np.ndarray:
    if len(inputs) >= 3:
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
        steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else None
    else:  # opset < 10: attributes
        starts, ends, axes = list(attrs["starts"]), list(attrs["ends"]), attrs.get("axes")
        steps = None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step == 0:
            raise FoldError("Slice with step 0")
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def _reshape(x: np.ndarray, shape: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    target = _ints(shape)
    if not attrs.get("allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


def _expand(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = _ints(shape)
    out = np.broadcast_shapes(x.shape, tuple(_checked_size(target)))
    _checked_size(list(out))
    return np.broadcast_to(x, out).copy()


def _constant_of_shape(shape: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    value = attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)[:1]
    return np.full(_checked_size(_ints(shape)), fill[0], dtype=fill.dtype)


def _unsqueeze(x: np.ndarray, axes: list[int]) -> np.ndarray:
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = np.expand_dims(x, axis)
    return x


def _gather(x: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    return np.take(x, np.asarray(index, np.int64), axis=axis)


def _cast(x: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    from lstm_embed.frontends.onnx.loader import DTYPES

    dtype = DTYPES.get(int(attrs.get("to", 1)))
    if dtype is None:
        raise FoldError(f"Cast to ONNX type {attrs.get('to')}")
    return x.astype(dtype)


FOLDERS: dict[str, Callable[[list, dict[str, Any]], np.ndarray]] = {
    "Identity": lambda i, a: i[0],
    "Cast": lambda i, a: _cast(i[0], a),
    "Gather": lambda i, a: _gather(i[0], i[1], int(a.get("axis", 0))),
    "Concat": lambda i, a: np.concatenate([np.atleast_1d(v) for v in i], axis=int(a["axis"])),
    "Unsqueeze": lambda i, a: _unsqueeze(i[0], _axes(a, i, 1) or []),
    "Squeeze": lambda i, a: np.squeeze(i[0], axis=tuple(_axes(a, i, 1) or ()) or None),
    "Slice": lambda i, a: _slice(i[0], i, a),
    "Reshape": lambda i, a: _reshape(i[0], i[1], a),
    "Transpose": lambda i, a: np.transpose(i[0], a.get("perm")),
    "Expand": lambda i, a: _expand(i[0], i[1]),
    "ConstantOfShape": lambda i, a: _constant_of_shape(i[0], a),
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] // i[1] if i[0].dtype.kind in "iu" else i[0] / i[1],
    "Neg": lambda i, a: -i[0],
    "Equal": lambda i, a: np.equal(i[0], i[1]),
    "Where": lambda i, a: np.where(i[0], i[1], i[2]),
    "Min": lambda i, a: np.minimum.reduce(i),
    "Max": lambda i, a: np.maximum.reduce(i),
    "Range": lambda i, a: np.arange(i[0], i[1], i[2]),
    "Shape": lambda i, a: np.array(np.shape(i[0]), np.int64)[a.get("start", 0) : a.get("end")],
    "MatMul": lambda i, a: np.matmul(i[0], i[1]),
}


def fold(op: str, inputs: list, attrs: dict[str, Any]) -> np.ndarray:
    """The constant result of ``op``; FoldError when it is not one lstm-embed evaluates."""
    folder = FOLDERS.get(op)
    if folder is None:
        raise FoldError(f"operator {op} on constants is not evaluated")
    if op == "Range":
        count = int(np.ceil((float(inputs[1]) - float(inputs[0])) / float(inputs[2] or 1)))
        _checked_size([max(count, 0)])
    if op == "MatMul" and np.ndim(inputs[0]) == 2 == np.ndim(inputs[1]):
        _checked_size([np.shape(inputs[0])[0], np.shape(inputs[1])[1]])
    if op in ("Add", "Sub", "Mul", "Div", "Equal", "Where", "Min", "Max"):
        _checked_size(list(np.broadcast_shapes(*[np.shape(v) for v in inputs])))
    try:
        result = np.asarray(folder(inputs, attrs))
    except FoldError:
        raise
    except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError) as error:
        raise FoldError(f"{op} on constants failed ({type(error).__name__}: {error})") from None
    _checked_size(list(result.shape))
    return result
