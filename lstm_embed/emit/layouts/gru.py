"""Offline weight layouts of the optimized GRU kernels (templates/kinds/gru/).

Pure functions: a quantized GRU layer (int8 weights [unit][row z, r, h][x; h]) in, re-arranged
integer arrays out, holding exactly its values; the kernels compute the same int32 row sums as
the reference in another order, so their outputs equal it bit for bit.

A step is one or two passes over the units. reset_after: one pass, rows z, r, h over [x; h],
the candidate row's sum split where the recurrent columns start (its input and recurrent
parts are requantized apart). reset_before: rows z, r over [x; h], then, once r * h of every
unit is known, row h over [x; r * h]. So every layout keeps the input columns and the
recurrent columns apart, each padded to the kernel's group on its own. The SIMD layouts hold
the input columns as int16 w * 2**input_shift: the input shift costs nothing in the loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.layouts.lstm import MVE_GROUP
from lstm_embed.emit.layouts.rows import (
    FAST_REQUANT_MIN_SHIFT,
    MVE_LANES,
    GRURows,
    c_int32_array,
    fast_requant,
    padded,
    wrap_s32,
)

OFFSET_W, OFFSET_A = 128, 32768  # plain kernel: uint8 w + 128, uint16 a + 32768


def passes(layer: GRURows) -> list[tuple[list[int], list[int]]]:
    """(weight rows, requantized rows) of each pass over the units."""
    if layer.reset_after:
        return [([0, 1, 2], [0, 1, 2, 3])]
    return [([0, 1], [0, 1]), ([2], [2])]


def _split(layer: GRURows, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """(input part (units, 3, Xp), recurrent part (units, 3, Hp)) int64, zero-padded to
    multiples of ``multiple`` columns."""
    m, n = layer.input_size, layer.units
    w = layer.weights_s8.astype(np.int64)
    x = np.zeros((n, 3, padded(m, multiple)), np.int64)
    h = np.zeros((n, 3, padded(n, multiple)), np.int64)
    x[..., :m] = w[..., :m]
    h[..., :n] = w[..., m:]
    return x, h


def requant_pairs(layer: GRURows, rows: list[int]) -> np.ndarray:
    """(units, len(rows), 2) {multiplier, shift}, the shift minus 33 for ``fast_requant``
    layers (layouts.requant_pairs)."""
    offset = FAST_REQUANT_MIN_SHIFT if fast_requant(layer) else 0
    mult = layer.multiplier[:, rows].astype(np.int64)
    return np.stack([mult, layer.shift[:, rows].astype(np.int64) - offset], axis=-1)


# ---------------------------------------------------------------------------------------------
# Plain C (Cortex-M0/M3): uint8 w + 128 against uint16 a + 32768, offsets folded into the bias


def plain_weights(layer: GRURows, rows: list[int]) -> np.ndarray:
    """uint8 w + 128 of weight rows ``rows``, per unit: input columns [k][row], then
    recurrent columns [k][row]; one pointer walks a unit's rows column by column."""
    x, h = _split(layer, 1)
    units = layer.units
    parts = [p[:, rows].transpose(0, 2, 1).reshape(units, -1) for p in (x, h)]
    return np.concatenate(parts, axis=1).reshape(-1) + OFFSET_W


def plain_bias(layer: GRURows) -> np.ndarray:
    """Bias of each requantized row with the offset terms of the columns it multiplies folded
    in, modulo 2**32, [unit][row].

    sum(w*a) = sum((w+128)(a+32768)) - 32768*sum(w+128) - 128*sum(a+32768) + K*128*32768; the
    kernel subtracts 128*sum(stored a) of the input and of the recurrent columns once per step
    (per pass). Input columns are stored as (x + 32768) * 2**k, so their offset terms carry 2**k.
    """
    w = layer.weights_s8.astype(np.int64) + OFFSET_W
    m, n, k = layer.input_size, layer.units, layer.input_shift
    x_terms = (-OFFSET_A * w[..., :m].sum(axis=2) + m * OFFSET_W * OFFSET_A) * 2**k  # (u, 3)
    h_terms = -OFFSET_A * w[..., m:].sum(axis=2) + n * OFFSET_W * OFFSET_A
    bias = layer.bias_s32.astype(np.int64).copy()
    bias[:, :2] += x_terms[:, :2] + h_terms[:, :2]
    if layer.reset_after:
        bias[:, 2] += x_terms[:, 2]  # hx
        bias[:, 3] += h_terms[:, 2]  # hh
    else:
        bias[:, 2] += x_terms[:, 2] + h_terms[:, 2]  # the recurrent columns hold r * h
    return wrap_s32(bias)


# ---------------------------------------------------------------------------------------------
# DSP extension (Cortex-M4/M7/M33): SMLALD / SMLAD on halfword pairs


def _halfword_words(values: np.ndarray) -> np.ndarray:
    """(..., 2j) int16 values -> (..., j) int32 words of two halfwords, low half first."""
    lo, hi = values[..., 0::2], values[..., 1::2]
    return wrap_s32((lo & 0xFFFF) | (hi << 16))


def dsp_header_words(weight_rows: list[int]) -> int:
    """Start values at the head of a unit's record: S_zr (2 words) and T_z for rows z, r;
    the start of the candidate's recurrent sum for row h."""
    return (3 if 0 in weight_rows else 0) + (1 if 2 in weight_rows else 0)


def dsp_units(layer: GRURows, weight_rows: list[int], rows: list[int]) -> np.ndarray:
    """One int32 record per unit for one pass, read through one pointer by the DSP kernel:
    [header (dsp_header_words), recurrent column pairs j {rows}, (reset_after: the bias of
    the candidate's input part), input column pairs j {rows}, requantization {multiplier,
    shift (- 33)} per requantized row].

    Rows z, r go as one halfword pair per word, w_z + 256 w_r: S_zr = b_z + 256 b_r starts
    their 64-bit SMLALD sum over the recurrent columns, T_z = b_z the SMLAD sum of w_z a (the
    low bytes, SXTB16), so that acc_r = (S_zr - T_z) >> 8 exactly (|w| <= 127 keeps
    w_z + 256 w_r in int16). The candidate row (w_h) goes as plain halfword pairs, its sum
    starting at its recurrent bias (reset_after) or its bias (reset_before, where its
    recurrent columns multiply r * h). Input column pairs hold int16 w * 2**k of every row of
    the pass, one word each (one SMLAD), added to the finished row sums.
    """
    units = layer.units
    x, h = _split(layer, 2)
    b = layer.bias_s32.astype(np.int64)
    header, recurrent, middle = [], [], []
    if 0 in weight_rows:  # z and r
        s_zr = b[:, 0] + 256 * b[:, 1]
        header += [s_zr, s_zr >> 32, b[:, 0]]
        recurrent.append(_halfword_words(h[:, 0] + 256 * h[:, 1]))
    if 2 in weight_rows:  # the candidate
        header.append(b[:, 3] if layer.reset_after else b[:, 2])
        recurrent.append(_halfword_words(h[:, 2]))
        if layer.reset_after:
            middle.append(b[:, 2:3])
    x_part = _halfword_words(x[:, weight_rows] << layer.input_shift)  # (u, rows, Xp/2)
    parts = [
        np.stack(header, axis=-1),
        np.stack(recurrent, axis=-1).reshape(units, -1),
        *middle,
        x_part.transpose(0, 2, 1).reshape(units, -1),
        requant_pairs(layer, rows).reshape(units, -1),
    ]
    return wrap_s32(np.concatenate(parts, axis=1)).reshape(-1)


# ---------------------------------------------------------------------------------------------
# MVE (Cortex-M55): 8-lane VMLADAVA, activations of 4 units per vector


def _chunks(values: np.ndarray) -> np.ndarray:
    """(units, rows, columns) -> [unit][chunk of 8 columns][row][8], flattened."""
    u, rows, cols = values.shape
    return values.reshape(u, rows, cols // MVE_LANES, MVE_LANES).transpose(0, 2, 1, 3).reshape(-1)


def mve_input_weights(layer: GRURows, weight_rows: list[int]) -> np.ndarray:
    """Input columns [unit][chunk of 8][row][8]: int8 w, or int16 w * 2**k with an input
    shift (|w| * 2**k <= 127 * 64)."""
    x, _ = _split(layer, MVE_LANES)
    return _chunks(x[:, weight_rows] << layer.input_shift)


def mve_recurrent_weights(layer: GRURows, weight_rows: list[int]) -> np.ndarray:
    """int8 recurrent columns [unit][chunk of 8][row][8]."""
    _, h = _split(layer, MVE_LANES)
    return _chunks(h[:, weight_rows])


def mve_weights(layer: GRURows, weight_rows: list[int]) -> np.ndarray:
    """Without an input shift: one int8 record per unit, its input chunks then its recurrent
    chunks ([chunk of 8][row][8] each), so that one pointer walks a unit."""
    units = layer.units
    x = mve_input_weights(layer, weight_rows).reshape(units, -1)
    h = mve_recurrent_weights(layer, weight_rows).reshape(units, -1)
    return np.concatenate([x, h], axis=1).reshape(-1)


def mve_requant(layer: GRURows, rows: list[int]) -> np.ndarray:
    """[group of 4 units][row]{multiplier x 4 lanes, -(shift - 32) x 4 lanes} for
    VRSHL(VMULH(acc, multiplier), -(shift - 32)) of ``fast_requant`` layers; lanes past the
    last unit hold multiplier 0."""
    groups, count = padded(layer.units, MVE_GROUP), len(rows)
    mult = np.zeros((groups, count), np.int64)
    shift = np.full((groups, count), 33, np.int64)
    mult[: layer.units] = layer.multiplier[:, rows]
    shift[: layer.units] = layer.shift[:, rows]
    lanes = np.stack([mult, 32 - shift], axis=-1).reshape(groups // MVE_GROUP, MVE_GROUP, count, 2)
    return lanes.transpose(0, 2, 3, 1).reshape(-1)


def kernel_context(layer: GRURows) -> dict[str, Any]:
    """Template context of the optimized GRU kernels for one int8 layer: one entry per pass."""
    m, n = layer.input_size, layer.units
    context_passes = []
    for weight_rows, rows in passes(layer):
        plain = plain_weights(layer, weight_rows)
        dsp = dsp_units(layer, weight_rows, rows)
        mve_x = mve_input_weights(layer, weight_rows)
        mve_h = mve_recurrent_weights(layer, weight_rows)
        mve_rq = mve_requant(layer, rows)
        mve_w = mve_weights(layer, weight_rows)
        context_passes.append(
            {
                "weight_rows": weight_rows,
                "rows": rows,
                "plain_weights": cformat.c_int_array(plain, per_line=32),
                "plain_weights_count": plain.size,
                "requant_pairs": cformat.c_int_array(requant_pairs(layer, rows), per_line=8),
                "dsp_header_words": dsp_header_words(weight_rows),
                "dsp_units": c_int32_array(dsp, per_line=16),
                "dsp_units_count": dsp.size,
                "mve_input_weights": cformat.c_int_array(mve_x, per_line=32),
                "mve_input_weights_count": mve_x.size,
                "mve_recurrent_weights": cformat.c_int_array(mve_h, per_line=32),
                "mve_recurrent_weights_count": mve_h.size,
                "mve_weights": cformat.c_int_array(mve_w, per_line=32),
                "mve_weights_count": mve_w.size,
                "mve_requant": cformat.c_int_array(mve_rq, per_line=8),
                "mve_requant_count": mve_rq.size,
            }
        )
    return {
        "fast_requant": fast_requant(layer),
        "passes": context_passes,
        "plain_bias": c_int32_array(plain_bias(layer)),
        "x_dsp": padded(m, 2),
        "h_dsp": padded(n, 2),
        "x_mve": padded(m, MVE_LANES),
        "h_mve": padded(n, MVE_LANES),
    }
