"""GRU: Keras config and weights, float forward pass, quantization, integer reference, C context.

Keras' gate order (z, r, h: update, reset, candidate) is stated once here (``GATES``). Keras
computes, with the recurrent activation s and h the previous hidden state,

    z = s(W_z x + U_z h + b_z),  r = s(W_r x + U_r h + b_r)
    reset_after=True (TF2 / Keras 3 default; bias (2, 3n): input row, recurrent row):
        h~ = tanh(W_h x + b_h + r * (U_h h + b_rh))      (z, r: both bias rows added)
    reset_after=False (bias (3n,)):
        h~ = tanh(W_h x + U_h (r * h) + b_h)
    h' = z * h + (1 - z) * h~

The integer form requantizes every row sum to Z_FRAC_BITS: with reset_after the candidate has
two rows, its input part ``hx`` and its recurrent part ``hh`` (which r multiplies after its
own requantization), so a unit has four requantized rows (z, r, hx, hh) over three weight rows;
without it three (z, r, h), the candidate's recurrent columns multiplying r * h.
Templates: templates/kinds/gru/ (the layer, its call and its kernels, laid out by
``lstm_embed.emit.layouts.gru``).
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
    choose_input_shift,
    effective_row_length,
    input_fold,
    quantize_gate_rows,
    recurrent_activation,
    resolve_input_shift,
    state_activation,
)
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding

GATES = ("z", "r", "h")  # Keras order: update, reset, candidate
# requantized rows of one unit (the integer layer's bias, multiplier and shift columns)
ROWS_RESET_AFTER = ("z", "r", "hx", "hh")  # candidate: input part, recurrent part (times r)
ROWS_RESET_BEFORE = ("z", "r", "h")


# ---------------------------------------------------------------------------------------------
# Float IR layer


@dataclass(frozen=True)
class GRULayer(StateActivation, FloatLayer):
    kind: ClassVar[str] = "gru"
    type_name: ClassVar[str] = "GRU"
    recurrent: ClassVar[bool] = True
    state_names: ClassVar[tuple[str, ...]] = ("h",)  # return_state=True: [out, h]

    def final_state(self, trace: LayerTrace) -> tuple[np.ndarray, ...]:
        return (trace.output[:, -1],)

    name: str
    input_size: int
    units: int
    kernel: np.ndarray  # (input_size, 3*units), Keras layout z, r, h
    recurrent_kernel: np.ndarray  # (units, 3*units)
    bias: np.ndarray | None  # (2, 3*units) if reset_after (input, recurrent), else (3*units,)
    reset_after: bool = True
    recurrent_activation: str = "sigmoid"
    return_sequences: bool = False
    # of the candidate h~: tanh (h in Q0.15), relu or linear (h gets an int16 format calibrated
    # on the data, and the layer runs the reference kernel)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        n, m = self.units, self.input_size
        if self.activation not in STATE_ACTIVATIONS:
            raise IRError(
                f"layer '{self.name}': activation '{self.activation}' is not supported"
                f" (supported: {', '.join(STATE_ACTIVATIONS)})"
            )
        if n < 1 or m < 1:
            raise IRError(f"layer '{self.name}': units and input size must be >= 1")
        # shapes first: a config may declare any number of units, the weights are what is real
        check_shape(self.name, "kernel", self.kernel, (m, 3 * n))
        check_shape(self.name, "recurrent kernel", self.recurrent_kernel, (n, 3 * n))
        if self.bias is not None:
            shape = (2, 3 * n) if self.reset_after else (3 * n,)
            check_shape(self.name, "bias", self.bias, shape)
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
        bias = 0 if self.bias is None else self.bias.size
        return 3 * self.units * (self.input_size + self.units) + bias

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def keeps_timesteps(self) -> bool:
        return self.return_sequences

    @property
    def input_bias(self) -> np.ndarray:
        """(3n,) bias added to the input part of z, r, h (zeros without bias)."""
        if self.bias is None:
            return np.zeros(3 * self.units)
        return self.bias[0] if self.reset_after else self.bias

    @property
    def recurrent_bias(self) -> np.ndarray:
        """(3n,) bias added to the recurrent part (reset_after only; zeros otherwise)."""
        if self.bias is None or not self.reset_after:
            return np.zeros(3 * self.units)
        return self.bias[1]

    def gate(self, gate: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(kernel (m, n), recurrent kernel (n, n), input bias (n,), recurrent bias (n,))."""
        k = GATES.index(gate)
        cols = slice(k * self.units, (k + 1) * self.units)
        return (
            self.kernel[:, cols],
            self.recurrent_kernel[:, cols],
            self.input_bias[cols],
            self.recurrent_bias[cols],
        )

    def forward(self, x: np.ndarray) -> LayerTrace:
        """x (N, T, m) -> trace with h (N, T, n) for every step and every row's pre-activation."""
        batch, steps, _ = x.shape
        act = activation_function(self.recurrent_activation)
        state_act = activation_function(self.activation)
        (wz, uz, bz, rz), (wr, ur, br, rr), (wh, uh, bh, rh) = (self.gate(g) for g in GATES)
        h = np.zeros((batch, self.units))
        hs = []
        rows: dict[str, list[np.ndarray]] = {name: [] for name in self.row_names}
        for t in range(steps):
            xt = x[:, t]
            pre_z = xt @ wz + bz + h @ uz + rz
            pre_r = xt @ wr + br + h @ ur + rr
            z, r = act(pre_z), act(pre_r)
            if self.reset_after:
                hx, hh = xt @ wh + bh, h @ uh + rh
                candidate = state_act(hx + r * hh)
                parts = {"hx": hx, "hh": hh}
            else:
                pre_h = xt @ wh + (r * h) @ uh + bh
                candidate = state_act(pre_h)
                parts = {"h": pre_h}
            h = z * h + (1.0 - z) * candidate
            for name, value in {"z": pre_z, "r": pre_r, **parts}.items():
                rows[name].append(value)
            hs.append(h)
        gates = {name: np.stack(values, axis=1) for name, values in rows.items()}
        return LayerTrace(np.stack(hs, axis=1), None, gates)

    @property
    def row_names(self) -> tuple[str, ...]:
        return ROWS_RESET_AFTER if self.reset_after else ROWS_RESET_BEFORE

    def chain_output(self, trace: LayerTrace) -> np.ndarray:
        return trace.output if self.return_sequences else trace.output[:, -1]

    def quantize(self, ctx: QuantContext) -> QGRULayer:
        h_frac = self.h_frac_bits(ctx.trace.output)
        shift = resolve_input_shift(
            ctx,
            lambda: choose_input_shift(
                lambda k: gru_rows(self, ctx.feature_scale, k, h_frac)[0],
                self.input_size,
                self.units,
                ctx.feature_scale,
                ctx.layer_input,
                ctx.trace.output * 2.0 ** (h_frac - 15),  # in the recurrent columns' units
                *row_columns(self.reset_after),
            ),
        )
        stats = (
            None if ctx.rounding == rounding.NEAREST else gru_input_stats(self, ctx, shift, h_frac)
        )
        return quantize_gru(self, ctx.feature_scale, ctx.bits, shift, ctx.rounding, stats, h_frac)

    def summary(self) -> dict[str, Any]:
        n, m = self.units, self.input_size
        bias = "" if self.bias is None else ("+2" if self.reset_after else "+1")
        return {
            "type": "GRU",
            "activation": f"{self.activation}, {self.recurrent_activation}",
            "units": n,
            "params_formula": f"3*{n}*({m}+{n}{bias})",
        }

    def flash_bytes(self, bits: int) -> int:
        weights = 3 * self.units * (self.input_size + self.units) * bits // 8
        return weights + len(self.row_names) * self.units * fp.BIAS_ROW_BYTES

    def dequantized(self, qlayer: QGRULayer, feature_scale: np.ndarray) -> GRULayer:
        n, m = self.units, self.input_size
        w = qlayer.weights.astype(np.float64)  # (n, 3, m + n)
        scale = qlayer.weight_scale  # (n, rows)
        rows = np.empty_like(w)
        rows[:, :2] = w[:, :2] * scale[:, :2, None]
        if self.reset_after:
            rows[:, 2, :m] = w[:, 2, :m] * scale[:, 2, None]
            rows[:, 2, m:] = w[:, 2, m:] * scale[:, 3, None]
        else:
            rows[:, 2] = w[:, 2] * scale[:, 2, None]
        # undo the input fold and the input columns' power-of-two scale
        rows[..., :m] /= input_fold(feature_scale, qlayer.input_shift)[:, 0]
        rows[..., m:] *= 2.0 ** (qlayer.h_frac - 15)  # the h format's fold
        weights = rows.transpose(2, 1, 0).reshape(m + n, 3 * n)
        unit = fp.accumulator_unit(qlayer.weight_bits, qlayer.effective_row_length)
        bias_rows = qlayer.bias_s32 * scale * unit * Q15_SCALE  # (n, rows)
        bias = None
        if self.bias is not None:
            if self.reset_after:
                # z and r carry both Keras bias rows in one; put the sum in the input row
                input_bias = np.concatenate([bias_rows[:, 0], bias_rows[:, 1], bias_rows[:, 2]])
                recurrent = np.concatenate([np.zeros(2 * n), bias_rows[:, 3]])
                bias = np.stack([input_bias, recurrent])
            else:
                bias = bias_rows.T.reshape(-1)
        return GRULayer(
            self.name,
            m,
            n,
            weights[:m],
            weights[m:],
            bias,
            self.reset_after,
            self.recurrent_activation,
            self.return_sequences,
            self.activation,
        )


# ---------------------------------------------------------------------------------------------
# Quantization


def row_columns(reset_after: bool) -> tuple[np.ndarray, np.ndarray]:
    """Which columns each requantized row multiplies: (uses input, uses hidden) per row."""
    if reset_after:
        return np.array([1, 1, 1, 0]), np.array([1, 1, 0, 1])
    return np.ones(3), np.ones(3)


def gru_rows(layer: GRULayer, feature_scale: np.ndarray, input_shift: int, h_frac: int = 15):
    """Float rows (units, rows, m + n) against [x_q; h_q] (reset_before: [x_q; (r*h)_q])
    in units of 2**-15, the input columns divided by 2**input_shift, h's format (``h_frac``
    fractional bits) folded into the recurrent columns, and their biases (units, rows); rows
    as ``GRULayer.row_names``."""
    fold = input_fold(feature_scale, input_shift)
    m, n = layer.input_size, layer.units
    rows, biases = [], []
    for gate in GATES:
        kernel, recurrent, input_bias, recurrent_bias = layer.gate(gate)
        kernel = kernel * fold
        recurrent = recurrent * 2.0 ** (15 - h_frac)
        if gate == "h" and layer.reset_after:
            rows.append(np.concatenate([kernel, np.zeros((n, n))]).T)
            rows.append(np.concatenate([np.zeros((m, n)), recurrent]).T)
            biases += [input_bias, recurrent_bias]
        else:
            rows.append(np.concatenate([kernel, recurrent]).T)
            biases.append(input_bias + recurrent_bias)
    return np.stack(rows, axis=1), np.stack(biases, axis=1)


def quantize_gru(
    layer: GRULayer,
    feature_scale: np.ndarray,
    bits: int = 8,
    input_shift: int = 0,
    method: str = rounding.NEAREST,
    stats: dict[str, rounding.InputStats] | None = None,
    h_frac: int = 15,
) -> QGRULayer:
    """``feature_scale``: real value of one input LSB per feature (2**-15 after a recurrent
    layer). The candidate's input and recurrent rows of a reset_after layer get a scale each
    and share one weight row (their columns do not overlap)."""
    rows_f, bias_f = gru_rows(layer, feature_scale, input_shift, h_frac)
    row_length = effective_row_length(layer.input_size, layer.units, input_shift)
    weights, scale, bias_s32, multiplier, shift = quantize_gate_rows(
        rows_f, bias_f, bits, row_length
    )
    if method != rounding.NEAREST:  # the same scales, the weights rounded against the data
        weights, bias_s32 = gru_rounded(
            layer, rows_f, bias_f, scale, bits, method, stats, row_length
        )
    if layer.reset_after:  # hx holds zeros on the recurrent columns, hh on the input columns
        merged = weights[:, :3].copy()
        merged[:, 2, layer.input_size :] = weights[:, 3, layer.input_size :]
        weights = merged
    return QGRULayer(
        name=layer.name,
        input_size=layer.input_size,
        units=layer.units,
        recurrent_activation=layer.recurrent_activation,
        return_sequences=layer.return_sequences,
        reset_after=layer.reset_after,
        weights=weights,
        bias_s32=bias_s32,
        multiplier=multiplier,
        shift=shift,
        weight_scale=scale,
        has_bias=layer.bias is not None,
        input_shift=input_shift,
        activation=layer.activation,
        h_frac=h_frac,
    )


def gru_input_stats(layer: GRULayer, ctx: QuantContext, input_shift: int, h_frac: int = 15):
    """Moments of what the rows multiply (``gru_rows``' domain), over every sequence and step:
    "gates", u = [x_q * 2**(k - 15); h_{t-1}] for z and r (and, by columns, a reset_after
    candidate's two rows); "candidate", [x_q * 2**(k - 15); r * h_{t-1}] for reset_before.
    x_q is the integer input the quantized layers before this one give, h and r this layer's
    float values on it; the float model's values are the reference."""
    k = input_shift - 15
    act = activation_function(layer.recurrent_activation)

    def prev(h: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)

    x_q = np.asarray(ctx.fit_part(ctx.quantized_input), np.float64) * 2.0**k
    x_f = ctx.fit_part(ctx.layer_input) / ctx.feature_scale * 2.0**k
    device = layer.forward(x_q * 2.0**-k * ctx.feature_scale)
    h_units = 2.0 ** (h_frac - 15)  # h in the recurrent columns' units
    h_q, h_f = prev(device.output) * h_units, prev(ctx.fit_part(ctx.trace.output)) * h_units
    stats = {"gates": rounding.InputStats.of(np.concatenate([x_q, h_q], -1),
                                             np.concatenate([x_f, h_f], -1))}  # fmt: skip
    if not layer.reset_after:
        r_q = act(device.gate_preactivations["r"])
        r_f = act(ctx.fit_part(ctx.trace.gate_preactivations["r"]))
        stats["candidate"] = rounding.InputStats.of(
            np.concatenate([x_q, r_q * h_q], -1), np.concatenate([x_f, r_f * h_f], -1)
        )
    return stats


def gru_rounded(layer, rows_f, bias_f, scale, bits, method, stats, row_length=None):
    """Weights and biases of ``gru_rows``' rows, rounded by ``method`` group by group: z and r
    against [x; h], the candidate against [x; r * h] (reset_before) or its input row against x
    and its recurrent row against h (reset_after: the columns each really multiplies)."""
    m = layer.input_size
    with_bias = layer.bias is not None
    weights = np.zeros(rows_f.shape, np.int8 if bits == 8 else np.int16)
    bias_s32 = np.zeros(bias_f.shape, np.int32)
    groups = [(slice(0, 2), slice(None), stats["gates"])]
    if layer.reset_after:
        groups += [(slice(2, 3), slice(0, m), stats["gates"].columns(slice(0, m)))]
        groups += [(slice(3, 4), slice(m, None), stats["gates"].columns(slice(m, None)))]
    else:
        groups += [(slice(2, 3), slice(None), stats["candidate"])]
    row_length = row_length or rows_f.shape[-1]
    for rows, columns, group_stats in groups:
        weights[:, rows, columns], bias_s32[:, rows] = rounding.rounded_weights(
            rows_f[:, rows, columns], bias_f[:, rows], scale[:, rows], Q15_SCALE, bits, method,
            group_stats, with_bias, row_length,
        )  # fmt: skip
    return weights, bias_s32


# ---------------------------------------------------------------------------------------------
# Quantized layer and its integer reference


@dataclass
class GRUState:
    h_q15: np.ndarray  # (N, units)


@dataclass
class GRUStepTrace:
    """Every row and gate of one step of one GRU layer (for trace and mismatch reports)."""

    layer: str
    z: np.ndarray  # (N, units, rows) requantized row sums, Z_FRAC_BITS (rows: row_names)
    gates_q15: np.ndarray  # (N, units, 3): update z, reset r (Q0.15), candidate h~ (h format)
    h_q15: np.ndarray


@dataclass(frozen=True)
class QGRULayer(QStateActivation, QLayer):
    """Formats: input int16 (folded scale), hidden Q0.15, every row sum requantized to int32
    with ``fixedpoint.Z_FRAC_BITS`` fractional bits; gates and candidate Q0.15."""

    kind: ClassVar[str] = "gru"
    type_name: ClassVar[str] = "GRU"
    recurrent: ClassVar[bool] = True
    state_names: ClassVar[tuple[str, ...]] = ("h",)

    def final_state(self, state: Any) -> tuple[np.ndarray, ...]:
        return (state.h_q15,)

    def state_scales(self) -> tuple[np.ndarray, ...]:
        return (self.output_feature_scale,)

    def state_members(self) -> tuple[str, ...]:
        return ("h_q15",)

    template: ClassVar[str] = "kinds/gru/layer.c.j2"
    name: str
    input_size: int
    units: int
    recurrent_activation: str
    return_sequences: bool
    reset_after: bool
    weights: np.ndarray  # int8 or int16 (units, 3, input_size + units): rows z, r, h per unit
    bias_s32: np.ndarray  # (units, rows), rows: z, r, hx, hh (reset_after) or z, r, h
    multiplier: np.ndarray  # (units, rows) int32, accumulator -> Z_FRAC_BITS
    shift: np.ndarray  # (units, rows)
    weight_scale: np.ndarray  # (units, rows) float, real weight = q * weight_scale (folded)
    has_bias: bool = True
    input_shift: int = 0  # the input columns' partial sums are multiplied by 2**input_shift
    activation: str = "tanh"  # of the candidate; relu/linear: reference kernel only
    h_frac: int = 15  # h's fractional bits: 15 (Q0.15) for tanh, calibrated for relu/linear

    def __post_init__(self) -> None:
        k = self.input_size + self.units
        assert self.weights.shape == (self.units, 3, k)
        assert self.weights.dtype in (np.int8, np.int16)
        assert self.bias_s32.shape == (self.units, len(self.row_names))

    @property
    def row_names(self) -> tuple[str, ...]:
        return ROWS_RESET_AFTER if self.reset_after else ROWS_RESET_BEFORE

    @property
    def rows(self) -> int:
        """Requantized rows per unit."""
        return len(self.row_names)

    @property
    def weight_bits(self) -> int:
        return self.weights.dtype.itemsize * 8

    @property
    def hard_sigmoid(self) -> bool:
        return self.recurrent_activation.startswith("hard_sigmoid")

    @property
    def weights_s8(self) -> np.ndarray:
        if self.weight_bits != 8:
            raise ValueError(f"layer '{self.name}' has {self.weight_bits}-bit weights")
        return self.weights

    @property
    def row_length(self) -> int:
        return self.input_size + self.units

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
    def macs(self) -> int:
        return 3 * self.units * self.row_length

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.full(self.units, 2.0**-self.h_frac)

    # -- integer reference (the C equals it bit for bit) --

    def initial_state(self, batch: int) -> GRUState:
        return GRUState(np.zeros((batch, self.units), np.int64))

    def step(self, x_q: np.ndarray, state: GRUState, tables: dict) -> tuple[np.ndarray, Any]:
        h = state.h_q15
        w = self.weights.astype(np.int64)
        m = self.input_size
        dot_x = np.einsum("ugk,nk->nug", w[..., :m], x_q.astype(np.int64)) << self.input_shift
        dot_h = np.einsum("ugk,nk->nug", w[:, :2, m:], h)  # z, r
        gates = np.empty((*h.shape, 3), np.int64)
        if self.reset_after:
            dot_hh = np.einsum("uk,nk->nu", w[:, 2, m:], h)
            dot = np.stack([*(dot_x[..., :2] + dot_h).transpose(2, 0, 1), dot_x[..., 2], dot_hh])
            z = self._requantize(dot.transpose(1, 2, 0))
            gates[..., 0] = recurrent_activation(self.recurrent_activation, z[..., 0], tables)
            gates[..., 1] = recurrent_activation(self.recurrent_activation, z[..., 1], tables)
            gates[..., 2] = self._candidate(candidate_preactivation(z, gates[..., 1]), tables)
        else:
            zr = self._requantize(dot_x[..., :2] + dot_h, slice(0, 2))
            gates[..., 0] = recurrent_activation(self.recurrent_activation, zr[..., 0], tables)
            gates[..., 1] = recurrent_activation(self.recurrent_activation, zr[..., 1], tables)
            rh = reset_hidden(gates[..., 1], h)
            dot_rh = np.einsum("uk,nk->nu", w[:, 2, m:], rh)
            zh = self._requantize((dot_x[..., 2] + dot_rh)[..., None], slice(2, 3))
            z = np.concatenate([zr, zh], axis=-1)
            gates[..., 2] = self._candidate(zh[..., 0], tables)
        state.h_q15 = hidden_update(gates[..., 0], h, gates[..., 2])
        return state.h_q15, GRUStepTrace(self.name, z, gates, state.h_q15)

    def _candidate(self, pre: np.ndarray, tables: dict) -> np.ndarray:
        """h~ in h's format: tanh's table (Q0.15), or the activated pre-activation
        (Z_FRAC_BITS) rounded to h_frac fractional bits and saturated."""
        if not self.unbounded:
            return fp.tanh_q15(pre, tables["tanh"])
        activated = state_activation(self.activation, pre)
        return fp.saturate_s16(fp.change_frac(activated, fp.Z_FRAC_BITS, self.h_frac))

    def _requantize(self, dot: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        acc = fp.accumulate(
            dot, self.bias_s32[:, rows], self.weight_bits, self.effective_row_length
        )
        return fp.requantize(acc, self.multiplier[:, rows], self.shift[:, rows])

    def tables_needed(self) -> set[str]:
        return {"tanh", "sigmoid"} if self.recurrent_activation == "sigmoid" else {"tanh"}

    # -- emitter --

    def uses(self) -> set[str]:
        # the shared recurrent helpers of templates/ops.c.j2 (tables, their lookups) and of
        # kernels/common.c.j2 (table planes, fast requantization)
        flags = {"portable_recurrent" if self.portable_only else "optimized_recurrent"}
        if self.weight_bits == 16:
            flags.add("wide_rows")  # ops.c.j2's int64 row sum of int16 weights
        if self.blocked:
            flags.add("blocked_rows")  # ops.c.j2's blocked row sum of long int8 rows
        if self.hard_sigmoid:
            flags.add("hard_sigmoid")
        return flags

    def state_fields(self) -> list[dict[str, Any]]:
        label = cformat.c_comment(self.name)
        return [
            {
                "type": "int16_t",
                "name": "h_q15",
                "size": self.units,
                "comment": f"'{label}' hidden state, {self.h_format}",
            }
        ]

    def scratch_width(self) -> int:
        # reset_after: the new hidden state while the rows still read the old one;
        # reset_before: z and r * h of every unit (h is then updated in place)
        return self.units if self.reset_after else 2 * self.units

    @property
    def state_bytes(self) -> int:
        return 2 * self.units

    def context(self, index: int) -> dict[str, Any]:
        from lstm_embed.emit.layouts import gru as gru_layouts

        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "units": self.units,
            "row_length": self.row_length,
            "rows": self.rows,
            "row_names": list(self.row_names),
            "return_sequences": self.return_sequences,
            "reset_after": self.reset_after,
            "recurrent_activation": self.recurrent_activation,
            "hard_sigmoid": self.hard_sigmoid,
            "has_bias": self.has_bias,
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
            "activation": self.activation,
            "h_frac": self.h_frac,
            "h_format": self.h_format,
            **({} if self.portable_only else gru_layouts.kernel_context(self)),
        }

    def format(self) -> str:
        form = "reset_after" if self.reset_after else "reset_before"
        act = "" if self.activation == "tanh" else f", activation {self.activation}"
        return f"w int{self.weight_bits}, h {self.h_format}, {form}{act}"

    def flash_bytes(self) -> dict[str, int]:
        weights = 3 * self.units * self.row_length * self.weight_bits // 8
        return {"weights": weights, "biases": self.rows * self.units * fp.BIAS_ROW_BYTES}

    def kernel_stack_bytes(self) -> dict[str, int]:
        """Bytes of the local arrays each kernel keeps on the stack for this layer (as declared
        in templates/kinds/gru/): the [x; h_prev] copies and the row sums."""
        from lstm_embed.emit.layouts import gru as gl

        if self.portable_only:
            return dict.fromkeys(("reference", "plain", "dsp", "mve"), 0)
        m, n = self.input_size, self.units
        passes = gl.passes(self)
        rows = len(passes[0][1])  # the first pass's requantized rows: its acc[]
        words = (gl.padded(m, 2) + gl.padded(n, 2)) // 2
        lanes = gl.padded(m, gl.MVE_LANES) + gl.padded(n, gl.MVE_LANES)
        return {
            "reference": 0,
            "plain": (m + n) * (4 if self.input_shift else 2) + 4 * 3,
            "dsp": 4 * words + 4 * rows + (4 if len(passes) > 1 else 0),  # + the second's acc[1]
            "mve": 2 * lanes + 4 * 4 * rows,
        }

    def kernel_flash_bytes(self) -> dict[str, int]:
        """Constants of this layer in each kernel's layout (templates/kinds/gru/)."""
        from lstm_embed.emit.layouts import gru as gl

        portable = sum(self.flash_bytes().values())
        if self.portable_only:
            return dict.fromkeys(("reference", "plain", "dsp", "mve"), portable)
        plain = dsp = 0
        mve = self.rows * self.units * 4  # bias_s32
        for weight_rows, rows in gl.passes(self):
            requant = gl.requant_pairs(self, rows).size * 4
            plain += gl.plain_weights(self, weight_rows).size + requant
            dsp += gl.dsp_units(self, weight_rows, rows).size * 4
            if self.input_shift:
                mve += gl.mve_input_weights(self, weight_rows).size * 2
                mve += gl.mve_recurrent_weights(self, weight_rows).size
            else:
                mve += gl.mve_weights(self, weight_rows).size
            mve += gl.mve_requant(self, rows).size * 4 if gl.fast_requant(self) else requant
        plain += gl.plain_bias(self).size * 4
        return {"reference": portable, "plain": plain, "dsp": dsp, "mve": mve}


def candidate_preactivation(z: np.ndarray, r_q15: np.ndarray) -> np.ndarray:
    """reset_after: sat32(z_hx + round(r * z_hh / 2**15)), Z_FRAC_BITS; z (..., 4) rows."""
    recurrent = fp.rounding_shift_right(z[..., 3] * r_q15, 15)
    return fp.saturate_s32(z[..., 2] + recurrent)


def reset_hidden(r_q15: np.ndarray, h_q15: np.ndarray) -> np.ndarray:
    """reset_before: r * h rounded to Q0.15 (|r * h| < 2**30, so it stays in int16)."""
    return fp.rounding_shift_right(r_q15 * h_q15, 15)


def hidden_update(z_q15: np.ndarray, h_q15: np.ndarray, candidate_q15: np.ndarray) -> np.ndarray:
    """h' = z * h + (1 - z) * h~ = h~ + round(z * (h - h~) / 2**15): z in [0, 32767], so
    |z * (h - h~)| < 2**31 and h' lies between h~ and h (no saturation)."""
    return candidate_q15 + fp.rounding_shift_right(z_q15 * (h_q15 - candidate_q15), 15)
