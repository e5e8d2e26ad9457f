"""Offline layouts of the Dense rows (Dense, and Conv1D's window rows) for the optimized kernels
(templates/kinds/dense/kernels.c.j2): the quantized int8 rows in, re-arranged integer arrays out.

Both layouts take the rows four at a time (a "quad"; the last quad padded with zero rows) so that
one load of the activations feeds four rows. They hold exactly the reference rows' values, and the
kernels compute each row's int32 sum bias + w . x exactly (the quantizer bounds it), so their
outputs equal the portable kernel's bit for bit. Rows of int16 weights, and int8 rows too long
for one int32 sum (blocked rows), keep the portable kernel.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.layouts.rows import MVE_LANES, c_int32_array, padded, wrap_s32

QUAD = 4  # rows summed together
DSP_HEADER_WORDS = 6  # S01 (low, high word), S23 (low, high word), T0, T2


class DenseRows(Protocol):
    units: int
    input_size: int
    weights: np.ndarray  # (units, input_size) int8 or int16
    bias_s32: np.ndarray  # (units,)

    @property
    def weight_bits(self) -> int: ...

    @property
    def blocked(self) -> bool: ...


def optimized(layer: DenseRows) -> bool:
    """Whether the DSP and MVE kernels run this layer (else the portable kernel on every core)."""
    return layer.weight_bits == 8 and not layer.blocked


def _quad_rows(layer: DenseRows, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights (quads, 4, columns), biases (quads, 4)) int64, zero in the padding."""
    rows = padded(layer.units, QUAD)
    w = np.zeros((rows, columns), np.int64)
    w[: layer.units, : layer.input_size] = layer.weights
    b = np.zeros(rows, np.int64)
    b[: layer.units] = layer.bias_s32
    return w.reshape(-1, QUAD, columns), b.reshape(-1, QUAD)


def dsp_quads(layer: DenseRows) -> np.ndarray:
    """One int32 record per quad of rows (r0, r1, r2, r3):
    [S01 low, S01 high, S23 low, S23 high, T0, T2, then per column pair j the words of (r0, r1)
    and (r2, r3)], each word two halfwords wA + 256 wB (columns 2j, 2j + 1, low half first; an
    odd last column has a zero high half).

    SMLALD of a word and the activations' word (x[2j], x[2j + 1]) adds sum(wA x) + 256 sum(wB x)
    to the 64-bit S, SXTB16 of the word recovers wA (the low byte of each halfword) for SMLAD's
    32-bit T, and row B's sum is (S - T) >> 8 exactly. |w| <= 127 keeps wA + 256 wB in int16.
    S starts at bias_A + 256 bias_B, T at bias_A.
    """
    w, b = _quad_rows(layer, padded(layer.input_size, 2))
    quads = w.shape[0]
    halves = w[:, 0::2] + 256 * w[:, 1::2]  # (quads, 2 row pairs, columns)
    words = (halves[..., 0::2] & 0xFFFF) | (halves[..., 1::2] << 16)  # (quads, 2, pairs)
    body = words.transpose(0, 2, 1).reshape(quads, -1)  # [pair j][row pair]
    s01, s23 = b[:, 0] + 256 * b[:, 1], b[:, 2] + 256 * b[:, 3]
    header = np.stack(
        [s01 & 0xFFFFFFFF, s01 >> 32, s23 & 0xFFFFFFFF, s23 >> 32, b[:, 0], b[:, 2]], axis=1
    )
    return wrap_s32(np.concatenate([header, body], axis=1)).reshape(-1)


def mve_weights(layer: DenseRows) -> np.ndarray:
    """int8 weights [quad][chunk of 8 columns][row of the quad][8], zero-padded rows and columns:
    one 8-lane load of the activations feeds the quad's four VLDRB.S16 + VMLADAVA.S16."""
    w, _ = _quad_rows(layer, padded(layer.input_size, MVE_LANES))
    quads, _, columns = w.shape
    chunks = w.reshape(quads, QUAD, columns // MVE_LANES, MVE_LANES).transpose(0, 2, 1, 3)
    return chunks.reshape(-1)


def quad_bias(layer: DenseRows) -> np.ndarray:
    """The biases, zero-padded to whole quads (the MVE kernel's start values)."""
    return _quad_rows(layer, padded(layer.input_size, 2))[1].reshape(-1)


def context(layer: DenseRows) -> dict[str, Any]:
    """The optimized layouts' C literals and sizes for the Dense templates."""
    if not optimized(layer):
        return {"optimized": False, "depthwise": 0}
    quads = padded(layer.units, QUAD) // QUAD
    dsp = dsp_quads(layer)
    mve = mve_weights(layer)
    return {
        "optimized": True,
        "depthwise": 0,  # Conv1D's context says otherwise (layouts.depthwise)
        "quads": quads,
        "dense_input_size": layer.input_size,
        "column_pairs": layer.input_size // 2,
        "odd_column": layer.input_size % 2,
        "dsp_quad_words": DSP_HEADER_WORDS + padded(layer.input_size, 2),
        "dsp_quads": c_int32_array(dsp, per_line=8),
        "dsp_quads_count": dsp.size,
        "mve_chunks": padded(layer.input_size, MVE_LANES) // MVE_LANES,
        "mve_weights": cformat.c_int_array(mve, per_line=32),
        "mve_weights_count": mve.size,
        "quad_bias": c_int32_array(quad_bias(layer), per_line=8),
        "quad_bias_count": quads * QUAD,
    }
