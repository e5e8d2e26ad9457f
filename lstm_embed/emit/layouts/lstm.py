"""Offline weight and table layouts for the optimized LSTM kernels (templates/kinds/lstm/).

Pure functions: the quantized arrays in, re-arranged integer arrays out. Every layout holds
exactly the values of the reference layout (int8 weights [unit][gate][k]); the kernels compute
the same int32 row sums in another order, so their outputs equal the reference bit for bit.

A layer with an input shift k > 0 has acc = bias + (input columns' sum) * 2**k + (recurrent
columns' sum). The factor 2**k is put where it costs no instruction: in the plain kernel's
stored input activations, in the DSP and MVE kernels' input weights (as int16, |w| * 2**k
<= 127 * 64); the SIMD layouts pad the input columns to whole groups of their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.layouts.rows import (
    FAST_REQUANT_MIN_SHIFT,
    MVE_LANES,
    GateRows,
    c_int32_array,
    column_groups,
    fast_requant,
    packed_requant,
    padded,
    with_packed_shift,
    wrap_s32,
)

__all__ = [
    "FAST_REQUANT_MIN_SHIFT",
    "MVE_LANES",
    "column_groups",
    "fast_requant",
    "packed_requant",
    "padded",
    "with_packed_shift",
    "wrap_s32",
]


def layer_groups(layer: GateRows, multiple: int) -> tuple[int, int]:
    return column_groups(layer.input_size, layer.units, layer.input_shift, multiple)


def _padded_weights(layer: GateRows, multiple: int) -> np.ndarray:
    """(units, 4, columns of ``layer_groups``) int64, zero in the padding columns."""
    m, k = layer.input_size, layer.row_length
    x_columns, columns = layer_groups(layer, multiple)
    w = np.zeros((layer.units, 4, columns), dtype=np.int64)
    w[:, :, :m] = layer.weights_s8[..., :m]
    w[:, :, x_columns : x_columns + k - m] = layer.weights_s8[..., m:]
    return w


def dsp_weights(layer: GateRows) -> np.ndarray:
    """int32 words of two int16 halfwords wA + 256*wB (columns 2j, 2j+1; low half first) for
    the row pairs (i, f) and (g, o) of each unit; with an input shift, of the recurrent
    columns only (the input columns are in ``dsp_input_weights``).

    Order [unit][column pair j][row pair p]: one 64-bit load gives both row pairs' words for
    two columns. SMLALD on a word gives sum(wA*a) + 256*sum(wB*a); SXTB16 of
    the same word recovers wA (the low byte of wA + 256*wB), so SMLAD gives sum(wA*a) and
    wB's sum is the exact difference >> 8. |w| <= 127 keeps wA + 256*wB inside int16.
    """
    x_columns, _ = layer_groups(layer, 2)
    w = _padded_weights(layer, 2)[:, :, x_columns if layer.input_shift else 0 :]  # (u, 4, Kp)
    pairs = w[:, [0, 2], :] + 256 * w[:, [1, 3], :]  # (u, 2, Kp): (i + 256 f), (g + 256 o)
    units, _, kp = pairs.shape
    halves = pairs.reshape(units, 2, kp // 2, 2).transpose(0, 2, 1, 3)
    return wrap_s32((halves[..., 0] & 0xFFFF) | (halves[..., 1] << 16)).reshape(-1)


def dsp_input_weights(layer: GateRows) -> np.ndarray:
    """Input columns of a layer with an input shift k: int32 words of two int16 halfwords
    w * 2^k (columns 2j, 2j+1), [unit][column pair j][gate i, f, g, o], one SMLAD per row and
    column pair. |w| * 2^k <= 127 * 64 fits int16; the scaled input part adds to the row sums
    directly, so that the recurrent part keeps the layout and loop of a layer without shift.
    """
    x_columns, _ = layer_groups(layer, 2)
    w = _padded_weights(layer, 2)[:, :, :x_columns] << layer.input_shift  # (u, 4, Xp)
    units = layer.units
    halves = w.reshape(units, 4, x_columns // 2, 2).transpose(0, 2, 1, 3)
    return wrap_s32((halves[..., 0] & 0xFFFF) | (halves[..., 1] << 16)).reshape(-1)


def dsp_start_values(layer: GateRows) -> tuple[np.ndarray, np.ndarray]:
    """(S_if, S_go) per unit: bias_i + 256*bias_f and bias_g + 256*bias_o (int64)."""
    b = layer.bias_s32.astype(np.int64).reshape(layer.units, 4)
    return b[:, 0] + 256 * b[:, 1], b[:, 2] + 256 * b[:, 3]


# One word per start value costs a sign extension per row pair (2 instructions per unit, measured
# at 1/3 on M4: 400 -> 406 per step) for 8 bytes per unit: taken from this many units on
COMPACT_HEADER_MIN_UNITS = 16


def dsp_header_words(layer: GateRows) -> int:
    """4 when the layer has COMPACT_HEADER_MIN_UNITS units or more and every start value fits
    int32 (one word each, sign-extended by the kernel), else 6 (low and high words)."""
    s_if, s_go = dsp_start_values(layer)
    fits = np.all(np.abs(np.concatenate([s_if, s_go])) < 2**31 - 1)
    return 4 if fits and layer.units >= COMPACT_HEADER_MIN_UNITS else 6


def dsp_units(layer: GateRows) -> np.ndarray:
    """One int32 record per unit, read through a single pointer by the DSP kernel:
    [S_if, S_go (one word each, or low and high words: ``dsp_header_words``), T_i, T_g,
    weights (dsp_weights), input weights (dsp_input_weights, only with an input shift),
    requant (4 or 8 words)].

    S_if = bias_i + 256*bias_f and S_go = bias_g + 256*bias_o start the 64-bit SMLALD sums
    (two's complement, low word first); T_i = bias_i and T_g = bias_g start the SMLAD sums, so
    that acc_f = (S_if - T_i) >> 8 carries bias_f exactly.
    """
    units = layer.units
    b = layer.bias_s32.astype(np.int64).reshape(units, 4)
    s_if, s_go = dsp_start_values(layer)
    if dsp_header_words(layer) == 4:
        header = np.stack([s_if, s_go, b[:, 0], b[:, 2]], axis=-1)
    else:
        header = np.stack([s_if, s_if >> 32, s_go, s_go >> 32, b[:, 0], b[:, 2]], axis=-1)
    parts = [header, dsp_weights(layer).reshape(units, -1)]
    if layer.input_shift:
        parts.append(dsp_input_weights(layer).reshape(units, -1))
    parts.append(requant_pairs(layer).reshape(units, -1))
    return wrap_s32(np.concatenate(parts, axis=1)).reshape(-1)


def mve_weights(layer: GateRows) -> np.ndarray:
    """int8 [unit][chunk of 8 columns][gate][8]: the four rows of a unit advance together.
    With an input shift, of the recurrent columns only (inputs in ``mve_input_weights``)."""
    x_columns, _ = layer_groups(layer, MVE_LANES)
    w = _padded_weights(layer, MVE_LANES)[:, :, x_columns if layer.input_shift else 0 :]
    units, gates, kp = w.shape
    return w.reshape(units, gates, kp // MVE_LANES, MVE_LANES).transpose(0, 2, 1, 3).reshape(-1)


def mve_input_weights(layer: GateRows) -> np.ndarray:
    """Input columns of a layer with an input shift k: int16 w * 2^k in the order of
    ``mve_weights``, read with a halfword load into the same VMLADAVA.S16 (|w| * 2^k <= 127 * 64),
    so that the scaled input part costs what an unscaled chunk does."""
    if layer.input_shift == 0:
        return np.zeros(0, dtype=np.int64)
    x_columns, _ = layer_groups(layer, MVE_LANES)
    w = _padded_weights(layer, MVE_LANES)[:, :, :x_columns] << layer.input_shift
    units, gates, kp = w.shape
    return w.reshape(units, gates, kp // MVE_LANES, MVE_LANES).transpose(0, 2, 1, 3).reshape(-1)


MVE_GROUP = 4  # units whose gates are activated together, one per int32 lane


def mve_requant(layer: GateRows) -> np.ndarray:
    """[group of 4 units][gate]{multiplier x 4 lanes, -(shift - 32) x 4 lanes} for the vector
    requantization z = VRSHL(VMULH(acc, multiplier), -(shift - 32)) of ``fast_requant`` layers:
    (hi + 2^(s-33)) >> (s-32) with hi the high word of acc * multiplier. Lanes past the last
    unit hold multiplier 0."""
    groups = padded(layer.units, MVE_GROUP)
    m = np.zeros((groups, 4), dtype=np.int64)
    s = np.full((groups, 4), 33, dtype=np.int64)
    m[: layer.units] = layer.multiplier
    s[: layer.units] = layer.shift
    lanes = np.stack([m, 32 - s], axis=-1).reshape(groups // MVE_GROUP, MVE_GROUP, 4, 2)
    return lanes.transpose(0, 2, 3, 1).reshape(-1)


def plain_columns(layer: GateRows) -> int:
    """Columns of the plain layout: K padded to even (the kernel sums two columns a pass)."""
    return padded(layer.row_length, 2)


def plain_weights(layer: GateRows) -> np.ndarray:
    """uint8 w + 128, [unit][k][gate], padding columns 0 (an activation of 0 + 0 there adds
    nothing): unsigned byte loads need no sign extension (Cortex-M0)."""
    w = np.zeros((layer.units, plain_columns(layer), 4), dtype=np.int64)
    w[:, : layer.row_length, :] = layer.weights_s8.astype(np.int64).transpose(0, 2, 1) + 128
    return w.reshape(-1)


def plain_bias(layer: GateRows) -> np.ndarray:
    """Bias with the offsets folded in, modulo 2^32, [unit][gate].

    sum(w*a) = sum((w+128)(a+32768)) - 32768*sum(w+128) - 128*sum(a+32768) + K*128*32768;
    the kernel adds the products in uint32 and subtracts 128*sum(a+32768) once per step.
    With an input shift k the input part's offset terms are scaled by 2^k: the kernel stores
    the input activations as (x+32768)*2^k, so that its products and its correction
    -128*sum(stored activations) carry the factor 2^k.
    """
    w = layer.weights_s8.astype(np.int64) + 128
    m = layer.input_size
    x_terms = -32768 * w[..., :m].sum(axis=2) + m * 128 * 32768
    h_terms = -32768 * w[..., m:].sum(axis=2) + layer.units * 128 * 32768
    return wrap_s32(layer.bias_s32 + x_terms * 2**layer.input_shift + h_terms)


def requant_pairs(layer: GateRows) -> np.ndarray:
    """[unit][gate]{multiplier, shift - 33} when ``fast_requant``, else {multiplier, shift}.

    Fast: z = ((hi >> (s - 33)) + 1) >> 1 with hi the high word of acc * multiplier, which
    equals (hi + 2^(s-33)) >> (s-32), the rounded shift (s >= 33 puts the rounding bit in hi).
    """
    if packed_requant(layer):  # one word per row
        return layer.multiplier.astype(np.int64).reshape(-1)
    offset = FAST_REQUANT_MIN_SHIFT if fast_requant(layer) else 0
    shift = layer.shift.astype(np.int64) - offset
    return np.stack([layer.multiplier.astype(np.int64), shift], axis=-1).reshape(-1)


# [x; h_prev] copies up to this many bytes stay local (in registers or a few stack words);
# larger ones live in the caller's state (measured: moving 8 bytes at 1/3 cost M4 2
# instructions per step)
LOCAL_ROWS_MAX_BYTES = 64


def rows_buffers(layer: GateRows) -> tuple[int, int]:
    """(int32 words, int16 halfwords) of the [x; h_prev] copies the DSP and plain kernels make
    in the caller's state, the largest of each type; (0, 0) when both are small enough to stay
    local. The MVE kernel keeps its copy local: in the state it cost 11% at 6/64 (GCC 12)."""
    columns = plain_columns(layer)
    dsp_words = layer_groups(layer, 2)[1] // 2
    plain_bytes = columns * (4 if layer.input_shift else 2)
    if max(4 * dsp_words, plain_bytes) <= LOCAL_ROWS_MAX_BYTES:
        return 0, 0
    return max(dsp_words, columns if layer.input_shift else 0), (
        0 if layer.input_shift else columns
    )


def kernel_context(layer: GateRows) -> dict[str, Any]:
    """Template context of the optimized LSTM kernels (templates/kinds/lstm/) for one int8 layer."""
    dsp = dsp_units(layer)
    mve = mve_weights(layer)
    x_dsp, row_dsp = layer_groups(layer, 2)
    x_mve, row_mve = layer_groups(layer, MVE_LANES)
    return {
        "plain_columns": plain_columns(layer),
        "x_dsp": x_dsp,
        "row_dsp": row_dsp,
        "x_mve": x_mve,
        "row_mve": row_mve,
        "dsp_units": c_int32_array(dsp, per_line=16),
        "dsp_units_count": dsp.size,
        "dsp_header_words": dsp_header_words(layer),
        "mve_weights": cformat.c_int_array(mve, per_line=32),
        "mve_weights_count": mve.size,
        "mve_input_weights": cformat.c_int_array(mve_input_weights(layer), per_line=32),
        "mve_requant": cformat.c_int_array(mve_requant(layer), per_line=8),
        "mve_requant_count": mve_requant(layer).size,
        "plain_weights": cformat.c_int_array(plain_weights(layer), per_line=32),
        "plain_bias": c_int32_array(plain_bias(layer)),
        "fast_requant": fast_requant(layer),
        "rows_in_state": rows_buffers(layer) != (0, 0),
        "packed_requant": packed_requant(layer),
        "requant_words": requant_pairs(layer).size,
        "requant_pairs": cformat.c_int_array(requant_pairs(layer), per_line=8),
    }
