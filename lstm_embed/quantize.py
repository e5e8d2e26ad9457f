"""Quantizer: float IR + calibration data -> integer IR. Pure functions, no file I/O.

Scaling choices:
- Input: int16 per feature, symmetric, scale = max|x| * INPUT_HEADROOM / 32767 (or the declared
  ``input_range``; inputs beyond it saturate). The per-feature scale is folded into the first
  layer's kernel, so every LSTM row multiplies one vector of int16 activations in units of
  2**-15 and needs one accumulator.
- Weights: int8 (or int16) symmetric, one scale per gate row over [kernel; recurrent kernel].
- Bias: int32 in accumulator units; a row's scale is widened if needed so that bias + dot product
  can never overflow int32.
- Gate pre-activations: int32, Z_FRAC_BITS fractional bits (multiplier + shift per row).
- Cell: int16, power-of-two scale from the largest calibrated |c| times CELL_HEADROOM.
- Dense linear/relu outputs: int16, scale from the largest calibrated |y| times OUTPUT_HEADROOM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import fixedpoint as fp
from .float_model import forward
from .ir import GATES, DenseLayer, LSTMLayer, Model
from .qir import Q15_SCALE, QDenseLayer, QLSTMLayer, QModel

# Inputs beyond the calibrated range keep room in int16: 2x costs 1 of 15 bits. The input scale
# is folded into the first layer's rows; without an input shift, headroom H makes their input
# part H times larger and coarsens the recurrent part (digits max error 0.047 at H=1, 0.068 at
# H=2); the automatic input shift absorbs it (0.046 at H=2, input shift 1).
INPUT_HEADROOM = 2.0
CELL_HEADROOM = 1.25  # cell range beyond calibration before saturation, for 1 bit of precision
OUTPUT_HEADROOM = 1.5  # Dense linear outputs (logits, regression targets)


class QuantizeError(ValueError):
    """Calibration data or an option that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class QuantizeOptions:
    input_range: tuple[np.ndarray, np.ndarray] | None = None  # (low, high) per feature
    table_log2_entries: int = fp.DEFAULT_LOG2_ENTRIES
    weight_bits: tuple[int, ...] = (8,)  # one value for every layer, or one per layer
    # Power-of-two scale of the input columns of LSTM rows: "auto" picks it per layer on the
    # calibration data; 0 keeps one scale per row (a few instructions per unit faster).
    input_shift: str | int = "auto"

    def bits_of(self, index: int, layer_count: int) -> int:
        if len(self.weight_bits) not in (1, layer_count):
            raise QuantizeError(
                f"--weights lists {len(self.weight_bits)} layers; the model has {layer_count}"
                " (give one value for all layers, or one per layer)"
            )
        bits = self.weight_bits[0] if len(self.weight_bits) == 1 else self.weight_bits[index]
        if bits not in fp.WEIGHT_BITS:
            raise QuantizeError(f"--weights int{bits} is not supported (supported: int8, int16)")
        return bits


def check_calibration(model: Model, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise QuantizeError(f"calibration data must be floating point, got dtype {x.dtype}")
    if x.ndim != 3 or x.shape[2] != model.input_size or x.shape[0] < 1 or x.shape[1] < 1:
        expected = f"(N, {model.timesteps or 'T'}, {model.input_size})"
        raise QuantizeError(f"calibration data has shape {x.shape}; expected {expected}")
    if model.timesteps is not None and x.shape[1] != model.timesteps:
        raise QuantizeError(
            f"calibration data has {x.shape[1]} timesteps; the model takes {model.timesteps}"
        )
    if not np.all(np.isfinite(x)):
        raise QuantizeError("calibration data contains NaN or Inf")
    return x.astype(np.float64)


def input_scale(x: np.ndarray, options: QuantizeOptions) -> np.ndarray:
    if options.input_range is not None:
        low, high = (np.broadcast_to(v, x.shape[2]) for v in options.input_range)
        peak = np.maximum(np.abs(low), np.abs(high))
    else:
        peak = np.max(np.abs(x), axis=(0, 1)) * INPUT_HEADROOM
    peak = np.where(peak > 0, peak, 1.0)
    return (peak / fp.INT16_MAX).astype(np.float32)


def _row_scales(
    rows: np.ndarray,
    bias: np.ndarray,
    activation_scale: float,
    bits: int,
    row_length: int | None = None,
):
    """int8/int16 rows, their scales and the bias in accumulator units.

    The scales are widened where needed so that |bias_q| fits the accumulator headroom.
    Returns (weights, weight scale, bias_s32, accumulator scale / activation scale).
    """
    unit = fp.accumulator_unit(bits)
    headroom = fp.accumulator_headroom(row_length or rows.shape[-1], bits)
    min_scale = np.abs(bias) / (activation_scale * unit * headroom)
    weights, scale = fp.quantize_rows(rows, bits, min_scale=min_scale)
    bias_s32 = fp.quantize_bias_s32(bias, scale * activation_scale * unit)
    return weights, scale, bias_s32, scale * unit


# Largest factor a (multiplier, shift >= 1) pair holds. A larger one (a layer whose calibrated
# output is ~0 behind huge weights) changes no output: |acc| >= 1 times 2**30 already saturates
# every consumer (int16 outputs, activation tables, the softmax logit clamp), acc = 0 stays 0.
MAX_MULTIPLIER = (2**31 - 1) / 2


def _multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real = np.minimum(real, MAX_MULTIPLIER)
    pairs = [fp.quantize_multiplier(float(r)) for r in real.ravel()]
    multiplier = np.array([p.multiplier for p in pairs], dtype=np.int64).reshape(real.shape)
    shift = np.array([p.shift for p in pairs], dtype=np.int64).reshape(real.shape)
    return multiplier, shift


def cell_frac_bits(max_abs_cell: float) -> int:
    """Fractional bits of the int16 cell so that max|c| * CELL_HEADROOM fits; in [1, 15]."""
    peak = max(max_abs_cell * CELL_HEADROOM, 1e-9)
    int_bits = max(0, math.ceil(math.log2(peak)))
    return int(min(15, max(1, 15 - int_bits)))


MAX_INPUT_SHIFT = 6


def lstm_rows(layer: LSTMLayer, feature_scale: np.ndarray, input_shift: int):
    """Float gate rows (units, 4, m + n) against [x_q; h_q15] in units of 2**-15, the input
    columns divided by 2**input_shift, and the biases (units, 4)."""
    fold = np.asarray(feature_scale, np.float64)[:, None] / Q15_SCALE / 2**input_shift
    kernel = layer.kernel * fold
    rows, biases = [], []
    for k, gate in enumerate(GATES):
        cols = slice(k * layer.units, (k + 1) * layer.units)
        rows.append(np.concatenate([kernel[:, cols], layer.recurrent_kernel[:, cols]]).T)
        biases.append(layer.gate(gate)[2])
    return np.stack(rows, axis=1), np.stack(biases, axis=1)


def quantize_lstm(
    layer: LSTMLayer,
    feature_scale: np.ndarray,
    max_abs_cell: float,
    bits: int = 8,
    input_shift: int = 0,
) -> QLSTMLayer:
    """``feature_scale``: real value of one input LSB per feature (2**-15 after an LSTM)."""
    rows_f, bias_f = lstm_rows(layer, feature_scale, input_shift)
    row_length = layer.input_size * 2**input_shift + layer.units
    try:
        weights, scale, bias_s32, acc_scale = _row_scales(
            rows_f, bias_f, Q15_SCALE, bits, row_length
        )
    except ValueError as error:
        raise QuantizeError(
            f"layer '{layer.name}': {error}; use --weights int16 for this layer"
        ) from error
    multiplier, shift = _multipliers(acc_scale * Q15_SCALE * 2.0**fp.Z_FRAC_BITS)
    return QLSTMLayer(
        name=layer.name,
        input_size=layer.input_size,
        units=layer.units,
        recurrent_activation=layer.recurrent_activation,
        return_sequences=layer.return_sequences,
        weights=weights,
        bias_s32=bias_s32,
        multiplier=multiplier,
        shift=shift,
        weight_scale=scale,
        cell_frac=cell_frac_bits(max_abs_cell),
        has_bias=layer.bias is not None,
        input_shift=input_shift,
    )


def choose_input_shift(
    layer: LSTMLayer, feature_scale: np.ndarray, x: np.ndarray, h: np.ndarray
) -> int:
    """The input shift that minimizes the expected rounding noise of the gate sums.

    A row's int8 step is max(max|input part| / 2**k, max|recurrent part|) / 127; rounding noise
    of a column scales with step**2 times the power of what it multiplies: 4**k * E[x**2] for
    the input columns (in units of 2**-15), E[h**2] for the recurrent ones, both measured on the
    calibration data (x: the layer's float inputs, h: its float outputs). On the trained samples
    this picks the same shift as simulating each candidate.
    """
    m = layer.input_size
    input_power = float(np.sum(np.mean((x * Q15_SCALE / feature_scale) ** 2, axis=(0, 1))))
    hidden_power = float(np.sum(np.mean(h**2, axis=(0, 1))))
    best, best_cost = 0, np.inf
    for k in range(MAX_INPUT_SHIFT + 1):
        if m * 2**k + layer.units > fp.INT32_MAX // (fp.WEIGHT_MAX * fp.ACTIVATION_MAX):
            break
        rows, _ = lstm_rows(layer, feature_scale, k)
        step = np.maximum(np.abs(rows[..., :m]).max(-1), np.abs(rows[..., m:]).max(-1))
        cost = float(np.sum(step**2 * (4**k * input_power + hidden_power)))
        if cost < best_cost:
            best, best_cost = k, cost
    return best


def quantize_dense(
    layer: DenseLayer, in_scale: float, max_abs_output: float, bits: int = 8
) -> QDenseLayer:
    weights, scale, bias_s32, acc_scale = _row_scales(
        layer.kernel.T, layer.bias_or_zeros, in_scale, bits
    )
    if layer.activation in ("sigmoid", "tanh", "softmax"):
        out_scale = Q15_SCALE
        real = acc_scale * in_scale * 2.0**fp.Z_FRAC_BITS
    else:
        peak = max_abs_output * OUTPUT_HEADROOM
        # outputs that are all ~0 still get a scale that float32 can hold (and dequantize with)
        out_scale = (peak if peak > 1e-30 else 1e-30 if peak > 0 else 1.0) / fp.INT16_MAX
        real = acc_scale * in_scale / out_scale
    multiplier, shift = _multipliers(real)
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
    )


def quantize(model: Model, calibration: np.ndarray, options: QuantizeOptions | None = None):
    """Float IR + calibration inputs (N, T, m) -> QModel."""
    options = options or QuantizeOptions()
    x = check_calibration(model, calibration)
    _, traces = forward(model, x)
    x_scale = input_scale(x, options)
    layers: list[QLSTMLayer | QDenseLayer] = []
    feature_scale = x_scale.astype(np.float64)
    layer_input = x
    for index, (layer, trace) in enumerate(zip(model.layers, traces, strict=True)):
        bits = options.bits_of(index, len(model.layers))
        if isinstance(layer, LSTMLayer):
            max_cell = float(np.max(np.abs(trace.cell)))
            if options.input_shift == "auto" and bits == 8:  # int16 rows have the precision
                shift = choose_input_shift(layer, feature_scale, layer_input, trace.output)
            elif options.input_shift == "auto":
                shift = 0
            else:
                shift = int(options.input_shift)
            layers.append(quantize_lstm(layer, feature_scale, max_cell, bits, shift))
            layer_input = trace.output
            feature_scale = np.full(layer.units, Q15_SCALE)
        else:
            max_out = float(np.max(np.abs(trace.output)))
            qlayer = quantize_dense(layer, float(feature_scale[0]), max_out, bits)
            layers.append(qlayer)
            feature_scale = np.full(layer.units, qlayer.output_scale)
    tables = {name: fp.build_table(name, options.table_log2_entries) for name in _tables(model)}
    return QModel(
        name=model.name,
        source=model.source,
        input_size=model.input_size,
        timesteps=model.timesteps,
        input_scale=x_scale,
        output_scale=float(feature_scale[0]),
        layers=tuple(layers),
        tables=tables,
        params=model.params,
    )


def _tables(model: Model) -> list[str]:
    """Activation tables the model needs: tanh always (g gate and cell), others on demand."""
    needed = {"tanh"}
    if any(la.recurrent_activation == "sigmoid" for la in model.lstm_layers):
        needed.add("sigmoid")
    for dense in model.dense_layers:
        if dense.activation in ("sigmoid", "tanh"):
            needed.add(dense.activation)
        if dense.activation == "softmax":
            needed.add("exp")
    return sorted(needed)
