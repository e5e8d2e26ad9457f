"""Quantization math shared by the recurrent layer kinds (LSTM, GRU): gate rows to integers,
the automatic input shift, the recurrent activation of the integer reference.

A recurrent kind describes its gates as float rows against [x_q; h_q15] (units of 2**-15, the
input columns divided by 2**input_shift), shaped (units, rows per unit, m + n), with one bias
per row; everything here works on that shape, whatever the kind's gates mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lstm_embed.kinds.base import Q15_SCALE, QuantContext, QuantizeError
from lstm_embed.quantize import fixedpoint as fp

RECURRENT_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
# the reader's name for a Keras 2 file's hard_sigmoid (slope 0.2 instead of 1/6); a model has
# one hard_sigmoid slope (its file's), so random models draw from RECURRENT_ACTIVATIONS only
ACCEPTED_RECURRENT_ACTIVATIONS = (*RECURRENT_ACTIVATIONS, "hard_sigmoid_keras2")
MAX_INPUT_SHIFT = 6
# the (state) activation of an LSTM's or GRU's candidate and output: tanh keeps the hidden state
# in Q0.15; relu and linear states are unbounded and get a format calibrated on the data
STATE_ACTIVATIONS = ("tanh", "relu", "linear")
# relu/linear states: range beyond the calibrated max before saturation (as SimpleRNN's)
STATE_HEADROOM = 1.5
# the coarsest int16 state format (Q14.1): a state needing more integer bits is refused
MIN_STATE_FRAC = 1


def state_frac_bits(layer: str, what: str, values: np.ndarray, headroom: float) -> int:
    """Fractional bits of an int16 format holding max|values| * headroom, in [1, 15]; a
    QuantizeError naming the layer when the calibrated values do not fit Q14.1 (a diverging
    relu/linear state has no fixed-point format)."""
    peak = float(np.max(np.abs(values))) * headroom if np.size(values) else 0.0
    if not math.isfinite(peak) or peak > 2.0 ** (15 - MIN_STATE_FRAC):
        raise QuantizeError(
            f"layer '{layer}': its {what} reaches {peak / headroom:.3g} on the calibration data"
            f" (x {headroom} headroom); the widest int16 format holds"
            f" {2.0 ** (15 - MIN_STATE_FRAC):.0f} (use activation tanh, or a model whose state"
            " stays bounded)"
        )
    int_bits = max(0, math.ceil(math.log2(max(peak, 1e-9))))
    return int(min(15, max(MIN_STATE_FRAC, 15 - int_bits)))


class StateActivation:
    """A float LSTM or GRU's ``activation`` (STATE_ACTIVATIONS) and the format of its h."""

    name: str
    activation: str

    def h_frac_bits(self, h: np.ndarray) -> int:
        """Fractional bits of the int16 h: 15 (Q0.15) for tanh, else calibrated."""
        if self.activation == "tanh":
            return 15
        return state_frac_bits(self.name, "output h", h, STATE_HEADROOM)


class QStateActivation:
    """A quantized LSTM or GRU: where its activation and weights send it (kernel, h format)."""

    activation: str
    weight_bits: int
    blocked: bool
    h_frac: int

    @property
    def portable_only(self) -> bool:
        """int16-weight layers (int64 row sums), int8 layers of blocked rows and relu/linear
        layers (the optimized kernels hold tanh tables) run the reference kernel everywhere."""
        return self.weight_bits != 8 or self.blocked or self.unbounded

    @property
    def unbounded(self) -> bool:
        """relu or linear: the candidate (and an LSTM's h) take the row sums' or the cell's
        values in h's calibrated format, not tanh's."""
        return self.activation != "tanh"

    @property
    def h_format(self) -> str:
        return f"Q{15 - self.h_frac}.{self.h_frac}"


def state_activation(kind: str, values: np.ndarray) -> np.ndarray:
    """relu or linear on integers of any format (tanh goes through its table)."""
    return np.maximum(values, 0) if kind == "relu" else values


def input_fold(feature_scale: np.ndarray, input_shift: int) -> np.ndarray:
    """Factor per input feature that puts a kernel row in units of 2**-15 of x_q, divided by
    2**input_shift: (m, 1), to multiply a Keras kernel (m, k)."""
    return np.asarray(feature_scale, np.float64)[:, None] / Q15_SCALE / 2**input_shift


def effective_row_length(input_size: int, units: int, input_shift: int) -> int:
    """Row length for the accumulator bound: input columns count 2**input_shift times."""
    return input_size * 2**input_shift + units


def max_row_length() -> int:
    """Longest effective int8 row summed in one int32 (longer rows: blocked sums, shift 0)."""
    return fp.INT8_ROW_MAX


def choose_input_shift(
    rows_for_shift: Callable[[int], np.ndarray],
    input_size: int,
    units: int,
    feature_scale: np.ndarray,
    x: np.ndarray,
    h: np.ndarray,
    uses_input: np.ndarray | None = None,
    uses_hidden: np.ndarray | None = None,
) -> int:
    """The input shift that minimizes the expected rounding noise of the gate sums.

    ``rows_for_shift(k)``: the float rows (units, rows per unit, m + n) for shift k. A row's
    int8 step is max(max|input part| / 2**k, max|recurrent part|) / 127; rounding noise of a
    column scales with step**2 times the power of what it multiplies: 4**k * E[x**2] for the
    input columns (in units of 2**-15), E[h**2] for the recurrent ones, both measured on the
    calibration data (x: the layer's float inputs, h: its float outputs). ``uses_input`` /
    ``uses_hidden`` (per row of a unit, default all) leave out the columns a row never
    multiplies (a GRU candidate's separate input and recurrent rows). On the trained samples
    this picks the same shift as simulating each candidate.
    """
    m = input_size
    input_power = float(np.sum(np.mean((x * Q15_SCALE / feature_scale) ** 2, axis=(0, 1))))
    hidden_power = float(np.sum(np.mean(h**2, axis=(0, 1))))
    best, best_cost = 0, np.inf
    for k in range(MAX_INPUT_SHIFT + 1):
        if effective_row_length(m, units, k) > max_row_length():
            break
        rows = rows_for_shift(k)
        step = np.maximum(np.abs(rows[..., :m]).max(-1), np.abs(rows[..., m:]).max(-1))
        if uses_input is None and uses_hidden is None:
            power: Any = 4**k * input_power + hidden_power
        else:
            gates = rows.shape[-2]
            use_x = np.ones(gates) if uses_input is None else np.asarray(uses_input, float)
            use_h = np.ones(gates) if uses_hidden is None else np.asarray(uses_hidden, float)
            power = 4**k * input_power * use_x + hidden_power * use_h
        cost = float(np.sum(step**2 * power))
        if cost < best_cost:
            best, best_cost = k, cost
    return best


def resolve_input_shift(ctx: QuantContext, choose: Callable[[], int]) -> int:
    """The --input-shift option for one layer: "auto" runs ``choose`` for int8 rows (int16
    rows have the precision without a shift), a number is taken as it is."""
    option = ctx.options.input_shift
    if option == "auto":
        return choose() if ctx.bits == 8 else 0
    return int(option)


def quantize_gate_rows(
    rows: np.ndarray, bias: np.ndarray, bits: int, row_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float rows against [x_q; h_q15] (units, rows per unit, m + n) and their biases
    (units, rows per unit) -> (weights, weight scale, bias_s32, multiplier, shift), every row
    requantized to gate pre-activations with ``fixedpoint.Z_FRAC_BITS`` fractional bits.

    ``row_length`` is the effective row length of the accumulator bound: int8 rows longer than
    ``fixedpoint.INT8_ROW_MAX`` get the blocked sum's accumulator (``accumulator_shift``).
    """
    weights, scale, bias_s32, acc_scale = fp.row_scales(rows, bias, Q15_SCALE, bits, row_length)
    multiplier, shift = fp.multipliers(acc_scale * Q15_SCALE * 2.0**fp.Z_FRAC_BITS)
    return weights, scale, bias_s32, multiplier, shift


def recurrent_activation(kind: str, z: np.ndarray, tables: dict) -> np.ndarray:
    """sigmoid (table) or hard_sigmoid (Keras 3's or Keras 2's slope) of Z_FRAC_BITS inputs."""
    if kind.startswith("hard_sigmoid"):
        return fp.hard_sigmoid_q15(z, kind)
    return fp.sigmoid_q15(z, tables["tanh"])
