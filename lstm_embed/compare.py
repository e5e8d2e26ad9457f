"""Generated C (host build) against Keras on the same inputs: errors and task metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .frontend.keras import load_keras_model
from .hostbuild import read_report, run_host
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
