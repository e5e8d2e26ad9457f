"""BatchNormalization with its inference statistics, folded into a neighbouring Dense layer.

At inference it is the per-feature affine y = a * x + b with a = gamma / sqrt(var + epsilon)
and b = beta - a * mean. Folded into the next Dense (W, c): kernel a[:, None] * W, bias
b @ W + c; or into a previous Dense with a linear activation: kernel W * a, bias c * a + b.
Both are exact in float; the folded Dense is then quantized like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from ..reader.spec import LayerSpec
from .base import FloatLayer, IRError, LayerTrace, Unsupported, check_finite, check_shape

LAST_AXIS = (-1, 1, 2)  # Keras 3 writes -1; Keras 2 the axis number (1 after an LSTM vector)


def read(spec: LayerSpec, input_size: int) -> BatchNormLayer:
    config = spec.config
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in LAST_AXIS:
        raise Unsupported([f"axis={config.get('axis')!r} is not supported (supported: the last)"])
    weights = [np.asarray(w, np.float64) for w in spec.weights]
    scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
    if len(weights) != scale + center + 2:
        raise IRError(
            f"layer '{spec.name}': {len(weights)} weight arrays, expected {scale + center + 2}"
        )
    gamma = weights.pop(0) if scale else np.ones(input_size)
    beta = weights.pop(0) if center else np.zeros(input_size)
    mean, variance = weights
    epsilon = float(config.get("epsilon", 1e-3))
    return BatchNormLayer(spec.name, input_size, gamma, beta, mean, variance, epsilon)


@dataclass(frozen=True)
class BatchNormLayer(FloatLayer):
    kind: ClassVar[str] = "batch_norm"
    keras_class: ClassVar[str] = "BatchNormalization"
    name: str
    input_size: int
    gamma: np.ndarray
    beta: np.ndarray
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    epsilon: float

    def __post_init__(self) -> None:
        for what in ("gamma", "beta", "moving_mean", "moving_variance"):
            check_shape(self.name, what, getattr(self, what), (self.input_size,))
            check_finite(self.name, what, getattr(self, what))

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def params(self) -> int:
        return 4 * self.input_size

    @property
    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        a = self.gamma / np.sqrt(self.moving_variance + self.epsilon)
        return a, self.beta - a * self.moving_mean

    def forward(self, x: np.ndarray) -> LayerTrace:
        a, b = self.affine
        return LayerTrace(x * a + b)

    def summary(self) -> dict[str, Any]:
        return {"type": "BatchNormalization", "activation": None, "units": None,
                "params_formula": f"4*{self.input_size}"}  # fmt: skip

    def flash_bytes(self, bits: int) -> int:
        return 0  # folded into its neighbour


def fold(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    """The chain with every BatchNormalization folded into a Dense neighbour, and a reason for
    each one that has none."""
    out: list[FloatLayer] = []
    problems = []
    pending: BatchNormLayer | None = None
    for layer in layers:
        if pending is not None:
            if layer.kind == "dense":
                a, b = pending.affine
                layer = replace(layer, kernel=a[:, None] * layer.kernel,
                                bias=b @ layer.kernel + layer.bias_or_zeros)  # fmt: skip
            else:
                problems.append(_no_neighbour(pending))
            pending = None
        if isinstance(layer, BatchNormLayer):
            previous = out[-1] if out else None
            if (
                previous is not None
                and previous.kind == "dense"
                and previous.activation == "linear"
            ):
                a, b = layer.affine
                out[-1] = replace(previous, kernel=previous.kernel * a,
                                  bias=previous.bias_or_zeros * a + b)  # fmt: skip
            else:
                pending = layer
            continue
        out.append(layer)
    if pending is not None:
        problems.append(_no_neighbour(pending))
    return out, problems


def _no_neighbour(layer: BatchNormLayer) -> str:
    return (
        f"layer '{layer.name}' (BatchNormalization): supported where it can be folded: before a"
        " Dense layer or after a Dense layer with a linear activation"
    )
