"""Dense: Keras config and weights, float forward pass, quantization, integer reference, C context.

On a sequence it applies to every timestep, as in Keras. Template: templates/kinds/dense/layer.c.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.layouts import dense as dense_layouts
from lstm_embed.emit.layouts import rows as layouts
from lstm_embed.kinds.base import (
    Q15_SCALE,
    FloatLayer,
    IRError,
    LayerTrace,
    QLayer,
    QuantContext,
    check_finite,
    check_shape,
)
from lstm_embed.kinds.common import (
    activation_function,
    weight_format,
)
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding

DENSE_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
TABLE_ACTIVATIONS = ("sigmoid", "tanh", "softmax")  # outputs Q0.15 through a table
OUTPUT_HEADROOM = 1.5  # Dense linear outputs (logits, regression targets)


@dataclass(frozen=True)
class DenseLayer(FloatLayer):
    kind: ClassVar[str] = "dense"
    type_name: ClassVar[str] = "Dense"
    name: str
    input_size: int
    units: int
    kernel: np.ndarray  # (input_size, units)
    bias: np.ndarray | None
    activation: str = "linear"

    def __post_init__(self) -> None:
        if self.units < 1:
            raise IRError(f"layer '{self.name}': units must be >= 1")
        check_shape(self.name, "kernel", self.kernel, (self.input_size, self.units))
        if self.bias is not None:
            check_shape(self.name, "bias", self.bias, (self.units,))
        if self.activation not in DENSE_ACTIVATIONS:
            raise IRError(
                f"layer '{self.name}': activation '{self.activation}' is not supported"
                f" (supported: {', '.join(DENSE_ACTIVATIONS)})"
            )
        check_finite(self.name, "kernel", self.kernel)
        if self.bias is not None:
            check_finite(self.name, "bias", self.bias)

    @property
    def params(self) -> int:
        return self.input_size * self.units + (self.units if self.bias is not None else 0)

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def bias_or_zeros(self) -> np.ndarray:
        return self.bias if self.bias is not None else np.zeros(self.units)

    def forward(self, x: np.ndarray) -> LayerTrace:
        z = x @ self.kernel + self.bias_or_zeros
        return LayerTrace(activation_function(self.activation)(z), gate_preactivations={"z": z})

    def quantize(self, ctx: QuantContext) -> QDenseLayer:
        max_out = float(np.max(np.abs(ctx.trace.output)))
        stats = None
        if ctx.rounding != rounding.NEAREST:  # the rows multiply x_q times the input scale
            scale = np.broadcast_to(ctx.feature_scale, (self.input_size,))
            u = np.asarray(ctx.fit_part(ctx.quantized_input)) * np.max(scale)
            v = ctx.fit_part(ctx.layer_input) / (scale / np.max(scale))
            stats = rounding.InputStats.of(u, v)
        return quantize_dense(self, ctx.feature_scale, max_out, ctx.bits, ctx.rounding, stats)

    def summary(self) -> dict[str, Any]:
        bias = f"+{self.units}" if self.bias is not None else ""
        return {
            "type": "Dense",
            "activation": self.activation,
            "units": self.units,
            "params_formula": f"{self.input_size}*{self.units}{bias}",
        }

    def flash_bytes(self, bits: int) -> int:
        return self.units * self.input_size * bits // 8 + self.units * fp.BIAS_ROW_BYTES

    def dequantized(self, qlayer: QDenseLayer, feature_scale: np.ndarray) -> DenseLayer:
        scale = qlayer.weight_scale
        unit = fp.accumulator_unit(qlayer.weight_bits, qlayer.input_size)
        bias = qlayer.bias_s32 * scale * unit * qlayer.input_scale
        kernel = (qlayer.weights * scale[:, None]).T / qlayer.input_fold[:, None]
        return DenseLayer(
            self.name,
            self.input_size,
            self.units,
            kernel,
            bias if self.bias is not None else None,
            self.activation,
        )


def quantize_dense(
    layer: DenseLayer,
    feature_scale: np.ndarray,
    max_abs_output: float,
    bits: int = 8,
    method: str = rounding.NEAREST,
    stats: rounding.InputStats | None = None,
) -> QDenseLayer:
    """``feature_scale``: real value of one input LSB per feature. Features with a finer scale
    than the coarsest (model inputs) are folded into the kernel, so one scale serves the row.
    ``method``, ``stats``: the weight rounding and the moments of x_q * input scale it uses."""
    feature_scale = np.broadcast_to(np.asarray(feature_scale, np.float64), (layer.input_size,))
    in_scale = float(np.max(feature_scale))
    fold = feature_scale / in_scale
    # rows longer than fixedpoint.INT8_ROW_MAX: blocked int8 sums (accumulator_shift)
    weights, scale, bias_s32, acc_scale = fp.row_scales(
        (layer.kernel * fold[:, None]).T, layer.bias_or_zeros, in_scale, bits
    )
    if method != rounding.NEAREST:  # the same scales, the weights rounded against the data
        weights, bias_s32 = rounding.rounded_weights(
            (layer.kernel * fold[:, None]).T, layer.bias_or_zeros, scale, in_scale, bits,
            method, stats, layer.bias is not None,
        )  # fmt: skip
    if layer.activation in TABLE_ACTIVATIONS:
        out_scale = Q15_SCALE
        real = acc_scale * in_scale * 2.0**fp.Z_FRAC_BITS
    else:
        peak = max_abs_output * OUTPUT_HEADROOM
        # outputs that are all ~0 still get a scale that float32 can hold (and dequantize with)
        out_scale = (peak if peak > 1e-30 else 1e-30 if peak > 0 else 1.0) / fp.INT16_MAX
        real = acc_scale * in_scale / out_scale
    multiplier, shift = fp.multipliers(real)
    # one word per row where every shift allows it (layouts.packed_requant): no shift array
    multiplier = layouts.with_packed_shift(multiplier, shift)
    return QDenseLayer(
        name=layer.name,
        input_size=layer.input_size,
        units=layer.units,
        activation=layer.activation,
        weights=weights,
        bias_s32=bias_s32,
        multiplier=multiplier,
        shift=shift,
        weight_scale=scale,
        input_scale=in_scale,
        output_scale=out_scale,
        has_bias=layer.bias is not None,
        input_fold=fold.copy(),
    )


@dataclass(frozen=True)
class QDenseLayer(QLayer):
    kind: ClassVar[str] = "dense"
    template: ClassVar[str] = "kinds/dense/layer.c.j2"
    name: str
    input_size: int
    units: int
    activation: str
    weights: np.ndarray  # int8 or int16 (units, input_size)
    bias_s32: np.ndarray  # (units,)
    multiplier: np.ndarray  # (units,)
    shift: np.ndarray  # (units,)
    weight_scale: np.ndarray  # (units,)
    input_scale: float
    output_scale: float  # Q0.15 (2**-15) for sigmoid, tanh, softmax
    has_bias: bool = True
    input_fold: np.ndarray | None = None  # (input_size,) feature scale / input_scale, folded in

    def __post_init__(self) -> None:
        assert self.weights.shape == (self.units, self.input_size)
        assert self.weights.dtype in (np.int8, np.int16)
        if self.input_fold is None:
            object.__setattr__(self, "input_fold", np.ones(self.input_size))

    @property
    def weight_bits(self) -> int:
        return self.weights.dtype.itemsize * 8

    @property
    def acc_shift(self) -> int:
        """Right shift from the exact row sum to the int32 accumulator (0: one int32 sum)."""
        return fp.accumulator_shift(self.weight_bits, self.input_size)

    @property
    def blocked(self) -> bool:
        """int8 rows too long for one int32 sum: int32 sums per block, added in int64."""
        return self.weight_bits == 8 and self.acc_shift > 0

    @property
    def uses_table(self) -> bool:
        return self.activation in TABLE_ACTIVATIONS

    @property
    def macs(self) -> int:
        return self.units * self.input_size

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.full(self.units, self.output_scale)

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        dot = np.asarray(x_q, np.int64) @ self.weights.T.astype(np.int64)
        z = fp.requantize(
            fp.accumulate(dot, self.bias_s32, self.weight_bits, self.input_size),
            self.multiplier,
            self.shift,
        )
        if self.activation == "sigmoid":
            return fp.sigmoid_q15(z, tables["tanh"]), None
        if self.activation == "tanh":
            return fp.tanh_q15(z, tables["tanh"]), None
        if self.activation == "softmax":
            return fp.softmax_q15(z), None
        y = fp.saturate_s16(z)
        return (np.maximum(y, 0) if self.activation == "relu" else y), None

    def tables_needed(self) -> set[str]:
        return {"sigmoid": {"sigmoid"}, "tanh": {"tanh"}}.get(self.activation, set())

    def uses(self) -> set[str]:
        flags = {"dense", f"dense_{self.activation}"}
        if self.weight_bits == 16:
            flags.add("wide_dense")
        if self.blocked:
            flags.add("blocked_rows")
        if self.activation == "softmax":
            flags.add("softmax")
        if dense_layouts.optimized(self):
            flags.add("quad_rows")  # the DSP and MVE kernels' layouts (layouts.dense)
        return flags

    def shared_scratch(self) -> list[dict[str, Any]]:
        if self.activation != "softmax":
            return []
        return [
            {"type": "int32_t", "name": "logits_z", "size": self.units,
             "comment": f"softmax inputs, Z{fp.Z_FRAC_BITS}"}
        ]  # fmt: skip

    def scratch_width(self) -> int:
        return self.units

    def context(self, index: int) -> dict[str, Any]:
        output_format = "Q0.15" if self.uses_table else f"int16, scale {self.output_scale:.6g}"
        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "units": self.units,
            "activation": self.activation,
            "output_format": output_format,
            "weights": cformat.c_int_array(self.weights, per_line=min(self.input_size, 32)),
            "weights_count": self.weights.size,
            **weight_format(self.weight_bits),
            "bias": cformat.c_int_array(self.bias_s32, per_line=8),
            "multiplier": cformat.c_int_array(self.multiplier, per_line=8),
            "shift": cformat.c_int_array(self.shift, per_line=16),
            "packed_requant": self.packed_requant,
            "acc_shift": self.acc_shift,
            **dense_layouts.context(self),
        }

    @property
    def packed_requant(self) -> bool:
        return layouts.packed_requant(self)

    def format(self) -> str:
        if self.uses_table:
            return f"w int{self.weight_bits}, out Q0.15"
        return f"w int{self.weight_bits}, out int16 x {self.output_scale:.3g}"

    def flash_bytes(self) -> dict[str, int]:
        weights = self.units * self.input_size * self.weight_bits // 8
        shift_bytes = self.units if self.packed_requant else 0  # packed: in the multipliers
        return {"weights": weights, "biases": self.units * (fp.BIAS_ROW_BYTES - 1) + shift_bytes}
