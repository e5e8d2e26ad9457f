"""LSTM: Keras config and weights, float forward pass, quantization, integer reference, C context.

Keras' gate order (i, f, c, o) is stated once here (``GATES``); weights are split into gates
only through ``LSTMLayer.gate``. Templates: templates/kinds/lstm/ (the layer, its call, and the
optimized kernels laid out by ``lstm_embed.emit.layouts.lstm``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.layouts import lstm as layouts
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
from lstm_embed.kinds.common import activation_function, weight_format
from lstm_embed.kinds.recurrent import (
    ACCEPTED_RECURRENT_ACTIVATIONS,
    RECURRENT_ACTIVATIONS,
    STATE_ACTIVATIONS,
    QStateActivation,
    StateActivation,
    quantize_gate_rows,
    resolve_input_shift,
    state_activation,
    state_frac_bits,
)
from lstm_embed.kinds.recurrent import choose_input_shift as choose_rows_input_shift
from lstm_embed.kinds.recurrent import recurrent_activation as recurrent_activation_q15
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding

GATES = ("i", "f", "g", "o")  # Keras order: input, forget, cell candidate ("c" in Keras), output
CELL_HEADROOM = 1.25  # cell range beyond calibration before saturation, for 1 bit of precision


# ---------------------------------------------------------------------------------------------
# Float IR layer


@dataclass(frozen=True)
class LSTMLayer(StateActivation, FloatLayer):
    kind: ClassVar[str] = "lstm"
    type_name: ClassVar[str] = "LSTM"
    recurrent: ClassVar[bool] = True
    state_names: ClassVar[tuple[str, ...]] = ("h", "c")  # return_state=True: [out, h, c]

    def final_state(self, trace: LayerTrace) -> tuple[np.ndarray, ...]:
        return trace.output[:, -1], trace.cell[:, -1]

    name: str
    input_size: int
    units: int
    kernel: np.ndarray  # (input_size, 4*units), Keras layout
    recurrent_kernel: np.ndarray  # (units, 4*units)
    bias: np.ndarray | None  # (4*units,) or None when use_bias=False
    recurrent_activation: str = "sigmoid"
    return_sequences: bool = False
    # a constant state every sequence starts from (ONNX initial_h / initial_c); None: zeros
    initial_h: np.ndarray | None = None  # (units,)
    initial_c: np.ndarray | None = None  # (units,)
    # of the cell candidate and of h = o * act(c): tanh (h in Q0.15), relu or linear (the cell
    # and h get int16 formats calibrated on the data, and the layer runs the reference kernel)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        n, m = self.units, self.input_size
        if self.activation not in STATE_ACTIVATIONS:
            raise IRError(
                f"layer '{self.name}': activation '{self.activation}' is not supported"
                f" (supported: {', '.join(STATE_ACTIVATIONS)})"
            )
        for what, state in (("initial_h", self.initial_h), ("initial_c", self.initial_c)):
            if state is not None:
                check_shape(self.name, what, state, (n,))
                check_finite(self.name, what, state)
        bounded = self.activation == "tanh"
        if bounded and self.initial_h is not None and np.max(np.abs(self.initial_h)) >= 1.0:
            raise IRError(
                f"layer '{self.name}': initial_h outside (-1, 1), which no LSTM output reaches"
                " (supported: |h0| < 1)"
            )
        if n < 1 or m < 1:
            raise IRError(f"layer '{self.name}': units and input size must be >= 1")
        # shapes first: a config may declare any number of units, the weights are what is real
        check_shape(self.name, "kernel", self.kernel, (m, 4 * n))
        check_shape(self.name, "recurrent kernel", self.recurrent_kernel, (n, 4 * n))
        if self.bias is not None:
            check_shape(self.name, "bias", self.bias, (4 * n,))
        if self.recurrent_activation not in ACCEPTED_RECURRENT_ACTIVATIONS:
            raise IRError(
                f"layer '{self.name}': recurrent_activation '{self.recurrent_activation}' is not"
                f" supported (supported: {', '.join(RECURRENT_ACTIVATIONS)})"
            )
        check_finite(self.name, "kernel", self.kernel)
        check_finite(self.name, "recurrent_kernel", self.recurrent_kernel)
        if self.bias is not None:
            check_finite(self.name, "bias", self.bias)

    @property
    def params(self) -> int:
        bias = 4 * self.units if self.bias is not None else 0
        return 4 * self.units * (self.input_size + self.units) + bias

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def keeps_timesteps(self) -> bool:
        return self.return_sequences

    def gate(self, gate: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kernel (m, n), recurrent kernel (n, n), bias (n,)) of one gate."""
        k = GATES.index(gate)
        cols = slice(k * self.units, (k + 1) * self.units)
        bias = self.bias[cols] if self.bias is not None else np.zeros(self.units)
        return self.kernel[:, cols], self.recurrent_kernel[:, cols], bias

    def forward(self, x: np.ndarray) -> LayerTrace:
        """x (N, T, m) -> trace with h (N, T, n) for every step."""
        batch, steps, _ = x.shape
        n = self.units
        act = activation_function(self.recurrent_activation)
        state_act = activation_function(self.activation)
        bias = self.bias if self.bias is not None else np.zeros(4 * n)
        h = np.zeros((batch, n)) + (0.0 if self.initial_h is None else self.initial_h)
        c = np.zeros((batch, n)) + (0.0 if self.initial_c is None else self.initial_c)
        hs, cs, zs = [], [], []
        for t in range(steps):
            z = x[:, t] @ self.kernel + h @ self.recurrent_kernel + bias
            zi, zf, zg, zo = (z[:, k * n : (k + 1) * n] for k in range(4))
            c = act(zf) * c + act(zi) * state_act(zg)
            h = act(zo) * state_act(c)
            hs.append(h)
            cs.append(c)
            zs.append(z)
        z_all = np.stack(zs, axis=1)
        gates = {g: z_all[..., k * n : (k + 1) * n] for k, g in enumerate(GATES)}
        return LayerTrace(np.stack(hs, axis=1), np.stack(cs, axis=1), gates)

    def chain_output(self, trace: LayerTrace) -> np.ndarray:
        return trace.output if self.return_sequences else trace.output[:, -1]

    def quantize(self, ctx: QuantContext) -> QLSTMLayer:
        max_cell = float(np.max(np.abs(ctx.trace.cell)))
        if self.initial_c is not None:  # the cell starts there: its format must hold it
            max_cell = max(max_cell, float(np.max(np.abs(self.initial_c))))
        if self.activation != "tanh":  # an unbounded cell: refused where no int16 format holds it
            state_frac_bits(self.name, "cell state", cell_of(ctx, self), CELL_HEADROOM)
        h_frac = self.h_frac_bits(ctx.trace.output)
        hidden = ctx.trace.output * 2.0 ** (h_frac - 15)  # what the recurrent columns multiply
        shift = resolve_input_shift(
            ctx,
            lambda: choose_input_shift(self, ctx.feature_scale, ctx.layer_input, hidden, h_frac),
        )
        stats = (
            None if ctx.rounding == rounding.NEAREST else lstm_input_stats(self, ctx, shift, h_frac)
        )
        return quantize_lstm(
            self, ctx.feature_scale, max_cell, ctx.bits, shift, ctx.rounding, stats, h_frac
        )

    def summary(self) -> dict[str, Any]:
        bias = "+1" if self.bias is not None else ""
        return {
            "type": "LSTM",
            "activation": f"{self.activation}, {self.recurrent_activation}",
            "units": self.units,
            "params_formula": f"4*{self.units}*({self.input_size}+{self.units}{bias})",
        }

    def flash_bytes(self, bits: int) -> int:
        rows = 4 * self.units
        return rows * (self.input_size + self.units) * bits // 8 + rows * fp.BIAS_ROW_BYTES

    def dequantized(self, qlayer: QLSTMLayer, feature_scale: np.ndarray) -> LSTMLayer:
        rows = qlayer.weights * qlayer.weight_scale[..., None]  # (n, 4, m + n)
        # undo the input fold and the input columns' power-of-two scale
        rows[..., : self.input_size] *= Q15_SCALE / feature_scale * 2**qlayer.input_shift
        rows[..., self.input_size :] *= 2.0 ** (qlayer.h_frac - 15)  # the h format's fold
        weights = rows.transpose(2, 1, 0).reshape(qlayer.row_length, 4 * self.units)
        unit = fp.accumulator_unit(qlayer.weight_bits, qlayer.effective_row_length)
        bias = (qlayer.bias_s32 * qlayer.weight_scale * unit * Q15_SCALE).T.reshape(-1)
        return LSTMLayer(
            self.name,
            self.input_size,
            self.units,
            weights[: self.input_size],
            weights[self.input_size :],
            bias if self.bias is not None else None,
            self.recurrent_activation,
            self.return_sequences,
            None if qlayer.initial_h_q15 is None else qlayer.initial_h_q15 * 2.0**-qlayer.h_frac,
            None if qlayer.initial_c is None else qlayer.initial_c / 2.0**qlayer.cell_stored_frac,
            self.activation,
        )


# ---------------------------------------------------------------------------------------------
# Quantization


def cell_frac_bits(max_abs_cell: float) -> int:
    """Fractional bits of the int16 cell so that max|c| * CELL_HEADROOM fits; in [1, 15]."""
    peak = max(max_abs_cell * CELL_HEADROOM, 1e-9)
    int_bits = max(0, math.ceil(math.log2(peak)))
    return int(min(15, max(1, 15 - int_bits)))


def lstm_rows(layer: LSTMLayer, feature_scale: np.ndarray, input_shift: int, h_frac: int = 15):
    """Float gate rows (units, 4, m + n) against [x_q; h_q] in units of 2**-15, the input
    columns divided by 2**input_shift, h's format (``h_frac`` fractional bits) folded into the
    recurrent columns, and the biases (units, 4)."""
    fold = np.asarray(feature_scale, np.float64)[:, None] / Q15_SCALE / 2**input_shift
    kernel = layer.kernel * fold
    recurrent_kernel = layer.recurrent_kernel * 2.0 ** (15 - h_frac)
    rows, biases = [], []
    for k, gate in enumerate(GATES):
        cols = slice(k * layer.units, (k + 1) * layer.units)
        rows.append(np.concatenate([kernel[:, cols], recurrent_kernel[:, cols]]).T)
        biases.append(layer.gate(gate)[2])
    return np.stack(rows, axis=1), np.stack(biases, axis=1)


def quantize_lstm(
    layer: LSTMLayer,
    feature_scale: np.ndarray,
    max_abs_cell: float,
    bits: int = 8,
    input_shift: int = 0,
    method: str = rounding.NEAREST,
    stats: rounding.InputStats | None = None,
    h_frac: int = 15,
) -> QLSTMLayer:
    """``feature_scale``: real value of one input LSB per feature (2**-15 after an LSTM);
    ``method``, ``stats``: the weight rounding and the moments of what the rows multiply
    (``lstm_input_stats``); ``h_frac``: h's fractional bits (15 for tanh)."""
    rows_f, bias_f = lstm_rows(layer, feature_scale, input_shift, h_frac)
    row_length = layer.input_size * 2**input_shift + layer.units
    weights, scale, bias_s32, multiplier, shift = quantize_gate_rows(
        rows_f, bias_f, bits, row_length
    )
    if method != rounding.NEAREST:  # the same scales, the weights rounded against the data
        weights, bias_s32 = rounding.rounded_weights(
            rows_f, bias_f, scale, Q15_SCALE, bits, method, stats, layer.bias is not None,
            row_length,
        )  # fmt: skip
    if bits == 8:  # the optimized kernels' layouts read one word per row
        multiplier = layouts.with_packed_shift(multiplier, shift)
    cell_frac = cell_frac_bits(max_abs_cell)
    stored_frac = cell_frac + (15 if bits == 16 else 0)  # QLSTMLayer.cell_stored_frac
    limit = 2**15 * (2**15 if bits == 16 else 1)
    h0 = None if layer.initial_h is None else fp.round_half_away(layer.initial_h * 2.0**h_frac)
    c0 = None if layer.initial_c is None else fp.round_half_away(layer.initial_c * 2.0**stored_frac)
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
        cell_frac=cell_frac,
        has_bias=layer.bias is not None,
        input_shift=input_shift,
        initial_h_q15=None if h0 is None else np.clip(h0, -32768, 32767).astype(np.int64),
        initial_c=None if c0 is None else np.clip(c0, -limit, limit - 1).astype(np.int64),
        activation=layer.activation,
        h_frac=h_frac,
    )


def lstm_input_stats(layer: LSTMLayer, ctx: QuantContext, input_shift: int, h_frac: int = 15):
    """Moments of what the gate rows multiply, in their domain (``lstm_rows``), over every
    sequence and step: u = [x_q * 2**(k - 15); h_{t-1}], x_q the integer input that the
    quantized layers before this one give and h this layer's float state on it; the float
    model's [x / feature_scale * 2**(k - 15); h_{t-1}] as the reference."""
    k = input_shift - 15

    def rows_input(x_lsb: np.ndarray, h: np.ndarray) -> np.ndarray:
        h = h * 2.0 ** (h_frac - 15)  # in the recurrent columns' units
        h_prev = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
        return np.concatenate([x_lsb * 2.0**k, h_prev], axis=-1)

    x_q = np.asarray(ctx.fit_part(ctx.quantized_input), np.float64)
    u = rows_input(x_q, layer.forward(x_q * ctx.feature_scale).output)
    v = rows_input(
        ctx.fit_part(ctx.layer_input) / ctx.feature_scale, ctx.fit_part(ctx.trace.output)
    )
    return rounding.InputStats.of(u, v)


def choose_input_shift(
    layer: LSTMLayer, feature_scale: np.ndarray, x: np.ndarray, h: np.ndarray, h_frac: int = 15
) -> int:
    """The input shift that minimizes the expected rounding noise of the gate sums
    (``recurrent.choose_input_shift`` on the LSTM's four rows per unit; ``h`` in the recurrent
    columns' units)."""
    return choose_rows_input_shift(
        lambda k: lstm_rows(layer, feature_scale, k, h_frac)[0],
        layer.input_size,
        layer.units,
        feature_scale,
        x,
        h,
    )


# ---------------------------------------------------------------------------------------------
# Quantized layer and its integer reference


@dataclass
class LSTMState:
    h_q15: np.ndarray  # (N, units)
    c: np.ndarray  # (N, units), cell_stored_frac fractional bits


@dataclass
class StepTrace:
    """Every gate of one step of one LSTM layer (for trace and mismatch reports)."""

    layer: str
    z: np.ndarray  # (N, units, 4) gate pre-activations, Z_FRAC_BITS
    # (N, units, 4) activated i, f, g, o (Q0.15; a relu/linear layer's g: Z_FRAC_BITS)
    gates_q15: np.ndarray
    c: np.ndarray
    h_q15: np.ndarray


@dataclass(frozen=True)
class QLSTMLayer(QStateActivation, QLayer):
    """Formats: input int16 (folded scale), hidden Q0.15, cell int16 with ``cell_frac``
    fractional bits (int32 with 15 more for int16-weight layers), gate pre-activations int32
    with ``fixedpoint.Z_FRAC_BITS`` fractional bits."""

    kind: ClassVar[str] = "lstm"
    type_name: ClassVar[str] = "LSTM"
    recurrent: ClassVar[bool] = True
    state_names: ClassVar[tuple[str, ...]] = ("h", "c")

    def final_state(self, state: LSTMState) -> tuple[np.ndarray, ...]:
        return state.h_q15, state.c

    def state_scales(self) -> tuple[np.ndarray, ...]:
        return self.output_feature_scale, np.full(self.units, 2.0**-self.cell_stored_frac)

    def state_members(self) -> tuple[str, ...]:
        return "h_q15", "c"

    def state_problem(self, index: int) -> str | None:
        if index == 1 and self.wide_cell:
            return (
                f"layer '{self.name}': its cell state is int32 (int16 weights); using it"
                " (return_state=True, the c output read or returned) is supported with int8"
                " weights"
            )
        return None

    template: ClassVar[str] = "kinds/lstm/layer.c.j2"
    name: str
    input_size: int
    units: int
    recurrent_activation: str
    return_sequences: bool
    weights: np.ndarray  # int8 or int16 (units, 4, input_size + units): rows per unit, i f g o
    bias_s32: np.ndarray  # (units, 4)
    multiplier: np.ndarray  # (units, 4) int32, accumulator -> Z_FRAC_BITS
    shift: np.ndarray  # (units, 4)
    weight_scale: np.ndarray  # (units, 4) float, real weight = q * weight_scale (after folding)
    # cell state range +/-2**(15 - cell_frac): int16 with cell_frac fractional bits, or for
    # int16-weight layers int32 with 15 more (the int16 cell's rounding then dominates)
    cell_frac: int
    has_bias: bool = True
    input_shift: int = 0  # the input columns' partial sum is multiplied by 2**input_shift
    initial_h_q15: np.ndarray | None = None  # (units,) the state reset() sets; None: zeros
    initial_c: np.ndarray | None = None  # (units,) in the stored cell format
    activation: str = "tanh"  # of g and of h = o * act(c); relu/linear: reference kernel only
    h_frac: int = 15  # h's fractional bits: 15 (Q0.15) for tanh, calibrated for relu/linear

    def __post_init__(self) -> None:
        k = self.input_size + self.units
        assert self.weights.shape == (self.units, 4, k)
        assert self.weights.dtype in (np.int8, np.int16)
        assert self.bias_s32.shape == (self.units, 4)
        assert 1 <= self.cell_frac <= 15

    @property
    def weight_bits(self) -> int:
        return self.weights.dtype.itemsize * 8

    @property
    def hard_sigmoid(self) -> bool:
        return self.recurrent_activation.startswith("hard_sigmoid")

    @property
    def weights_s8(self) -> np.ndarray:
        """The int8 weights (only for layers quantized to 8 bits)."""
        if self.weight_bits != 8:
            raise ValueError(f"layer '{self.name}' has {self.weight_bits}-bit weights")
        return self.weights

    @property
    def row_length(self) -> int:
        return self.input_size + self.units

    @property
    def effective_row_length(self) -> int:
        """Row length for overflow bounds: input columns count 2**input_shift times."""
        return self.input_size * 2**self.input_shift + self.units

    @property
    def acc_shift(self) -> int:
        """Right shift from the exact row sum to the int32 accumulator (0: one int32 sum)."""
        return fp.accumulator_shift(self.weight_bits, self.effective_row_length)

    @property
    def blocked(self) -> bool:
        """int8 rows too long for one int32 sum: int32 sums per block, added in int64."""
        return self.weight_bits == 8 and self.acc_shift > 0

    @property
    def wide_cell(self) -> bool:
        return self.weight_bits == 16

    @property
    def cell_stored_frac(self) -> int:
        """Fractional bits of the stored cell value."""
        return self.cell_frac + (15 if self.wide_cell else 0)

    @property
    def cell_limits(self) -> tuple[int, int]:
        """Saturation limits of the stored cell (the int16 range, scaled for a wide cell)."""
        scale = 2**15 if self.wide_cell else 1
        return -(2**15) * scale, (2**15) * scale - 1

    @property
    def cell_int_bits(self) -> int:
        return 15 - self.cell_frac

    # -- the cell state in the generic reports (convert's calibration table, compare and the
    # held-out range check ask these of a layer whose float trace holds a cell; ``steps``: its
    # reference step traces, in order) --

    @property
    def cell_q_format(self) -> str:
        return f"Q{self.cell_int_bits}.{self.cell_stored_frac}"

    @property
    def cell_limit(self) -> float:
        """The largest |c| the integer cell holds, in float."""
        return float(fp.INT16_MAX * 2.0**-self.cell_frac)

    def cell_ranges(self, float_cell: np.ndarray, steps: list) -> dict[str, Any]:
        """convert's calibration row: the float cell's range, the format chosen from it and
        the stored values that saturated."""
        return {
            "cell_max_abs": float(np.max(np.abs(float_cell))),
            "cell_format": f"{self.cell_q_format} (max |c| x {CELL_HEADROOM})",
            "cell_saturated": self.cell_saturated(steps),
        }

    def cell_values(self, steps: list) -> np.ndarray:
        """The integer cell of every step in float, (N, T, units)."""
        return np.stack([s.c for s in steps], axis=1) * 2.0**-self.cell_stored_frac

    def cell_saturated(self, steps: list) -> int:
        """Stored cell values at either limit of the cell's range."""
        low, high = self.cell_limits
        return int(sum(np.sum((s.c >= high) | (s.c <= low)) for s in steps))

    def cell_beyond(self, float_cell: np.ndarray) -> np.ndarray:
        """Where a float cell lies beyond the integer cell's range (it saturates there)."""
        return np.abs(float_cell) > self.cell_limits[1] * 2.0**-self.cell_stored_frac

    @property
    def macs(self) -> int:
        return 4 * self.units * self.row_length

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.full(self.units, 2.0**-self.h_frac)

    # -- integer reference (the C equals it bit for bit) --

    def initial_state(self, batch: int) -> LSTMState:
        h, c = (
            np.zeros((batch, self.units), np.int64) + (0 if start is None else start)
            for start in (self.initial_h_q15, self.initial_c)
        )
        return LSTMState(h, c)

    def step(self, x_q: np.ndarray, state: LSTMState, tables: dict) -> tuple[np.ndarray, Any]:
        z = gate_preactivations(self, x_q, state.h_q15)
        gates = np.empty_like(z)
        for k in (0, 1, 3):
            gates[..., k] = recurrent_activation(self, z[..., k], tables)
        if self.unbounded:
            gates[..., 2] = state_activation(self.activation, z[..., 2])
            state.c = unbounded_cell_update(self, gates, state.c)
            state.h_q15 = unbounded_hidden_update(self, gates[..., 3], state.c)
        else:
            gates[..., 2] = fp.tanh_q15(z[..., 2], tables["tanh"])
            state.c = cell_update(self, gates, state.c)
            state.h_q15 = hidden_update(self, gates[..., 3], state.c, tables)
        return state.h_q15, StepTrace(self.name, z, gates, state.c, state.h_q15)

    def tables_needed(self) -> set[str]:
        return {"tanh", "sigmoid"} if self.recurrent_activation == "sigmoid" else {"tanh"}

    # -- emitter --

    def uses(self) -> set[str]:
        # "lstm": the LSTM's reference step and parameters (ops.c.j2); the recurrent flags
        # switch on the helpers every recurrent kind's kernels share
        flags = {"lstm", "portable_recurrent" if self.portable_only else "optimized_recurrent"}
        if self.wide_cell:  # the int32 cell's step function (tanh, or relu/linear)
            flags.add("wide_lstm_unbounded" if self.unbounded else "wide_lstm")
        if self.blocked:
            flags.add("blocked_rows")
        if self.hard_sigmoid:
            flags.add("hard_sigmoid")
        if self.unbounded:
            flags.add("lstm_unbounded")
        return flags

    @property
    def cell_format(self) -> str:
        return f"Q{self.cell_int_bits}.{self.cell_stored_frac}" + (
            " (int32)" if self.wide_cell else ""
        )

    def state_fields(self) -> list[dict[str, Any]]:
        cell_type = "int32_t" if self.wide_cell else "int16_t"
        label = cformat.c_comment(self.name)
        return [
            {
                "type": "int16_t",
                "name": "h_q15",
                "size": self.units,
                "comment": f"'{label}' hidden state, {self.h_format}",
                **_initial(self.initial_h_q15),
            },
            {
                "type": cell_type,
                "name": "c",
                "size": self.units,
                "comment": f"'{label}' cell state, {self.cell_format}",
                **_initial(self.initial_c),
            },
        ]

    def scratch_width(self) -> int:
        return self.units  # the new hidden state while the layer updates

    def shared_scratch(self) -> list[dict[str, Any]]:
        """The optimized kernels' [x; h_prev] copy, in the caller's state when it is large
        (``layouts.rows_buffers``; any kernel may be compiled: the largest need of each type)."""
        if self.portable_only:
            return []
        words, halfwords = layouts.rows_buffers(self)
        # "kernels": only a file holding one of them declares the member (emit.shared_scratch)
        dsp_users = ("dsp", "plain") if self.input_shift else ("dsp",)
        fields = []
        if words:
            comment = "[x; h_prev] of the DSP (and shifted plain) LSTM kernels"
            fields.append(_scratch("int32_t", "lstm_rows_s32", words, comment, dsp_users))
        if halfwords:
            comment = "[x; h_prev] of the plain LSTM kernel"
            fields.append(_scratch("int16_t", "lstm_rows_s16", halfwords, comment, ("plain",)))
        return fields

    @property
    def state_bytes(self) -> int:
        return (2 + (4 if self.wide_cell else 2)) * self.units

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "units": self.units,
            "rows": 4 * self.units,
            "return_sequences": self.return_sequences,
            "recurrent_activation": self.recurrent_activation,
            "hard_sigmoid": self.hard_sigmoid,
            "has_bias": self.has_bias,
            "cell_frac": self.cell_frac,
            "cell_int_bits": self.cell_int_bits,
            "wide_cell": self.wide_cell,
            "cell_type": "int32_t" if self.wide_cell else "int16_t",
            "cell_format": self.cell_format,
            "activation": self.activation,
            "activation_code": STATE_ACTIVATIONS.index(self.activation),
            "h_frac": self.h_frac,
            "h_format": self.h_format,
            "weights": cformat.c_int_array(self.weights, per_line=self.row_length),
            "weights_count": self.weights.size,
            **weight_format(self.weight_bits),
            "bias": cformat.c_int_array(self.bias_s32, per_line=8),
            "multiplier": cformat.c_int_array(self.multiplier, per_line=8),
            "shift": cformat.c_int_array(self.shift, per_line=16),
            "input_shift": self.input_shift,
            "acc_shift": self.acc_shift,
            "blocked": self.blocked,
            "portable_only": self.portable_only,
            **({} if self.portable_only else layouts.kernel_context(self)),
        }

    def format(self) -> str:
        wide = " int32" if self.wide_cell else ""
        cell = f"c Q{self.cell_int_bits}.{self.cell_stored_frac}{wide}"
        act = "" if self.activation == "tanh" else f", activation {self.activation}"
        return f"w int{self.weight_bits}, h {self.h_format}, {cell}{act}"

    def flash_bytes(self) -> dict[str, int]:
        rows = 4 * self.units
        weights = rows * self.row_length * self.weight_bits // 8
        return {"weights": weights, "biases": rows * fp.BIAS_ROW_BYTES}

    def kernel_flash_bytes(self) -> dict[str, int]:
        """Constants of this layer in each kernel's layout (templates/kinds/lstm/), as compiled."""
        portable = sum(self.flash_bytes().values())
        if self.portable_only:
            return dict.fromkeys(("reference", "plain", "dsp", "mve"), portable)
        rows = 4 * self.units
        requant = layouts.requant_pairs(self).size * 4
        mve_requant = layouts.mve_requant(self).size * 4 if layouts.fast_requant(self) else requant
        return {
            "reference": portable,
            "plain": layouts.plain_weights(self).size + layouts.plain_bias(self).size * 4 + requant,
            "dsp": layouts.dsp_units(self).size * 4,
            "mve": layouts.mve_weights(self).size + layouts.mve_input_weights(self).size * 2
            + rows * 4 + mve_requant,
        }  # fmt: skip

    def kernel_stack_bytes(self) -> dict[str, int]:
        """Bytes of the local arrays each kernel keeps on the stack for this layer (as declared
        in templates/kinds/lstm/ and ops.c.j2); the [x; h_prev] copies of the DSP and plain kernels
        are in the caller's state when larger than layouts.LOCAL_ROWS_MAX_BYTES."""
        gates = 4 * 4  # int32 per gate: the reference kernel's gate_q15, plain's sum, DSP's acc
        if self.portable_only:
            return dict.fromkeys(("reference", "plain", "dsp", "mve"), gates)
        local = layouts.rows_buffers(self) == (0, 0)
        plain_copy = layouts.plain_columns(self) * (4 if self.input_shift else 2)
        dsp_copy = 4 * (layouts.layer_groups(self, 2)[1] // 2)
        mve_copy = 2 * layouts.layer_groups(self, layouts.MVE_LANES)[1]
        return {
            "reference": gates,
            "plain": gates + (plain_copy if local else 0),
            "dsp": gates + (dsp_copy if local else 0),
            "mve": mve_copy + 4 * gates,  # acc[16]: four units' rows
        }


def _scratch(c_type: str, name: str, size: int, comment: str, kernels: tuple[str, ...]) -> dict:
    return {"type": c_type, "name": name, "size": size, "comment": comment, "kernels": kernels}


def recurrent_activation(layer: QLSTMLayer, z: np.ndarray, tables: dict) -> np.ndarray:
    return recurrent_activation_q15(layer.recurrent_activation, z, tables)


def gate_preactivations(layer: QLSTMLayer, x_q: np.ndarray, h_q15: np.ndarray) -> np.ndarray:
    """(N, units, 4) int32 gate pre-activations with Z_FRAC_BITS fractional bits.

    acc = bias + dot(w_x, x) * 2**input_shift + dot(w_h, h): the input columns carry their own
    power-of-two scale so that a wide input range does not coarsen the recurrent weights.
    """
    w = layer.weights.astype(np.int64)
    m = layer.input_size
    dot_x = np.einsum("ugk,nk->nug", w[..., :m], x_q.astype(np.int64))
    dot_h = np.einsum("ugk,nk->nug", w[..., m:], h_q15.astype(np.int64))
    dot = dot_x * (1 << layer.input_shift) + dot_h
    return fp.requantize(
        fp.accumulate(dot, layer.bias_s32, layer.weight_bits, layer.effective_row_length),
        layer.multiplier,
        layer.shift,
    )


def cell_update(layer: QLSTMLayer, gates_q15: np.ndarray, c: np.ndarray) -> np.ndarray:
    """c' = f*c + i*g, with cf = cell_frac. int16 cell: f*c is Q(15+cf); i*g (Q30) is shifted to
    Q(15+cf); the sum is rounded back to Qcf. Wide (int32, Q(cf+15)) cell: f*c is rounded
    from Q(30+cf) to Q(15+cf), i*g shifted to it, the sum kept."""
    i, f, g = gates_q15[..., 0], gates_q15[..., 1], gates_q15[..., 2]
    ig = fp.rounding_shift_right(i * g, 15 - layer.cell_frac)
    low, high = layer.cell_limits
    if layer.wide_cell:
        return fp.saturate(fp.rounding_shift_right(f * c, 15) + ig, low, high)
    return fp.saturate(fp.rounding_shift_right(f * c + ig, 15), low, high)


def cell_to_z(layer: QLSTMLayer, c: np.ndarray) -> np.ndarray:
    """Cell -> Z_FRAC_BITS: an exact multiplication (int16 cell) or a rounded shift (wide)."""
    if layer.wide_cell:
        return fp.rounding_shift_right(c, layer.cell_stored_frac - fp.Z_FRAC_BITS)
    return c * (1 << (fp.Z_FRAC_BITS - layer.cell_frac))


def hidden_update(layer: QLSTMLayer, o_q15: np.ndarray, c: np.ndarray, tables: dict):
    """h' = o * tanh(c)."""
    tanh_c = fp.tanh_q15(cell_to_z(layer, c), tables["tanh"])
    return fp.saturate_s16(fp.rounding_shift_right(o_q15 * tanh_c, 15))


def unbounded_cell_update(layer: QLSTMLayer, gates: np.ndarray, c: np.ndarray) -> np.ndarray:
    """relu/linear: c' = f*c + i*g in int64, g the candidate's row sum (Z_FRAC_BITS, activated)
    moved to the stored cell format and saturated at the cell's range, the sum rounded from
    Q(15 + stored frac) and saturated."""
    i, f = gates[..., 0], gates[..., 1]
    low, high = layer.cell_limits
    g = fp.change_frac(gates[..., 2], fp.Z_FRAC_BITS, layer.cell_stored_frac)
    g = fp.saturate(g, low, high)
    return fp.saturate(fp.rounding_shift_right(f * c + i * g, 15), low, high)


def unbounded_hidden_update(layer: QLSTMLayer, o_q15: np.ndarray, c: np.ndarray) -> np.ndarray:
    """relu/linear: h' = o * act(c), rounded from Q(15 + stored frac) to h's format."""
    product = o_q15 * state_activation(layer.activation, c)
    return fp.saturate_s16(
        fp.rounding_shift_right(product, 15 + layer.cell_stored_frac - layer.h_frac)
    )


def cell_of(ctx: QuantContext, layer: LSTMLayer) -> np.ndarray:
    """The float cell of the calibration data (and the initial cell a sequence starts from)."""
    cell = np.abs(ctx.trace.cell).ravel()
    return cell if layer.initial_c is None else np.concatenate([cell, np.abs(layer.initial_c)])


def _initial(values: np.ndarray | None) -> dict[str, Any]:
    """A state field's start values for reset() (absent: zeros)."""
    return {} if values is None else {"initial": [int(v) for v in values]}
