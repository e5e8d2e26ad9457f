"""BatchNormalization with its inference statistics: folded into a neighbouring Dense layer,
or else a per-feature integer affine.

At inference it is the per-feature affine y = a * x + b with a = gamma / sqrt(var + epsilon)
and b = beta - a * mean. Folded into the next Dense (W, c): kernel a[:, None] * W, bias
b @ W + c; or into a previous Dense with a linear activation: kernel W * a, bias c * a + b.
Both are exact in float; the folded Dense is then quantized like any other. Where there is no
such neighbour (between two LSTMs, after a Conv1D, last) the layer stays in the chain and runs
y_q = sat16(requantize(x_q, A, s) + B) per feature (``fixedpoint.affine_s16``): A and s the
signed multiplier of a * input scale / output scale, B = round(b / output scale), one output
scale for all features (the calibrated max |y| with OUTPUT_HEADROOM).
Templates: templates/kinds/batch_norm/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.kinds.base import (
    FloatLayer,
    LayerTrace,
    QLayer,
    QuantContext,
    check_finite,
    check_shape,
)
from lstm_embed.quantize import fixedpoint as fp

# Affine outputs: room beyond the calibrated max |y| (as Dense's linear outputs)
OUTPUT_HEADROOM = 1.5


@dataclass(frozen=True)
class BatchNormLayer(FloatLayer):
    kind: ClassVar[str] = "batch_norm"
    type_name: ClassVar[str] = "BatchNormalization"
    keeps_frame: ClassVar[bool] = True
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
        return AFFINE_BYTES * self.input_size  # when it stays in the chain (not folded)

    def quantize(self, ctx: QuantContext) -> QAffineLayer:
        a, b = self.affine
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        out_scale = output_scale(float(np.max(np.abs(ctx.trace.output))))
        multiplier, shift = fp.signed_multipliers(a * scale / out_scale)
        offset = fp.round_half_away(np.clip(b / out_scale, -fp.INT32_MAX, fp.INT32_MAX))
        return QAffineLayer(self.name, self.input_size, multiplier, shift, offset, out_scale)

    def dequantized(self, qlayer: QAffineLayer, feature_scale: np.ndarray) -> BatchNormLayer:
        return self  # its constants are not weights of the rounding budget


def output_scale(max_abs_output: float) -> float:
    """int16 scale covering max |y| * OUTPUT_HEADROOM (all-zero outputs: a scale float32 holds)."""
    peak = max_abs_output * OUTPUT_HEADROOM
    return (peak if peak > 1e-30 else 1e-30 if peak > 0 else 1.0) / fp.INT16_MAX


AFFINE_BYTES = 4 + 1 + 4  # per feature: int32 multiplier, int8 shift, int32 offset


@dataclass(frozen=True)
class QAffineLayer(QLayer):
    """y_q = sat16(requantize(x_q, multiplier, shift) + offset) per feature; the multiplier
    carries the sign of the factor; output int16 with one scale."""

    kind: ClassVar[str] = "batch_norm"
    template: ClassVar[str] = "kinds/batch_norm/layer.c.j2"
    name: str
    input_size: int
    multiplier: np.ndarray  # (input_size,) signed
    shift: np.ndarray
    offset: np.ndarray  # int32, output LSBs
    output_scale: float
    type_name: str = "BatchNormalization"  # the layer it computes (Normalization, Rescaling)

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.full(self.input_size, self.output_scale)

    @property
    def macs(self) -> int:
        return self.input_size

    @property
    def weight_bits(self) -> int:
        return 8  # no weight rows; the report's column needs a value

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        return fp.affine_s16(x_q, self.multiplier, self.shift, self.offset), None

    def uses(self) -> set[str]:
        return {"affine"}

    def scratch_width(self) -> int:
        return self.input_size

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "output_scale": f"{self.output_scale:.6g}",
            "multiplier": cformat.c_int_array(self.multiplier, per_line=8),
            "shift": cformat.c_int_array(self.shift, per_line=16),
            "offset": cformat.c_int_array(self.offset, per_line=8),
            "type_name": self.type_name,
        }

    def format(self) -> str:
        return f"affine, out int16 x {self.output_scale:.3g}"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": AFFINE_BYTES * self.input_size}


# the convolutions a BatchNormalization of their channels folds into: kernel (..., filters)
CONV_KINDS = ("conv1d", "conv2d")


def fold(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    """The chain with every BatchNormalization folded into a Dense neighbour where it has one;
    the others stay in the chain as integer affines."""
    out: list[FloatLayer] = []
    pending: BatchNormLayer | None = None
    for layer in layers:
        if pending is not None:
            if layer.kind == "dense":
                a, b = pending.affine
                layer = replace(layer, kernel=a[:, None] * layer.kernel,
                                bias=b @ layer.kernel + layer.bias_or_zeros)  # fmt: skip
            else:
                out.append(pending)
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
            elif (folded := _into_conv(previous, layer)) is not None:
                out[-1] = folded
            else:
                pending = layer
            continue
        out.append(layer)
    if pending is not None:
        out.append(pending)
    return out, []


def _into_conv(previous: FloatLayer | None, norm: BatchNormLayer) -> FloatLayer | None:
    """A Conv1D or Conv2D with a linear activation and the BatchNormalization of its channels
    after it (on frames, its per-channel affine repeated over the rows) as one convolution:
    each filter's weights and bias scaled, the shift added to the bias (exact, padding
    included: the zeros' output is the bias, normalized alike); None where it does not apply."""
    if previous is None or previous.kind not in CONV_KINDS or previous.activation != "linear":
        return None
    filters = previous.filters
    a, b = (v.reshape(-1, filters) for v in norm.affine)
    if not (np.all(a == a[0]) and np.all(b == b[0])):  # not the same affine on every row
        return None
    bias = previous.bias if previous.bias is not None else np.zeros(filters)
    return replace(previous, kernel=previous.kernel * a[0], bias=bias * a[0] + b[0])
