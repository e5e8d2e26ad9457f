"""Rows of any length: the weight rounding of int8 rows too long for one int32 sum.

Such a row is summed in blocks (``fixedpoint.blocked_dot_s8``) into an accumulator of
2**s units (``fixedpoint.accumulator_shift``), so its bias is quantized in those units.
``rounding.rounded_weights`` computes the bias of rows that fit one int32 sum; this wrapper
gives every layer kind the same entry point for rows of any length.
"""

from __future__ import annotations

import numpy as np

from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding


def rounded_weights(
    rows: np.ndarray,
    bias: np.ndarray,
    scale: np.ndarray,
    activation_scale: float,
    bits: int,
    method: str,
    stats: rounding.InputStats | None,
    correct_bias: bool = True,
    row_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``rounding.rounded_weights`` for rows of any length (``row_length``: the effective
    length of the accumulator bound, default the rows' own)."""
    row_length = row_length or np.shape(rows)[-1]
    shift = fp.accumulator_shift(bits, row_length)
    if bits != 8 or shift == 0:
        return rounding.rounded_weights(
            rows, bias, scale, activation_scale, bits, method, stats, correct_bias, row_length
        )
    rounded = rounding.round_rows(rows, scale, bits, method, stats, correct_bias)
    unit = np.asarray(scale, np.float64) * 2.0**shift * activation_scale
    bias_q = fp.round_half_away((np.asarray(bias, np.float64) + rounded.bias_change) / unit)
    headroom = fp.accumulator_headroom(row_length, bits)
    return rounded.weights.astype(np.int8), fp.saturate(bias_q, -headroom, headroom).astype(
        np.int32
    )
