"""Activation, ReLU, LeakyReLU and Softmax layers: an activation applied per timestep.

After a Dense layer with a linear activation the layer folds into it (exact in float: Dense
already computes relu, sigmoid, tanh and softmax on its sums). Elsewhere it runs on its own on
the int16 input: the relu family (Keras' relu(x, negative_slope, max_value, threshold), which
covers ReLU, LeakyReLU, relu6 and leaky_relu) in the input's own LSBs; sigmoid and tanh through
the activation tables after a per-feature multiplier to Z16. Softmax on its own is refused:
its only integer form is Dense's (``fixedpoint.softmax_q15`` on the rows' sums).
Templates: templates/kinds/activation/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.kinds.base import (
    Q15_SCALE,
    FloatLayer,
    IRError,
    LayerTrace,
    QLayer,
    QuantContext,
)
from lstm_embed.kinds.common import WeightlessQLayer, sigmoid, softmax
from lstm_embed.kinds.conv1d import CONV_ACTIVATIONS
from lstm_embed.quantize import fixedpoint as fp

FUNCTIONS = ("relu", "sigmoid", "tanh", "softmax")
DENSE_FOLDABLE = ("relu", "sigmoid", "tanh", "softmax")  # Dense computes these on its sums
SOFTMAX_PLACES = (
    "layer '{name}' ({cls}): softmax is supported after a Dense layer with a linear activation"
    " (it folds into it), or as Dense(activation='softmax')"
)
MAX_SLOPE = 2.0**30  # the largest factor a (multiplier, shift >= 1) pair holds


@dataclass(frozen=True)
class ActivationLayer(FloatLayer):
    kind: ClassVar[str] = "activation"
    keeps_frame: ClassVar[bool] = True
    name: str
    input_size: int
    function: str
    negative_slope: float = 0.0
    max_value: float | None = None
    threshold: float = 0.0
    type_name: str = "Activation"

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise IRError(f"layer '{self.name}': activation {self.function!r} is not supported")
        values = [self.negative_slope, self.threshold]
        if self.max_value is not None:
            values.append(self.max_value)
        if not all(np.isfinite(values)):
            raise IRError(f"layer '{self.name}': options must be finite numbers")
        if not 0.0 <= self.negative_slope <= MAX_SLOPE:
            raise IRError(f"layer '{self.name}': negative_slope must lie in [0, 2**30]")
        if self.max_value is not None and self.max_value < 0:
            raise IRError(f"layer '{self.name}': max_value must be >= 0")

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def params(self) -> int:
        return 0

    @property
    def plain(self) -> bool:
        """The function Dense computes (relu without options, sigmoid, tanh, softmax)."""
        options = (self.negative_slope, self.max_value, self.threshold) == (0.0, None, 0.0)
        return self.function in DENSE_FOLDABLE and options

    def forward(self, x: np.ndarray) -> LayerTrace:
        if self.function == "sigmoid":
            return LayerTrace(sigmoid(x))
        if self.function == "tanh":
            return LayerTrace(np.tanh(x))
        if self.function == "softmax":
            return LayerTrace(softmax(x))
        # Keras' relu: x above the threshold (clipped to [0, max_value]), plus the slope
        # times the part below it
        top = np.inf if self.max_value is None else self.max_value
        positive = np.clip(np.where(x > self.threshold, x, 0.0), 0.0, top)
        return LayerTrace(positive + self.negative_slope * np.minimum(x - self.threshold, 0.0))

    def quantize(self, ctx: QuantContext) -> QActivationLayer:
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        if self.function == "softmax":  # fold() refuses it first
            raise IRError(SOFTMAX_PLACES.format(name=self.name, cls=self.type_name))
        if self.function == "relu":
            top = np.full(self.input_size, float(fp.INT16_MAX))
            if self.max_value is not None:
                top = self.max_value / scale
            limit = fp.RELU_THRESHOLD_LIMIT
            slope = fp.quantize_multiplier(self.negative_slope)
            return QActivationLayer(
                self.name, self.input_size, "relu", scale.copy(),
                threshold=fp.round_half_away(np.clip(self.threshold / scale, -limit, limit)),
                max_value=fp.round_half_away(np.clip(top, 0, fp.INT16_MAX)),
                slope_multiplier=slope.multiplier, slope_shift=slope.shift,
            )  # fmt: skip
        multiplier, shift = fp.multipliers(scale * 2.0**fp.Z_FRAC_BITS)
        return QActivationLayer(
            self.name, self.input_size, self.function, np.full(self.input_size, Q15_SCALE),
            multiplier=multiplier, shift=shift,
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {"type": self.type_name, "activation": self.function, "units": None,
                "params_formula": "0"}  # fmt: skip

    def flash_bytes(self, bits: int) -> int:
        return self.input_size * (8 if self.function == "relu" else 5)

    def dequantized(self, qlayer: QActivationLayer, feature_scale: np.ndarray) -> FloatLayer:
        return self  # no weights


@dataclass(frozen=True)
class QActivationLayer(WeightlessQLayer, QLayer):
    """relu: output in the input's LSBs (per feature); sigmoid, tanh: output Q0.15."""

    kind: ClassVar[str] = "activation"
    template: ClassVar[str] = "kinds/activation/layer.c.j2"
    name: str
    input_size: int
    function: str
    output_scales: np.ndarray  # (input_size,) real value of one output LSB
    threshold: np.ndarray | None = None  # relu: int32 per feature, input LSBs
    max_value: np.ndarray | None = None  # relu: int32 per feature, input LSBs
    slope_multiplier: int = 0
    slope_shift: int = 1
    multiplier: np.ndarray | None = None  # sigmoid, tanh: input LSB -> Z16, per feature
    shift: np.ndarray | None = None

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.output_scales

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        if self.function == "relu":
            y = fp.relu_s16(
                x_q, self.threshold, self.max_value, self.slope_multiplier, self.slope_shift
            )
            return y, None
        z = fp.requantize(x_q, self.multiplier, self.shift)
        if self.function == "sigmoid":
            return fp.sigmoid_q15(z, tables["tanh"]), None
        return fp.tanh_q15(z, tables["tanh"]), None

    def tables_needed(self) -> set[str]:
        return {self.function} if self.function in ("sigmoid", "tanh") else set()

    def uses(self) -> set[str]:
        return {"relu_family"} if self.function == "relu" else {f"table_{self.function}"}

    def scratch_width(self) -> int:
        return self.input_size

    def context(self, index: int) -> dict[str, Any]:
        context: dict[str, Any] = {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "function": self.function,
        }
        if self.function == "relu":
            context.update(
                threshold=cformat.c_int_array(self.threshold, per_line=8),
                max_value=cformat.c_int_array(self.max_value, per_line=8),
                slope_multiplier=self.slope_multiplier,
                slope_shift=self.slope_shift,
            )
        else:
            context.update(
                multiplier=cformat.c_int_array(self.multiplier, per_line=8),
                shift=cformat.c_int_array(self.shift, per_line=16),
            )
        return context

    def format(self) -> str:
        return "out Q0.15" if self.function != "relu" else "out = input format"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": self.input_size * (8 if self.function == "relu" else 5)}


def fold(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    """An activation layer right after a Dense with a linear activation becomes that Dense's
    activation (relu without options, sigmoid, tanh, softmax), after a linear Conv1D or Conv2D
    that convolution's (relu, sigmoid, tanh); a Softmax elsewhere is refused with the
    reason."""
    out: list[FloatLayer] = []
    problems = []
    for layer in layers:
        previous = out[-1] if out else None
        if (
            isinstance(layer, ActivationLayer)
            and layer.plain
            and previous is not None
            and (previous.kind == "dense" or _conv_takes(previous, layer))
            and previous.activation == "linear"
        ):
            out[-1] = replace(previous, activation=layer.function)
            continue
        if isinstance(layer, ActivationLayer) and layer.function == "softmax":
            problems.append(SOFTMAX_PLACES.format(name=layer.name, cls=layer.type_name))
        out.append(layer)
    return out, problems


def _conv_takes(previous: FloatLayer, layer: ActivationLayer) -> bool:
    """A Conv1D or Conv2D (a ReLU after Conv + BatchNormalization, the usual block) takes the
    activations its kernels apply per output (not a softmax, which spans features)."""
    return previous.kind in ("conv1d", "conv2d") and layer.function in CONV_ACTIVATIONS
