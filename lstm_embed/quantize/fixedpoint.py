"""Fixed-point arithmetic: every piece of integer math lives here once.

The numpy functions below are the definition of the arithmetic; the C templates implement the
same operations (``templates/lstm_embed_ops.h.j2``) and the tests hold them equal bit for bit.
Pure functions: arrays in, arrays (and formats) out. Rounding is to nearest with ties away from
zero for float->int conversions and ties towards +inf for integer right shifts (arithmetic shift
of ``v + 2**(s-1)``), saturation is always explicit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1
INT32_MAX = 2**31 - 1
Q15_ONE = 2**15
Z_FRAC_BITS = 16  # gate pre-activations: int32 with 16 fractional bits (range +/-32768)
WEIGHT_MAX = 127  # int8 weights are symmetric in [-127, 127]
ACTIVATION_MAX = 2**15  # |int16 activation| <= 32768


def saturate(values: np.ndarray, low: int, high: int) -> np.ndarray:
    return np.clip(values, low, high)


def saturate_s16(values: np.ndarray) -> np.ndarray:
    return saturate(values, INT16_MIN, INT16_MAX)


def saturate_s32(values: np.ndarray) -> np.ndarray:
    """Symmetric saturation to +/-INT32_MAX, so that a later |z| can never overflow."""
    return saturate(values, -INT32_MAX, INT32_MAX)


def round_half_away(values: np.ndarray) -> np.ndarray:
    """Float -> int64, nearest, ties away from zero (never truncation)."""
    values = np.asarray(values, dtype=np.float64)
    return (np.sign(values) * np.floor(np.abs(values) + 0.5)).astype(np.int64)


def rounding_shift_right(values: np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """(v + 2**(s-1)) >> s on int64, arithmetic shift; s == 0 leaves v unchanged."""
    values = np.asarray(values, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return (values + half) >> shift


@dataclass(frozen=True)
class Multiplier:
    """A positive real factor as ``multiplier * 2**-shift`` with multiplier in [2**30, 2**31)."""

    multiplier: int
    shift: int

    @property
    def real(self) -> float:
        return self.multiplier * 2.0**-self.shift


MIN_SHIFT, MAX_SHIFT = 1, 62


def quantize_multiplier(real: float) -> Multiplier:
    """Nearest (multiplier, shift) to ``real``; tiny factors flush to zero, huge ones saturate."""
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"multiplier must be finite and >= 0, got {real}")
    if real == 0:
        return Multiplier(0, MIN_SHIFT)
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2**exponent, mantissa in [0.5, 1)
    multiplier = round(mantissa * 2**31)
    shift = 31 - exponent
    if multiplier == 2**31:  # mantissa rounded up to 1.0
        multiplier, shift = 2**30, shift - 1
    if shift > MAX_SHIFT:
        multiplier = round(real * 2.0**MAX_SHIFT)
        return Multiplier(multiplier, MAX_SHIFT) if multiplier else Multiplier(0, MIN_SHIFT)
    if shift < MIN_SHIFT:
        raise ValueError(f"multiplier {real} is too large (at most 2**30)")
    return Multiplier(multiplier, shift)


def change_frac(values: np.ndarray, from_frac: int, to_frac: int) -> np.ndarray:
    """Integers with ``from_frac`` fractional bits -> ``to_frac``, on int64: a rounding shift
    right (fewer bits) or an exact multiplication by a power of two (more bits)."""
    values = np.asarray(values, dtype=np.int64)
    if to_frac >= from_frac:
        return values * (1 << (to_frac - from_frac))
    return rounding_shift_right(values, from_frac - to_frac)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """int32 accumulator -> int32, ``sat32((acc * multiplier + 2**(shift-1)) >> shift)``.

    |acc| < 2**31 and multiplier < 2**31, so the product and the rounding term fit in int64.
    """
    product = np.asarray(acc, dtype=np.int64) * np.asarray(multiplier, dtype=np.int64)
    return saturate_s32(rounding_shift_right(product, shift))


WEIGHT_BITS = (8, 16)
WIDE_ACC_SHIFT = 8  # int16-weight dot products (int64) are rounded by 2**8 into int32 range


def weight_max(bits: int) -> int:
    """Symmetric range of int8 (127) or int16 (32767) weights."""
    if bits not in WEIGHT_BITS:
        raise ValueError(f"weights of {bits} bits are not supported (supported: 8, 16)")
    return 2 ** (bits - 1) - 1


def quantize_rows(rows: np.ndarray, bits: int = 8, min_scale: np.ndarray | None = None):
    """Symmetric int8/int16 per row: (int array, float64 scale per row); real = q * scale.

    ``min_scale`` lets the caller widen a row's scale (e.g. so that its bias fits in int32).
    """
    top = weight_max(bits)
    rows = np.asarray(rows, dtype=np.float64)
    scale = np.max(np.abs(rows), axis=-1) / top
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    scale = np.where(scale > 0, scale, 1.0)  # an all-zero row: any scale represents it
    q = saturate(round_half_away(rows / scale[..., None]), -top, top)
    return q.astype(np.int8 if bits == 8 else np.int16), scale


def wide_accumulator(dot: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """int16-weight rows: sat32(round(dot / 2**WIDE_ACC_SHIFT) + bias), dot summed in int64."""
    return shifted_accumulator(dot, bias, WIDE_ACC_SHIFT)


def shifted_accumulator(dot: np.ndarray, bias: np.ndarray, acc_shift: int) -> np.ndarray:
    """sat32(round(dot / 2**acc_shift) + bias): the exact dot product (int64) of a row too long
    for one int32 sum, rounded once into an accumulator of 2**acc_shift units."""
    return saturate_s32(rounding_shift_right(dot, acc_shift) + np.asarray(bias, np.int64))


# int8 rows longer than this (input columns counted 2**input_shift times) could overflow one
# int32 sum: 516 * 127 * 2**15 < 2**31 <= 517 * 127 * 2**15.
INT8_ROW_MAX = INT32_MAX // (WEIGHT_MAX * ACTIVATION_MAX)
# Longer int8 rows are summed per block of at most this many columns, each block's int32 sum
# exact (512 * 127 * 2**15 < 2**31), the blocks added in int64 (exact: the dot product itself).
INT8_BLOCK_COLUMNS = 512
# ... and rounded by 2**s into int32 with s the least shift that leaves 2**30 of the int32
# range to the bias: max |dot| = row * 127 * 2**15 <= 2**(30 + s).
BLOCKED_BIAS_ROOM = 2**30


def int8_accumulator_shift(row_length: int) -> int:
    """0 for an int8 row whose int32 sum cannot overflow (the single-sum path); else the shift
    s >= 1 of its blocked sum: the least s with row_length * 127 * 2**15 <= 2**(30 + s)."""
    if row_length <= INT8_ROW_MAX:
        return 0
    peak = row_length * WEIGHT_MAX * ACTIVATION_MAX
    return max(1, (peak - 1).bit_length() - 30)


def accumulator_shift(bits: int, row_length: int | None = None) -> int:
    """Right shift from the exact dot product to the int32 accumulator: 0 (int8 rows that fit
    one int32 sum, or ``row_length`` None), ``int8_accumulator_shift`` (longer int8 rows),
    WIDE_ACC_SHIFT (int16 rows)."""
    if bits == 16:
        return WIDE_ACC_SHIFT
    return 0 if row_length is None else int8_accumulator_shift(row_length)


def accumulate(
    dot: np.ndarray, bias: np.ndarray, bits: int, row_length: int | None = None
) -> np.ndarray:
    """The int32 accumulator of a row: bias + dot for int8 rows that fit one int32 sum (the
    quantizer bounds |bias|); sat32(round(dot / 2**s) + bias) for longer int8 rows (blocked
    sums) and int16 rows (int64 sums). ``dot`` is the exact dot product (int64)."""
    shift = accumulator_shift(bits, row_length)
    return dot + bias if shift == 0 else shifted_accumulator(dot, bias, shift)


def blocked_dot_s8(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """w . a of int8 rows (..., d) and int16 activations (d,) as the C sums a long row: int32
    partial sums per block of INT8_BLOCK_COLUMNS columns, added in int64. Equal to the exact
    dot product (each block sum provably fits int32); the C kernels are tested against it."""
    w = np.asarray(weights, np.int64)
    a = np.asarray(activations, np.int64)
    total = np.zeros(w.shape[:-1], np.int64)
    for start in range(0, w.shape[-1], INT8_BLOCK_COLUMNS):
        block = w[..., start : start + INT8_BLOCK_COLUMNS] @ a[start : start + INT8_BLOCK_COLUMNS]
        assert np.all(np.abs(block) <= INT32_MAX), "an int8 block sum left int32"
        total += block
    return total


BIAS_ROW_BYTES = 4 + 4 + 1  # flash per output row: int32 bias, int32 multiplier, int8 shift


def accumulator_unit(bits: int, row_length: int | None = None) -> float:
    """Accumulator LSB in units of weight LSB * activation LSB (``accumulator_shift``)."""
    return 2.0 ** accumulator_shift(bits, row_length)


def accumulator_headroom(row_length: int, bits: int = 8) -> int:
    """Largest |bias| (in accumulator units) that cannot overflow the int32 accumulator.

    ``row_length`` counts a column whose partial sum is scaled by 2**k as 2**k columns.
    int8 rows that fit sum into int32 directly; longer int8 rows (blocked sums, rounded by
    2**s) and int16 rows (int64 sums) keep |bias| <= 2**30 so that only dot products beyond
    any calibrated range saturate.
    """
    if bits == 16 or row_length > INT8_ROW_MAX:
        return BLOCKED_BIAS_ROOM
    return INT32_MAX - row_length * WEIGHT_MAX * ACTIVATION_MAX


def quantize_bias_s32(bias: np.ndarray, acc_scale: np.ndarray) -> np.ndarray:
    return round_half_away(np.asarray(bias, dtype=np.float64) / acc_scale).astype(np.int32)


def row_scales(rows, bias, activation_scale: float, bits: int, row_length: int | None = None):
    """int8/int16 rows, their scales and the bias in accumulator units.

    The scales are widened where needed so that |bias_q| fits the accumulator headroom.
    Returns (weights, weight scale, bias_s32, accumulator scale / activation scale).
    """
    row_length = row_length or rows.shape[-1]
    unit = accumulator_unit(bits, row_length)
    headroom = accumulator_headroom(row_length, bits)
    min_scale = np.abs(bias) / (activation_scale * unit * headroom)
    weights, scale = quantize_rows(rows, bits, min_scale=min_scale)
    bias_s32 = quantize_bias_s32(bias, scale * activation_scale * unit)
    return weights, scale, bias_s32, scale * unit


# Largest factor a (multiplier, shift >= 1) pair holds. A larger one (a layer whose calibrated
# output is ~0 behind huge weights) changes no output: |acc| >= 1 times 2**30 already saturates
# every consumer (int16 outputs, activation tables, the softmax logit clamp), acc = 0 stays 0.
MAX_MULTIPLIER = (2**31 - 1) / 2


def multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (multiplier, shift) arrays for real factors of any shape."""
    real = np.minimum(real, MAX_MULTIPLIER)
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(real)]
    multiplier = np.array([p.multiplier for p in pairs], dtype=np.int64).reshape(np.shape(real))
    shift = np.array([p.shift for p in pairs], dtype=np.int64).reshape(np.shape(real))
    return multiplier, shift


# ---------------------------------------------------------------------------------------------
# Float <-> int16 at the model boundary (float32 arithmetic, mirrored exactly by the C code)


def quantize_input(x: np.ndarray, inv_scale: np.ndarray) -> np.ndarray:
    """float32 -> int16: x * inv_scale in float32, NaN -> 0, saturate, round half away."""
    v = np.asarray(x, dtype=np.float32) * np.asarray(inv_scale, dtype=np.float32)
    half = np.where(v >= 0, np.float32(0.5), np.float32(-0.5)).astype(np.float32)
    rounded = np.trunc((v + half).astype(np.float32))
    q = np.where(v >= INT16_MAX, INT16_MAX, np.where(v <= INT16_MIN, INT16_MIN, rounded))
    return np.where(np.isnan(v), 0, q).astype(np.int16)


def dequantize(y_q: np.ndarray, scale: float) -> np.ndarray:
    return np.asarray(y_q, dtype=np.float32) * np.float32(scale)


# ---------------------------------------------------------------------------------------------
# Activations. tanh: one increasing table e on [0, 2**log2_range) (Q0.15), read as the signed
# table E on [-range, range] (E[count + k] = e[k] = -E[count - k]) with linear interpolation;
# sigmoid reads the same table, as sigmoid(z) = (1 + tanh(z / 2)) / 2 holds exactly. exp (the
# softmax) needs no table: ``exp_neg_q15`` is 2**-(u log2 e) from a shift and a polynomial.


@dataclass(frozen=True)
class ActivationTable:
    name: str
    entries: np.ndarray  # int16, 2**log2_entries + 1 values of an increasing function, Q0.15
    log2_range: int

    @property
    def index_shift(self) -> int:
        """Right shift from a Z_FRAC_BITS input to a table index; also the interpolation bits."""
        log2_entries = (len(self.entries) - 1).bit_length() - 1
        return Z_FRAC_BITS + self.log2_range - log2_entries

    @property
    def limit(self) -> int:
        return (len(self.entries) - 1) << self.index_shift

    @functools.cached_property
    def signed_entries(self) -> np.ndarray:
        """An odd function's table over [-range, range]: what the C stores (int16)."""
        e = self.entries.astype(np.int64)
        return np.concatenate([-e[:0:-1], e])


@dataclass(frozen=True)
class SignedLookup:
    """f(z) = (E[j] * (2^shift - frac) + E[j+1] * frac + offset) >> out_shift for
    u = clamp(z, -limit, limit - 1) + limit, j = u >> shift, frac = u mod 2^shift: the
    interpolated table plus rounding (tanh), or halved around one half (sigmoid)."""

    shift: int
    limit: int
    offset: int
    out_shift: int


def tanh_lookup(table: ActivationTable) -> SignedLookup:
    shift = table.index_shift
    return SignedLookup(shift, table.limit, 1 << (shift - 1), shift)


def sigmoid_lookup(table: ActivationTable) -> SignedLookup:
    """sigmoid(z) = (Q15_ONE + tanh(z / 2)) / 2 from tanh's interpolation at twice the z,
    rounded once (halves down, so that tanh's 32767 gives 32767, an int16; rounding the
    interpolation first and then halving would bias every gate by -1/4 LSB, which drifts
    through the cell over long streams)."""
    shift = table.index_shift + 1
    offset = (Q15_ONE << shift) + (1 << shift) - 1
    return SignedLookup(shift, 2 * table.limit, offset, shift + 1)


def signed_lookup(table: ActivationTable, lookup: SignedLookup, z: np.ndarray) -> np.ndarray:
    e = table.signed_entries
    u = np.clip(np.asarray(z, dtype=np.int64), -lookup.limit, lookup.limit - 1) + lookup.limit
    j, frac = u >> lookup.shift, u & ((1 << lookup.shift) - 1)
    total = e[j] * ((1 << lookup.shift) - frac) + e[j + 1] * frac + lookup.offset
    return total >> lookup.out_shift


TABLE_FUNCTIONS = {"tanh": np.tanh}
TABLE_LOG2_RANGE = {"tanh": 3}  # tanh(8) is 1 - 2e-7; sigmoid(16) too
# 2**N intervals per sign, by measurement (scripts/table_sizes.py, docs/numerics.md):
# with int8 weights 128 intervals give the mean error of 256 on every trained sample (the weight
# rounding dominates; max within 0.05% of the range) for half the flash; int16 weights gain.
LOG2_ENTRIES_INT8 = 7
LOG2_ENTRIES_WIDE = 8


def default_log2_entries(weight_bits: Iterable[int]) -> int:
    return LOG2_ENTRIES_WIDE if any(b > 8 for b in weight_bits) else LOG2_ENTRIES_INT8


# functions -> the table they read
TABLE_OF = {"sigmoid": "tanh", "tanh": "tanh"}


def build_table(name: str, log2_entries: int) -> ActivationTable:
    """Knot values shifted by half the chord error of their intervals, so the interpolation
    error is centred on zero instead of one-sided (a one-sided error drifts through the cell)."""
    function, log2_range = TABLE_FUNCTIONS[name], TABLE_LOG2_RANGE[name]
    count = 2**log2_entries
    knots = np.arange(count + 1) * (2.0**log2_range / count)
    values = function(knots)
    chord_error = np.zeros(count)
    for k in range(count):
        u = np.linspace(knots[k], knots[k + 1], 33)
        chord = values[k] + (values[k + 1] - values[k]) * (u - knots[k]) / (u[-1] - u[0])
        errors = function(u) - chord
        chord_error[k] = errors[np.argmax(np.abs(errors))]
    correction = np.zeros(count + 1)
    correction[:-1] += chord_error / 4
    correction[1:] += chord_error / 4
    correction[0] = 0.0  # keep f(0) exact: tanh(0) = 0, so sigmoid(0) = 0.5
    entries = saturate(round_half_away((values + correction) * Q15_ONE), 0, INT16_MAX)
    return ActivationTable(name, np.maximum.accumulate(entries).astype(np.int16), log2_range)


def sigmoid_q15(z: np.ndarray, tanh_table: ActivationTable) -> np.ndarray:
    return signed_lookup(tanh_table, sigmoid_lookup(tanh_table), z)


def tanh_q15(z: np.ndarray, tanh_table: ActivationTable) -> np.ndarray:
    return signed_lookup(tanh_table, tanh_lookup(tanh_table), z)


# exp(-u) = 2**-n * 2**-f for u log2(e) = n + f: the shift n, and 2**-f = 2**t / 2 with t = 1 - f
# from a degree-4 polynomial of 2**t on [0, 1] (least squares on Chebyshev nodes, max error
# 3.8e-6, 0.06 LSB of Q0.15), Horner in Q30 on non-negative values only.
EXP_LOG2E_Q30 = 1549082005  # round(log2(e) * 2**30)
EXP_POLY_Q30 = (1073745686, 744070390, 259438920, 55531496, 14693065)  # 2**t, t^0 .. t^4
EXP_U_MAX = 16 << Z_FRAC_BITS  # exp(-16) is far below half an LSB; bounds u * log2(e)
EXP_V_FRAC_BITS = 24  # u log2(e) and t: the products stay below 2**55
EXP_ZERO_FROM = 16  # n >= 16: exp(-u) < 2**-16, rounds to 0 in Q0.15


def exp_neg_q15(u: np.ndarray) -> np.ndarray:
    """exp(-u) in Q0.15 for u >= 0 (Z_FRAC_BITS), rounded, at most INT16_MAX."""
    u = np.minimum(np.asarray(u, dtype=np.int64), EXP_U_MAX)
    v = (u * EXP_LOG2E_Q30) >> (30 + Z_FRAC_BITS - EXP_V_FRAC_BITS)  # u log2(e), Q24
    n = v >> EXP_V_FRAC_BITS
    t = (1 << EXP_V_FRAC_BITS) - (v & ((1 << EXP_V_FRAC_BITS) - 1))  # 1 - f, in (0, 1]
    p = np.full_like(v, EXP_POLY_Q30[-1])
    for c in EXP_POLY_Q30[-2::-1]:
        p = c + ((p * t) >> EXP_V_FRAC_BITS)
    shift = np.minimum(n, EXP_ZERO_FROM - 1) + 16  # 2**t / 2 * 2**-n, Q30 -> Q0.15
    e = (p + (np.int64(1) << (shift - 1))) >> shift
    return np.where(n >= EXP_ZERO_FROM, 0, np.minimum(e, INT16_MAX))


# clamp(slope * x + 1/2, 0, 1): Keras 3's relu6(x + 3) / 6 has slope 1/6, Keras 2's 0.2
HARD_SIGMOID_SLOPES = {
    "hard_sigmoid": quantize_multiplier(Q15_ONE / 6 / 2**Z_FRAC_BITS),
    "hard_sigmoid_keras2": quantize_multiplier(Q15_ONE * 0.2 / 2**Z_FRAC_BITS),
}
HARD_SIGMOID_SLOPE = HARD_SIGMOID_SLOPES["hard_sigmoid"]


def hard_sigmoid_q15(z: np.ndarray, kind: str = "hard_sigmoid") -> np.ndarray:
    m = HARD_SIGMOID_SLOPES[kind]
    return saturate(requantize(z, m.multiplier, m.shift) + Q15_ONE // 2, 0, INT16_MAX)


SOFTMAX_LOGIT_MAX = 2**30 - 1  # logits clamp here so that max - z fits in int32


def softmax_q15(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of Z_FRAC_BITS logits; integer division rounds to nearest."""
    z = saturate(np.asarray(z, dtype=np.int64), -SOFTMAX_LOGIT_MAX, SOFTMAX_LOGIT_MAX)
    e = exp_neg_q15(np.max(z, axis=-1, keepdims=True) - z)
    total = np.sum(e, axis=-1, keepdims=True)
    return np.minimum((e * Q15_ONE + total // 2) // total, INT16_MAX)


def softmax_q15_over(z: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``softmax_q15`` over the entries of the last axis where ``allowed`` (the others weigh
    0; a row with none allowed is all 0): the same integers as softmax_q15 of the allowed
    entries alone."""
    allowed = np.asarray(allowed, bool)
    z = saturate(np.asarray(z, dtype=np.int64), -SOFTMAX_LOGIT_MAX, SOFTMAX_LOGIT_MAX)
    top = np.max(np.where(allowed, z, -SOFTMAX_LOGIT_MAX), axis=-1, keepdims=True)
    e = np.where(allowed, exp_neg_q15(np.where(allowed, top - z, 0)), 0)
    total = np.sum(e, axis=-1, keepdims=True)
    weights = np.minimum((e * Q15_ONE + total // 2) // np.maximum(total, 1), INT16_MAX)
    return np.where(total > 0, weights, 0)


# ---------------------------------------------------------------------------------------------
# Per-feature affine and normalization (BatchNormalization without a Dense neighbour,
# LayerNormalization, activation layers)


def signed_multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``multipliers`` of |real| with the sign of real carried by the multiplier (int32 range
    either way: |multiplier| < 2**31); requantize rounds the negative products the same way."""
    real = np.asarray(real, np.float64)
    multiplier, shift = multipliers(np.abs(real))
    return np.where(real < 0, -multiplier, multiplier), shift


def affine_s16(v: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, offset: np.ndarray):
    """sat16(requantize(v, multiplier, shift) + offset): int32 v, signed multiplier, int32
    offset (summed in int64)."""
    return saturate_s16(requantize(v, multiplier, shift) + np.asarray(offset, np.int64))


def div_round_positive(a: np.ndarray, b: int) -> np.ndarray:
    """round(a / b) for a >= 0, b > 0, ties up: (a + b // 2) // b (C: the same on uint64)."""
    return (np.asarray(a, np.int64) + b // 2) // b


RSQRT_NORM_LOW = 60  # v is scaled by 4**k into [2**60, 2**62) before its square root
RSQRT_MAX = 2**62 - 1  # largest v rsqrt_multiplier takes (callers saturate to it)
RSQRT_ONE = 2**61 - 1  # (2**61 - 1) // isqrt(w) lies in [2**30, 2**31) for w in [2**60, 2**62)


def isqrt(v: np.ndarray) -> np.ndarray:
    """Exact floor(sqrt(v)) of non-negative int64 values (the C uses the digit-by-digit
    method, exact too)."""
    flat = [math.isqrt(int(a)) for a in np.ravel(v)]
    return np.array(flat, np.int64).reshape(np.shape(v))


def rsqrt_multiplier(v: np.ndarray, frac_bits: int = Z_FRAC_BITS):
    """(multiplier, shift) with requantize(d, multiplier, shift) ~ d * 2**frac_bits / sqrt(v),
    for 1 <= v <= RSQRT_MAX: v = w / 4**k with w in [2**60, 2**62), s = isqrt(w) in
    [2**30, 2**31) (relative error < 2**-30), multiplier = (2**61 - 1) // s, so 1/sqrt(v) =
    multiplier * 2**(k - 61) (relative error < 2**-29) and shift = 61 - frac_bits - k."""
    v = np.asarray(v, np.int64)
    bits = np.array([int(a).bit_length() for a in np.ravel(v)], np.int64).reshape(v.shape)
    k = np.maximum(0, (RSQRT_NORM_LOW + 2 - bits) // 2)
    s = isqrt(v << (2 * k))
    return RSQRT_ONE // s, 61 - frac_bits - k


RELU_THRESHOLD_LIMIT = 2**20  # |threshold| in input LSBs: x - threshold stays far inside int32


def relu_s16(x, threshold, max_value, multiplier, shift) -> np.ndarray:
    """Keras' relu(x, negative_slope, max_value, threshold) on int16 x (per-feature int32
    threshold and max_value in the input's LSBs, the slope as multiplier and shift):
    sat16(clip(x if x > threshold else 0, 0, max_value) + slope * min(x - threshold, 0))."""
    x = np.asarray(x, np.int64)
    positive = np.clip(np.where(x > threshold, x, 0), 0, max_value)
    negative = requantize(np.minimum(x - threshold, 0), multiplier, shift)
    return saturate_s16(positive + negative)


def div_round_half_away(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b rounded to nearest, ties away from zero, b > 0 (the C: the same on int32)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return np.sign(a) * ((np.abs(a) + b // 2) // b)
