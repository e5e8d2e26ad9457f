"""LayerNormalization over the features, in integers: exact mean, variance and reciprocal
square root from fixedpoint, then a per-feature affine.

Float (Keras): y = gamma * (x - mean) / sqrt(var + epsilon) + beta over the last axis.
Integer, per timestep (``QLayerNormLayer.step``; m features):
- u_f = requantize(x_f, ...) brings every feature to one unit (the coarsest input scale over
  2**k, k as large as the bounds below allow, at most MAX_EXTRA_BITS);
- S = sum u, D_f = m * u_f - S (m times the deviation from the mean: exact, no division);
- V = sum D_f**2, v = round(V / m) + round(m**2 * epsilon / unit**2) (m**2 times var + eps),
  so (x_f - mean) / sqrt(var + eps) = D_f / sqrt(v);
- n_f = requantize(D_f, rsqrt_multiplier(v)): D_f * 2**16 / sqrt(v), Z16;
- y_f = affine_s16(n_f, gamma_f / (2**16 * out scale), round(beta_f / out scale)).
Bounds: |D| <= m * 2**(16 + k) <= 2**30 (int32) and V <= m**3 * 2**(32 + 2k) <= 2**62 (uint64),
so m <= MAX_FEATURES. Templates: templates/kinds/layer_norm/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.kinds.base import (
    FloatLayer,
    IRError,
    LayerTrace,
    QLayer,
    QuantContext,
    QuantizeError,
    check_finite,
    check_shape,
)
from lstm_embed.kinds.batch_norm import output_scale
from lstm_embed.quantize import fixedpoint as fp

MAX_EXTRA_BITS = 8  # fractional bits u gets beyond the coarsest input LSB
MAX_FEATURES = 1024  # m**3 * 2**32 <= 2**62
EPS_TERM_MAX = 2**61  # m**2 * eps in u's units, saturated (eps then dominates v anyway)
BYTES_PER_FEATURE = 4 + 1 + 4 + 1 + 4  # input multiplier, shift; gamma multiplier, shift; beta


@dataclass(frozen=True)
class LayerNormLayer(FloatLayer):
    kind: ClassVar[str] = "layer_norm"
    type_name: ClassVar[str] = "LayerNormalization"
    name: str
    input_size: int
    gamma: np.ndarray
    beta: np.ndarray
    epsilon: float
    has_scale: bool = True
    has_center: bool = True

    def __post_init__(self) -> None:
        for what in ("gamma", "beta"):
            check_shape(self.name, what, getattr(self, what), (self.input_size,))
            check_finite(self.name, what, getattr(self, what))
        if not (np.isfinite(self.epsilon) and self.epsilon >= 0):
            raise IRError(f"layer '{self.name}': epsilon must be finite and >= 0")

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def params(self) -> int:
        return self.input_size * (self.has_scale + self.has_center)

    def forward(self, x: np.ndarray) -> LayerTrace:
        mean = np.mean(x, axis=-1, keepdims=True)
        var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)
        return LayerTrace((x - mean) / np.sqrt(var + self.epsilon) * self.gamma + self.beta)

    def quantize(self, ctx: QuantContext) -> QLayerNormLayer:
        m = self.input_size
        if m > MAX_FEATURES:
            raise QuantizeError(
                f"layer '{self.name}': LayerNormalization over {m} features; at most"
                f" {MAX_FEATURES} (the integer variance would overflow 64 bits)"
            )
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (m,))
        k = extra_bits(m)
        unit = float(np.max(scale)) / 2**k
        in_multiplier, in_shift = fp.multipliers(scale / unit)
        # saturated in float first: a fine unit can make it beyond int64
        eps_term = fp.round_half_away(min(m * m * self.epsilon / unit**2, EPS_TERM_MAX)).item()
        out_scale = output_scale(float(np.max(np.abs(ctx.trace.output))))
        gamma_multiplier, gamma_shift = fp.signed_multipliers(
            self.gamma / (2.0**fp.Z_FRAC_BITS * out_scale)
        )
        beta = fp.round_half_away(np.clip(self.beta / out_scale, -fp.INT32_MAX, fp.INT32_MAX))
        return QLayerNormLayer(
            self.name, m, in_multiplier, in_shift, int(eps_term),
            gamma_multiplier, gamma_shift, beta, out_scale,
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        arrays = self.has_scale + self.has_center
        return {"type": "LayerNormalization", "activation": None, "units": None,
                "params_formula": f"{arrays}*{self.input_size}"}  # fmt: skip

    def flash_bytes(self, bits: int) -> int:
        return BYTES_PER_FEATURE * self.input_size

    def dequantized(self, qlayer: QLayerNormLayer, feature_scale: np.ndarray) -> LayerNormLayer:
        return self  # gamma and beta are not rounded to weights


def extra_bits(m: int) -> int:
    """The largest k <= MAX_EXTRA_BITS with m * 2**(16 + k) <= 2**30 and m**3 * 4**k <= 2**30."""
    for k in range(MAX_EXTRA_BITS, -1, -1):
        if m * 2 ** (16 + k) <= 2**30 and m**3 * 4**k <= 2**30:
            return k
    raise QuantizeError(f"LayerNormalization over {m} features: at most {MAX_FEATURES}")


@dataclass(frozen=True)
class QLayerNormLayer(QLayer):
    """Output int16 with one scale; see the module docstring for the arithmetic."""

    kind: ClassVar[str] = "layer_norm"
    template: ClassVar[str] = "kinds/layer_norm/layer.c.j2"
    name: str
    input_size: int
    in_multiplier: np.ndarray  # (m,) input LSB -> the common unit
    in_shift: np.ndarray
    eps_term: int  # round(m**2 * epsilon / unit**2), saturated at EPS_TERM_MAX
    gamma_multiplier: np.ndarray  # (m,) signed, Z16 -> output LSB
    gamma_shift: np.ndarray
    beta: np.ndarray  # (m,) int32, output LSBs
    output_scale: float

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.full(self.input_size, self.output_scale)

    @property
    def macs(self) -> int:
        return 3 * self.input_size

    @property
    def weight_bits(self) -> int:
        return 8  # no weight rows; the report's column needs a value

    def normalized(self, x_q: np.ndarray) -> np.ndarray:
        """(x - mean) / sqrt(var + eps) per feature, Z16 (int64 arrays, (N, m))."""
        m = self.input_size
        u = fp.requantize(x_q, self.in_multiplier, self.in_shift)
        deviation = m * u - np.sum(u, axis=-1, keepdims=True)
        squares = np.sum(deviation * deviation, axis=-1)
        v = np.clip(fp.div_round_positive(squares, m) + self.eps_term, 1, fp.RSQRT_MAX)
        multiplier, shift = fp.rsqrt_multiplier(v)
        return fp.requantize(deviation, multiplier[..., None], shift[..., None])

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        n = self.normalized(x_q)
        return fp.affine_s16(n, self.gamma_multiplier, self.gamma_shift, self.beta), None

    def uses(self) -> set[str]:
        return {"affine", "rsqrt"}

    def scratch_width(self) -> int:
        return self.input_size

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "output_scale": f"{self.output_scale:.6g}",
            "in_multiplier": cformat.c_int_array(self.in_multiplier, per_line=8),
            "in_shift": cformat.c_int_array(self.in_shift, per_line=16),
            "eps_term": self.eps_term,
            "rsqrt_max": fp.RSQRT_MAX,
            "gamma_multiplier": cformat.c_int_array(self.gamma_multiplier, per_line=8),
            "gamma_shift": cformat.c_int_array(self.gamma_shift, per_line=16),
            "beta": cformat.c_int_array(self.beta, per_line=8),
        }

    def format(self) -> str:
        return f"normalized Z16, out int16 x {self.output_scale:.3g}"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": BYTES_PER_FEATURE * self.input_size}
