"""SimpleRNN: Keras config and weights, float forward pass, quantization, integer reference, C.

Keras computes h' = activation(x W + h U + b) with activation tanh (default), relu or linear.
The rows of the integer layer are the LSTM's, one per unit instead of four: [W; U] against
[x_q; h_q] with the input columns' own power-of-two scale (``recurrent.py`` holds the shared
row quantization and input-shift choice). The state is Q0.15 for tanh; relu and linear states
are unbounded, so they get an int16 format with one scale per layer calibrated like a Dense
layer's linear output, and a clear error when no such format can hold the state (it is not
finite, or it keeps growing over the calibration window). Templates:
templates/kinds/simple_rnn/layer.c.j2 (portable C on every core).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    QuantizeError,
    check_finite,
    check_shape,
)
from lstm_embed.kinds.common import activation_function, weight_format
from lstm_embed.kinds.recurrent import (
    choose_input_shift,
    effective_row_length,
    input_fold,
    quantize_gate_rows,
    resolve_input_shift,
)
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding

ACTIVATIONS = ("tanh", "relu", "linear")
# relu/linear states: range beyond the calibrated max before saturation (Dense's linear outputs
# use the same 1.5: half a bit of precision for inputs somewhat beyond calibration)
STATE_HEADROOM = 1.5
# A relu/linear state whose max over the calibration window's last step exceeds this many times
# its max over the first half grows geometrically: an int16 format sized on these windows
# saturates on longer ones, and early steps keep only a few of its 15 bits.
STATE_GROWTH_LIMIT = 2.0**8
# Beyond this the scale (max |h| / 32767) and the next layer's folded weights leave float32
MAX_STATE = 1e30


# ---------------------------------------------------------------------------------------------
# Float IR layer


@dataclass(frozen=True)
class SimpleRNNLayer(FloatLayer):
    kind: ClassVar[str] = "simple_rnn"
    type_name: ClassVar[str] = "SimpleRNN"
    recurrent: ClassVar[bool] = True
    state_names: ClassVar[tuple[str, ...]] = ("h",)  # return_state=True: [out, h]

    def final_state(self, trace: LayerTrace) -> tuple[np.ndarray, ...]:
        return (trace.output[:, -1],)

    name: str
    input_size: int
    units: int
    kernel: np.ndarray  # (input_size, units)
    recurrent_kernel: np.ndarray  # (units, units)
    bias: np.ndarray | None  # (units,)
    activation: str = "tanh"
    return_sequences: bool = False

    def __post_init__(self) -> None:
        n, m = self.units, self.input_size
        if n < 1 or m < 1:
            raise IRError(f"layer '{self.name}': units and input size must be >= 1")
        check_shape(self.name, "kernel", self.kernel, (m, n))
        check_shape(self.name, "recurrent kernel", self.recurrent_kernel, (n, n))
        if self.bias is not None:
            check_shape(self.name, "bias", self.bias, (n,))
        if self.activation not in ACTIVATIONS:
            raise IRError(
                f"layer '{self.name}': activation '{self.activation}' is not supported"
                f" (supported: {', '.join(ACTIVATIONS)})"
            )
        check_finite(self.name, "kernel", self.kernel)
        check_finite(self.name, "recurrent_kernel", self.recurrent_kernel)
        if self.bias is not None:
            check_finite(self.name, "bias", self.bias)

    @property
    def params(self) -> int:
        bias = self.units if self.bias is not None else 0
        return self.units * (self.input_size + self.units) + bias

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def keeps_timesteps(self) -> bool:
        return self.return_sequences

    @property
    def bias_or_zeros(self) -> np.ndarray:
        return self.bias if self.bias is not None else np.zeros(self.units)

    def forward(self, x: np.ndarray) -> LayerTrace:
        """x (N, T, m) -> trace with h (N, T, n) and the pre-activations z for every step."""
        act = activation_function(self.activation)
        h = np.zeros((x.shape[0], self.units))
        hs, zs = [], []
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging state: checked later
            for t in range(x.shape[1]):
                z = x[:, t] @ self.kernel + h @ self.recurrent_kernel + self.bias_or_zeros
                h = act(z)
                hs.append(h)
                zs.append(z)
        return LayerTrace(np.stack(hs, axis=1), gate_preactivations={"z": np.stack(zs, axis=1)})

    def chain_output(self, trace: LayerTrace) -> np.ndarray:
        return trace.output if self.return_sequences else trace.output[:, -1]

    def state_scale(self, h: np.ndarray) -> float:
        """Real value of one LSB of the int16 state: Q0.15 for tanh; for relu and linear the
        calibrated max |h| (times STATE_HEADROOM) over 32767, or a QuantizeError saying why no
        int16 format holds the state."""
        if self.activation == "tanh":
            return Q15_SCALE
        what = f"layer '{self.name}' (SimpleRNN, activation {self.activation})"
        magnitude = np.abs(h)
        if not np.all(np.isfinite(magnitude)) or float(np.max(magnitude)) > MAX_STATE:
            raise QuantizeError(
                f"{what}: the state diverges on the calibration data (max |h|"
                f" {np.max(magnitude):.3g}); an unbounded state has no fixed-point format (use"
                " activation tanh)"
            )
        steps = h.shape[1]
        if steps >= 4:
            early = float(np.max(magnitude[:, : steps // 2]))
            last = float(np.max(magnitude[:, -1]))
            if early > 0 and last > STATE_GROWTH_LIMIT * early:
                raise QuantizeError(
                    f"{what}: the state grows {last / early:.3g}-fold over the calibration window"
                    f" (max |h| {early:.3g} in its first half, {last:.3g} at its last step); an"
                    " int16 format sized on it saturates on longer windows and leaves early steps"
                    " few bits (use activation tanh, or a model whose state stays bounded)"
                )
        peak = float(np.max(magnitude)) * STATE_HEADROOM
        return (max(peak, 1e-30) if peak > 0 else 1.0) / fp.INT16_MAX

    def quantize(self, ctx: QuantContext) -> QSimpleRNNLayer:
        state_scale = self.state_scale(ctx.trace.output)
        hidden = ctx.trace.output * (Q15_SCALE / state_scale)  # what the recurrent columns multiply
        shift = resolve_input_shift(
            ctx,
            lambda: choose_input_shift(
                lambda k: simple_rnn_rows(self, ctx.feature_scale, state_scale, k)[0],
                self.input_size,
                self.units,
                ctx.feature_scale,
                ctx.layer_input,
                hidden,
            ),
        )
        method = getattr(ctx, "rounding", "nearest")
        stats = None if method == "nearest" else self._input_stats(ctx, state_scale, shift)
        return quantize_simple_rnn(
            self, ctx.feature_scale, state_scale, ctx.bits, shift, method, stats
        )

    def _input_stats(self, ctx: QuantContext, state_scale: float, input_shift: int) -> Any:
        """Moments of what the rows multiply: [x_q * 2**(k - 15); h_{t-1} in the rows' units],
        x_q the integer input the quantized layers before this one give (as lstm.py's)."""

        # only the sequences auto fits on: the held-out ones judge the result
        x_q = np.asarray(ctx.fit_part(ctx.quantized_input), np.float64)
        h = self.forward(x_q * ctx.feature_scale).output * (Q15_SCALE / state_scale)
        h_prev = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
        return rounding.InputStats.of(
            np.concatenate([x_q * 2.0 ** (input_shift - 15), h_prev], axis=-1)
        )

    def summary(self) -> dict[str, Any]:
        bias = "+1" if self.bias is not None else ""
        return {
            "type": "SimpleRNN",
            "activation": self.activation,
            "units": self.units,
            "params_formula": f"{self.units}*({self.input_size}+{self.units}{bias})",
        }

    def flash_bytes(self, bits: int) -> int:
        n = self.units
        return n * (self.input_size + n) * bits // 8 + n * fp.BIAS_ROW_BYTES

    def dequantized(self, qlayer: QSimpleRNNLayer, feature_scale: np.ndarray) -> SimpleRNNLayer:
        m = self.input_size
        rows = qlayer.weights * qlayer.weight_scale[:, None]  # (n, m + n)
        rows[:, :m] *= Q15_SCALE / np.asarray(feature_scale)[None, :] * 2**qlayer.input_shift
        rows[:, m:] *= Q15_SCALE / qlayer.state_scale
        unit = fp.accumulator_unit(qlayer.weight_bits, qlayer.effective_row_length)
        bias = qlayer.bias_s32 * qlayer.weight_scale * unit * Q15_SCALE
        return SimpleRNNLayer(
            self.name,
            m,
            self.units,
            rows[:, :m].T.copy(),
            rows[:, m:].T.copy(),
            bias if self.bias is not None else None,
            self.activation,
            self.return_sequences,
        )


# ---------------------------------------------------------------------------------------------
# Quantization


def simple_rnn_rows(
    layer: SimpleRNNLayer, feature_scale: np.ndarray, state_scale: float, input_shift: int
) -> tuple[np.ndarray, np.ndarray]:
    """Float rows (units, 1, m + n) against [x_q; h_q] in units of 2**-15 (the input columns
    divided by 2**input_shift, the state's scale folded into the recurrent ones), and the
    biases (units, 1)."""
    kernel = layer.kernel * input_fold(feature_scale, input_shift)
    recurrent = layer.recurrent_kernel * (state_scale / Q15_SCALE)
    rows = np.concatenate([kernel, recurrent]).T[:, None, :]
    return rows, layer.bias_or_zeros[:, None]


def quantize_simple_rnn(
    layer: SimpleRNNLayer,
    feature_scale: np.ndarray,
    state_scale: float,
    bits: int = 8,
    input_shift: int = 0,
    method: str = "nearest",
    stats: Any = None,
) -> QSimpleRNNLayer:
    """Rows as the LSTM's gates (``recurrent.quantize_gate_rows``); tanh layers requantize to
    Z_FRAC_BITS for the table, relu and linear ones straight to the state's int16 format."""
    rows_f, bias_f = simple_rnn_rows(layer, feature_scale, state_scale, input_shift)
    row_length = effective_row_length(layer.input_size, layer.units, input_shift)
    weights, scale, bias_s32, multiplier, shift = quantize_gate_rows(
        rows_f, bias_f, bits, row_length
    )
    if method != "nearest":  # the same scales, the weights rounded against the data
        weights, bias_s32 = rounding.rounded_weights(
            rows_f, bias_f, scale, Q15_SCALE, bits, method, stats, layer.bias is not None,
            row_length,
        )  # fmt: skip
    if layer.activation != "tanh":
        acc_scale = scale * fp.accumulator_unit(bits, row_length)
        multiplier, shift = fp.multipliers(acc_scale * Q15_SCALE / state_scale)
    return QSimpleRNNLayer(
        name=layer.name,
        input_size=layer.input_size,
        units=layer.units,
        activation=layer.activation,
        return_sequences=layer.return_sequences,
        weights=weights[:, 0],
        bias_s32=bias_s32[:, 0],
        multiplier=multiplier[:, 0],
        shift=shift[:, 0],
        weight_scale=scale[:, 0],
        state_scale=float(state_scale),
        has_bias=layer.bias is not None,
        input_shift=input_shift,
    )


# ---------------------------------------------------------------------------------------------
# Quantized layer and its integer reference


@dataclass
class SimpleRNNState:
    h_q15: np.ndarray  # (N, units), the state's int16 format (Q0.15 for tanh)


@dataclass
class SimpleRNNStepTrace:
    """One step of one SimpleRNN layer (for trace and mismatch reports)."""

    layer: str
    z: np.ndarray  # (N, units) requantized row sums: Z_FRAC_BITS (tanh) or the state's format
    h_q15: np.ndarray  # (N, units), the state's format (the name LSTM and GRU traces share)


@dataclass(frozen=True)
class QSimpleRNNLayer(QLayer):
    """Formats: input int16 (folded scale), state int16 (Q0.15 for tanh, ``state_scale`` for
    relu and linear), row sums int32 requantized to Z_FRAC_BITS (tanh) or the state's format."""

    kind: ClassVar[str] = "simple_rnn"
    type_name: ClassVar[str] = "SimpleRNN"
    recurrent: ClassVar[bool] = True
    state_names: ClassVar[tuple[str, ...]] = ("h",)

    def final_state(self, state: Any) -> tuple[np.ndarray, ...]:
        return (state.h_q15,)

    def state_scales(self) -> tuple[np.ndarray, ...]:
        return (self.output_feature_scale,)

    def state_members(self) -> tuple[str, ...]:
        return ("h_q15",)

    template: ClassVar[str] = "kinds/simple_rnn/layer.c.j2"
    name: str
    input_size: int
    units: int
    activation: str
    return_sequences: bool
    weights: np.ndarray  # int8 or int16 (units, input_size + units)
    bias_s32: np.ndarray  # (units,)
    multiplier: np.ndarray  # (units,)
    shift: np.ndarray  # (units,)
    weight_scale: np.ndarray  # (units,) float, real weight = q * weight_scale (after folding)
    state_scale: float  # real value of one LSB of the state (2**-15 for tanh)
    has_bias: bool = True
    input_shift: int = 0  # the input columns' partial sum is multiplied by 2**input_shift

    def __post_init__(self) -> None:
        assert self.weights.shape == (self.units, self.input_size + self.units)
        assert self.weights.dtype in (np.int8, np.int16)
        assert self.bias_s32.shape == (self.units,)

    @property
    def weight_bits(self) -> int:
        return self.weights.dtype.itemsize * 8

    @property
    def row_length(self) -> int:
        return self.input_size + self.units

    @property
    def macs(self) -> int:
        return self.units * self.row_length

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.full(self.units, self.state_scale)

    # -- integer reference (the C equals it bit for bit) --

    def initial_state(self, batch: int) -> SimpleRNNState:
        return SimpleRNNState(np.zeros((batch, self.units), np.int64))

    def step(self, x_q: np.ndarray, state: SimpleRNNState, tables: dict) -> tuple[np.ndarray, Any]:
        w = self.weights.astype(np.int64)
        m = self.input_size
        dot_x = np.asarray(x_q, np.int64) @ w[:, :m].T
        dot = dot_x * (1 << self.input_shift) + state.h_q15 @ w[:, m:].T
        acc = fp.accumulate(dot, self.bias_s32, self.weight_bits, self.effective_row_length)
        z = fp.requantize(acc, self.multiplier, self.shift)
        if self.activation == "tanh":
            h = fp.tanh_q15(z, tables["tanh"])
        else:
            h = fp.saturate_s16(z)
            if self.activation == "relu":
                h = np.maximum(h, 0)
        state.h_q15 = h
        return h, SimpleRNNStepTrace(self.name, z, h)

    def tables_needed(self) -> set[str]:
        return {"tanh"} if self.activation == "tanh" else set()

    # -- emitter --

    def uses(self) -> set[str]:
        # tanh is read outside the LSTM kernels' own table layouts; int16 rows sum in int64
        flags = {"table_tanh"} if self.activation == "tanh" else set()
        if self.blocked:
            flags.add("blocked_rows")  # ops.c.j2's blocked row sum of long int8 rows
        return flags | ({"wide_rows"} if self.weight_bits == 16 else set())

    @property
    def effective_row_length(self) -> int:
        return effective_row_length(self.input_size, self.units, self.input_shift)

    @property
    def acc_shift(self) -> int:
        """Right shift from the exact row sum to the int32 accumulator (0: one int32 sum)."""
        return fp.accumulator_shift(self.weight_bits, self.effective_row_length)

    @property
    def blocked(self) -> bool:
        """int8 rows too long for one int32 sum: int32 sums per block, added in int64."""
        return self.weight_bits == 8 and self.acc_shift > 0

    @property
    def state_format(self) -> str:
        if self.activation == "tanh":
            return "Q0.15"
        return f"int16 x {self.state_scale:.6g}"

    def state_fields(self) -> list[dict[str, Any]]:
        label = cformat.c_comment(self.name)
        return [
            {
                "type": "int16_t",
                "name": "h_q15",  # the name every recurrent kind's output state has
                "size": self.units,
                "comment": f"'{label}' hidden state, {self.state_format}",
            }
        ]

    def scratch_width(self) -> int:
        return self.units  # the new state while the layer updates

    @property
    def state_bytes(self) -> int:
        return 2 * self.units

    def context(self, index: Any) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "units": self.units,
            "row_length": self.row_length,
            "activation": self.activation,
            "return_sequences": self.return_sequences,
            "has_bias": self.has_bias,
            "state_format": self.state_format,
            "weights": cformat.c_int_array(self.weights, per_line=self.row_length),
            "weights_count": self.weights.size,
            **weight_format(self.weight_bits),
            "bias": cformat.c_int_array(self.bias_s32, per_line=8),
            "multiplier": cformat.c_int_array(self.multiplier, per_line=8),
            "shift": cformat.c_int_array(self.shift, per_line=16),
            "input_shift": self.input_shift,
            "acc_shift": self.acc_shift,
            "blocked": self.blocked,
        }

    def format(self) -> str:
        return f"w int{self.weight_bits}, h {self.state_format}"

    def flash_bytes(self) -> dict[str, int]:
        weights = self.units * self.row_length * self.weight_bits // 8
        return {"weights": weights, "biases": self.units * fp.BIAS_ROW_BYTES}
