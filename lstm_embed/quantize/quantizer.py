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
- Each layer kind quantizes itself (``FloatLayer.quantize``): LSTM cells get a power-of-two
  scale from the largest calibrated |c|; Dense linear/relu outputs an int16 scale from the
  largest calibrated |y| (see lstm_embed/kinds/).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import Model
from lstm_embed.kinds.base import Diverges, QuantContext, QuantizeError
from lstm_embed.kinds.embedding import id_features
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding
from lstm_embed.quantize.calibration import LayerRounding
from lstm_embed.quantize.qir import QModel

# Inputs beyond the calibrated range keep room in int16: 2x costs 1 of 15 bits. The input scale
# is folded into the first layer's rows; without an input shift, headroom H makes their input
# part H times larger and coarsens the recurrent part (digits max error 0.047 at H=1, 0.068 at
# H=2); the automatic input shift absorbs it (0.046 at H=2, input shift 1).
INPUT_HEADROOM = 2.0

__all__ = ["QuantizeError", "QuantizeOptions", "quantize"]


@dataclass(frozen=True)
class QuantizeOptions:
    input_range: tuple[np.ndarray, np.ndarray] | None = None  # (low, high) per feature
    table_log2_entries: int | None = None  # None: fp.default_log2_entries of the weights
    weight_bits: tuple[int, ...] = (8,)  # one value for every layer, or one per layer
    # Power-of-two scale of the input columns of LSTM rows: "auto" picks it per layer on the
    # calibration data; 0 keeps one scale per row (a few instructions per unit faster).
    input_shift: str | int = "auto"
    # Weight rounding (lstm_embed.rounding): nearest, gptq (error feedback against the
    # calibration data, bias correction) or auto (gptq when it does no worse than nearest on
    # data it was not fitted on: the validation data, else each calibration sequence held out
    # once; calibration.LayerRounding).
    rounding: str = rounding.AUTO
    # --weights auto: convert chooses int8 or int16 per layer (weight_choice.choose), the
    # least flash whose error stays under this percent of the output range; None: weight_bits
    weights_auto_max_error: float | None = None

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

    def log2_table_entries(self, layer_count: int) -> int:
        """The activation table's size: as given, else by the weights' widths."""
        if self.table_log2_entries is not None:
            return self.table_log2_entries
        return fp.default_log2_entries(self.bits_of(i, layer_count) for i in range(layer_count))


def check_calibration(model: Model, x: np.ndarray) -> np.ndarray:
    first = model.layers[0]
    if first.takes_ids:  # (N, T) integer ids -> (N, T, 1) float features holding them
        x = id_features(x, first.input_dim, "calibration data")
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise QuantizeError(f"calibration data must be floating point, got dtype {x.dtype}")
    if x.ndim > 3:  # (N, T, F, C) frames (Conv2D): F * C features, row-major as the C takes them
        x = x.reshape(*x.shape[:2], -1)
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


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite(layer, outputs: np.ndarray) -> None:
    """Refuse a layer whose float outputs overflow float32 on the calibration data (an
    unbounded activation over huge weights): Keras' own predict is inf or NaN there."""
    with np.errstate(invalid="ignore"):
        peak = float(np.max(np.abs(outputs))) if outputs.size else 0.0
    if not peak <= FLOAT32_MAX:
        raise Diverges(
            f"layer {layer.name!r}: on the calibration data its outputs reach {peak:.3g},"
            f" beyond float32's {FLOAT32_MAX:.3g} (Keras computes inf or NaN here); the model"
            " diverges on these inputs: check its weights and the calibration data's scale"
        )


def input_scale(x: np.ndarray, options: QuantizeOptions) -> np.ndarray:
    if options.input_range is not None:
        low, high = (np.broadcast_to(v, x.shape[2]) for v in options.input_range)
        peak = np.maximum(np.abs(low), np.abs(high))
    else:
        peak = np.max(np.abs(x), axis=(0, 1)) * INPUT_HEADROOM
    peak = np.where(peak > 0, peak, 1.0)
    return (peak / fp.INT16_MAX).astype(np.float32)


def quantize(
    model: Model,
    calibration: np.ndarray,
    options: QuantizeOptions | None = None,
    rounding_record: list | None = None,
    validation: np.ndarray | None = None,
):
    """Float IR + calibration inputs (N, T, m) -> QModel; each layer quantizes itself with the
    ranges its float trace saw and the feature scale of the layer before it, its weights
    rounded as ``options.rounding`` says (``calibration.LayerRounding``, which
    ``rounding_record`` receives when given; ``validation``: inputs on which auto decides)."""
    options = options or QuantizeOptions()
    x = check_calibration(model, calibration)
    with np.errstate(over="ignore", invalid="ignore"):  # refused just below, naming the layer
        _, traces = forward(model, x)
    for layer, trace in zip(model.layers, traces, strict=True):
        check_finite(layer, layer.chain_output(trace))
    # ids (an Embedding first) keep scale 1: int16 x_q is the id itself
    ids = model.layers[0].takes_ids
    x_scale = (
        np.ones(x.shape[2], np.float32)
        if ids
        else model.layers[0].shared_input_scale(input_scale(x, options))
    )
    inv_scale = (1.0 / x_scale.astype(np.float64)).astype(np.float32)  # as QModel has it
    x_val = None if validation is None else check_calibration(model, validation)
    rounder = LayerRounding.start(model, x, inv_scale, traces, options, x_val)
    layers = []
    feature_scale = x_scale.astype(np.float64)
    layer_input = x
    for index, (layer, trace) in enumerate(zip(model.layers, traces, strict=True)):
        bits = options.bits_of(index, len(model.layers))
        ctx = QuantContext(feature_scale, layer_input, trace, bits, options)
        qlayer = rounder.quantize(index, layer, ctx)
        layers.append(qlayer)
        layer_input = layer.chain_output(trace)
        feature_scale = qlayer.output_feature_scale
    layers = rounder.finish(layers)
    if rounding_record is not None:
        rounding_record.append(rounder)
    tables = {
        name: fp.build_table(name, options.log2_table_entries(len(model.layers)))
        # functions -> tables (sigmoid reads tanh's); tanh always: the emitter's lookups use it
        for name in sorted({"tanh"} | {fp.TABLE_OF[f] for la in layers for f in la.tables_needed()})
    }
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
