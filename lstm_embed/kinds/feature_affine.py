"""A per-feature affine y = a * x + b that the model applies to its input features or between
layers (Keras' Normalization and Rescaling): folded into the next layer where that is exact,
else the integer affine of ``batch_norm.QAffineLayer``.

Folds (exact in float, the folded layer then quantized like any other):
- into the next Dense, LSTM, GRU or SimpleRNN: the input enters those only through x @ W + c,
  so W' = a[:, None] * W and c' = c + b @ W (GRU: the input bias row when reset_after);
- into the next Conv1D with padding "valid" (or kernel_size 1): every tap is a real input,
  so the same with each tap's rows (with zero padding the padded taps are zeros after the
  affine, where the folded bias would add b @ W: not exact, so those stay affines);
- into a previous Dense with a linear activation: W' = W * a, c' = c * a + b.
Elsewhere (between two recurrent layers, before a causal Conv1D, last) it stays in the chain as
the integer affine y_q = sat16(requantize(x_q, A, s) + B) per feature.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds.base import FloatLayer, LayerTrace, QuantContext, check_finite, check_shape
from lstm_embed.kinds.batch_norm import AFFINE_BYTES, QAffineLayer, output_scale
from lstm_embed.kinds.conv1d import Conv1DLayer
from lstm_embed.kinds.dense import DenseLayer
from lstm_embed.kinds.gru import GRULayer
from lstm_embed.kinds.lstm import LSTMLayer
from lstm_embed.kinds.simple_rnn import SimpleRNNLayer
from lstm_embed.quantize import fixedpoint as fp


@dataclass(frozen=True)
class FeatureAffineLayer(FloatLayer):
    """y = scale * x + offset per feature; ``type_name`` the Keras class it was read from,
    ``keras_params`` Keras' count_params() of it (inspect's column)."""

    kind: ClassVar[str] = "feature_affine"
    name: str
    input_size: int
    scale: np.ndarray  # (input_size,)
    offset: np.ndarray  # (input_size,)
    type_name: str = "Normalization"
    keras_params: int = 0

    def __post_init__(self) -> None:
        for what in ("scale", "offset"):
            check_shape(self.name, what, getattr(self, what), (self.input_size,))
            check_finite(self.name, what, getattr(self, what))

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def params(self) -> int:
        return self.keras_params

    def forward(self, x: np.ndarray) -> LayerTrace:
        return LayerTrace(x * self.scale + self.offset)

    def summary(self) -> dict[str, Any]:
        return {"type": self.type_name, "activation": None, "units": None,
                "params_formula": str(self.keras_params)}  # fmt: skip

    def flash_bytes(self, bits: int) -> int:
        return AFFINE_BYTES * self.input_size  # when it stays in the chain (not folded)

    def quantize(self, ctx: QuantContext) -> QAffineLayer:
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        out_scale = output_scale(float(np.max(np.abs(ctx.trace.output))))
        multiplier, shift = fp.signed_multipliers(self.scale * scale / out_scale)
        offset = fp.round_half_away(np.clip(self.offset / out_scale, -fp.INT32_MAX, fp.INT32_MAX))
        return QAffineLayer(
            self.name, self.input_size, multiplier, shift, offset, out_scale, self.type_name
        )

    def dequantized(self, qlayer: QAffineLayer, feature_scale: np.ndarray) -> FeatureAffineLayer:
        return self  # its constants are not weights of the rounding budget


def _into_next(affine: FeatureAffineLayer, layer: FloatLayer) -> FloatLayer | None:
    """``layer`` with ``affine`` folded into its input, or None where that is not exact."""
    a, b = affine.scale, affine.offset
    if isinstance(layer, (DenseLayer, LSTMLayer, GRULayer, SimpleRNNLayer)):  # not the wrapped
        kernel = layer.kernel  # (m, k)
        shift = b @ kernel
        bias = layer.bias
        if isinstance(layer, GRULayer) and layer.reset_after:
            bias = np.zeros((2, kernel.shape[1])) if bias is None else bias.copy()
            bias[0] = bias[0] + shift
        else:
            bias = shift if bias is None else bias + shift
        return replace(layer, kernel=a[:, None] * kernel, bias=bias)
    if isinstance(layer, Conv1DLayer) and (layer.padding == "valid" or layer.kernel_size == 1):
        kernel = layer.kernel  # (K, m, filters)
        shift = np.einsum("m,kmf->f", b, kernel)
        bias = shift if layer.bias is None else layer.bias + shift
        return replace(layer, kernel=a[None, :, None] * kernel, bias=bias)
    return None


def fold(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    """The chain with every per-feature affine folded into a neighbour where that is exact;
    the others stay in the chain as integer affines."""
    out: list[FloatLayer] = []
    pending: FeatureAffineLayer | None = None
    for layer in layers:
        if pending is not None:
            folded = _into_next(pending, layer)
            if folded is None:
                out.append(pending)
            else:
                layer = folded
            pending = None
        if isinstance(layer, FeatureAffineLayer):
            previous = out[-1] if out else None
            if (
                previous is not None
                and previous.kind == "dense"
                and previous.activation == "linear"
            ):
                a, b = layer.scale, layer.offset
                out[-1] = replace(previous, kernel=previous.kernel * a,
                                  bias=previous.bias_or_zeros * a + b)  # fmt: skip
            elif isinstance(previous, FeatureAffineLayer):
                pending = combine(out.pop(), layer)  # may fold into the next layer as one
            else:
                pending = layer
            continue
        out.append(layer)
    if pending is not None:
        out.append(pending)
    return out, []


def combine(first: FeatureAffineLayer, second: FeatureAffineLayer) -> FeatureAffineLayer:
    """Two affines in a row as one (Normalization then Rescaling): exact in float."""
    return replace(
        first,
        scale=second.scale * first.scale,
        offset=second.scale * first.offset + second.offset,
        keras_params=first.keras_params + second.keras_params,
    )
