"""Float forward pass of the IR (Keras semantics), used for calibration ranges.

It also serves as an independent check of the frontend: tests hold it equal to
``model.predict`` within float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import GATES, DenseLayer, LSTMLayer, Model


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def hard_sigmoid(z: np.ndarray) -> np.ndarray:
    return np.clip(z / 6.0 + 0.5, 0.0, 1.0)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


DENSE_ACTIVATION = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "softmax": softmax,
}
RECURRENT_ACTIVATION = {"sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid}


@dataclass
class LayerTrace:
    """Per-layer float tensors seen during a forward pass (for calibration and reports)."""

    output: np.ndarray
    cell: np.ndarray | None = None  # (N, T, n) for LSTM layers
    gate_preactivations: dict[str, np.ndarray] = field(default_factory=dict)


def lstm_forward(layer: LSTMLayer, x: np.ndarray) -> LayerTrace:
    """x (N, T, m) -> trace with h (N, T, n) for every step."""
    batch, steps, _ = x.shape
    n = layer.units
    act = RECURRENT_ACTIVATION[layer.recurrent_activation]
    bias = layer.bias if layer.bias is not None else np.zeros(4 * n)
    h = np.zeros((batch, n))
    c = np.zeros((batch, n))
    hs, cs, zs = [], [], []
    for t in range(steps):
        z = x[:, t] @ layer.kernel + h @ layer.recurrent_kernel + bias
        zi, zf, zg, zo = (z[:, k * n : (k + 1) * n] for k in range(4))
        c = act(zf) * c + act(zi) * np.tanh(zg)
        h = act(zo) * np.tanh(c)
        hs.append(h)
        cs.append(c)
        zs.append(z)
    z_all = np.stack(zs, axis=1)
    gates = {g: z_all[..., k * n : (k + 1) * n] for k, g in enumerate(GATES)}
    return LayerTrace(np.stack(hs, axis=1), np.stack(cs, axis=1), gates)


def dense_forward(layer: DenseLayer, x: np.ndarray) -> LayerTrace:
    z = x @ layer.kernel + layer.bias_or_zeros
    return LayerTrace(DENSE_ACTIVATION[layer.activation](z), gate_preactivations={"z": z})


def forward(model: Model, x: np.ndarray) -> tuple[np.ndarray, list[LayerTrace]]:
    """x (N, T, m) -> (output shaped like model.predict, per-layer traces).

    Dense layers after an LSTM that returns sequences apply to every timestep, as in Keras.
    """
    y = np.asarray(x, dtype=np.float64)
    traces = []
    for layer in model.layers:
        trace = lstm_forward(layer, y) if isinstance(layer, LSTMLayer) else dense_forward(layer, y)
        traces.append(trace)
        y = trace.output
        if isinstance(layer, LSTMLayer) and not layer.return_sequences:
            y = y[:, -1]
    return y, traces
