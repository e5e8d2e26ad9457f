"""Generated C (host build) against Keras on the same inputs: errors and task metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .frontend.keras import load_keras_model
from .hostbuild import read_report, run_host
from .ir import DenseLayer, LSTMLayer, Model
from .qir import Q15_SCALE, QDenseLayer, QLSTMLayer, QModel
from .report import errors, task_metrics


def compare(model_path: str | Path, out_dir: Path, x: np.ndarray, labels=None) -> dict[str, Any]:
    report = read_report(out_dir)
    keras_model = load_keras_model(model_path)
    keras_y = np.asarray(keras_model.predict(x, verbose=0), dtype=np.float64)
    c_y = run_host(out_dir, x).astype(np.float64)
    if c_y.shape != keras_y.shape:
        raise ValueError(
            f"{out_dir}: C output shape {c_y.shape} != Keras {keras_y.shape};"
            " was it converted from this model?"
        )
    is_classifier = any(
        la["type"] == "Dense" and la["activation"] == "softmax" for la in report["layers"][-1:]
    )
    numbers = {
        "model": str(model_path),
        "out_dir": str(out_dir),
        "samples": int(x.shape[0]),
        **errors(keras_y, c_y),
        **task_metrics(keras_y, c_y, labels, is_classifier),
    }
    return {"json": numbers, "text": _text(numbers)}


def _text(numbers: dict[str, Any]) -> str:
    lines = [f"C (host build) vs Keras on {numbers['samples']} sequences:"]
    for key in ("max_abs_error", "mean_abs_error", "max_abs_error_pct_of_range"):
        lines.append(f"  {key:28s} {numbers[key]:.4g}")
    for key in ("keras_accuracy", "c_accuracy", "keras_rmse", "c_rmse"):
        if key in numbers:
            lines.append(f"  {key:28s} {numbers[key]:.4f}")
    return "\n".join(lines)


def dequantized_ir(ir: Model, qmodel: QModel) -> Model:
    """The float IR with the int8 weights and int32 biases of ``qmodel``, everything else float.

    Its error against Keras is the cost of weight rounding alone; the integer reference's error
    against it is the cost of the integer arithmetic (input, activations, cell, h, outputs).
    """
    feature_scale = qmodel.input_scale.astype(np.float64)
    layers: list[LSTMLayer | DenseLayer] = []
    for layer, qlayer in zip(ir.layers, qmodel.layers, strict=True):
        if isinstance(layer, LSTMLayer) and isinstance(qlayer, QLSTMLayer):
            rows = qlayer.weights_s8 * qlayer.weight_scale[..., None]  # (n, 4, m + n)
            rows[..., : layer.input_size] *= Q15_SCALE / feature_scale  # undo the input fold
            weights = rows.transpose(2, 1, 0).reshape(qlayer.row_length, 4 * layer.units)
            bias = (qlayer.bias_s32 * qlayer.weight_scale * Q15_SCALE).T.reshape(-1)
            layers.append(
                replace(
                    layer,
                    kernel=weights[: layer.input_size],
                    recurrent_kernel=weights[layer.input_size :],
                    bias=bias if layer.bias is not None else None,
                )
            )
            feature_scale = np.full(layer.units, Q15_SCALE)
        elif isinstance(layer, DenseLayer) and isinstance(qlayer, QDenseLayer):
            scale = qlayer.weight_scale
            bias = qlayer.bias_s32 * scale * qlayer.input_scale
            kernel = (qlayer.weights_s8 * scale[:, None]).T
            layers.append(
                replace(layer, kernel=kernel, bias=bias if layer.bias is not None else None)
            )
        else:
            raise ValueError(f"layer '{layer.name}': float and quantized layers do not match")
    return replace(ir, layers=tuple(layers))
