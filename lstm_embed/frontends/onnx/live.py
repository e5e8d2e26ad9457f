"""onnxruntime as the oracle of an .onnx file (compare, tests), when it is installed: the one
place of the ONNX frontend that imports it. Conversion never does."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_file_layout(x: np.ndarray, axes: str) -> np.ndarray:
    """(N, T, m) -> the file's input axis order (e.g. TBF: time-major); token ids, (N, T, 1)
    or (N, T), -> (N, T) or (T, N) (axes BT or TB)."""
    if "F" not in axes and x.ndim == 3:
        x = x[..., 0]
    return np.ascontiguousarray(x.transpose(["BTF".index(a) for a in axes]))


def from_file_layout(y: np.ndarray, axes: str) -> np.ndarray:
    """The file's output (axes such as TBF, or B1F with a size-1 axis) -> (N, T, k) or (N, k)."""
    y = np.asarray(y)
    y = y.reshape([s for s, a in zip(y.shape, axes, strict=True) if a != "1"])
    kept = [a for a in axes if a != "1"]
    order = "BTF" if "T" in kept else "BF"
    return y.transpose([kept.index(a) for a in order])


def predict(path: str | Path, meta: dict[str, str], x: np.ndarray) -> tuple[np.ndarray, str] | None:
    """onnxruntime's output of the file on x (N, T, m), or None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtype = meta.get("onnx_input_dtype", "float32")  # token ids: the file's integer type
    x = np.asarray(x, np.float32)
    x = np.rint(x).astype(dtype) if dtype != "float32" else x
    feed = {meta["onnx_input"]: to_file_layout(x, meta["onnx_input_axes"])}
    y = session.run(None, feed)[0]
    description = f"onnxruntime {onnxruntime.__version__}"
    return from_file_layout(y, meta["onnx_output_axes"]).astype(np.float64), description
