"""The depthwise form of a Conv1D's window rows (templates/kinds/conv1d/depthwise.c.j2).

A DepthwiseConv1D(k, depth_multiplier=dm) is read as a Conv1D of m * dm filters whose window
rows (filter f over [tap][channel], k * m columns) are zero except at channel f // dm of each
tap. The reference kernel runs those rows as they are (k * m * m * dm MACs); the other kernels
read only the k taps of each filter (k * m * dm MACs) from the arrays below, the same int8
values, so the int32 sums and the outputs are the same bit for bit.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.layouts.dense import DenseRows, optimized
from lstm_embed.emit.layouts.rows import padded

MVE_WORD_LANES = 4  # int32 lanes of one MVE vector


class WindowRows(Protocol):
    """A quantized Conv1D: its channels, taps and window rows (``dense``)."""

    input_size: int  # channels m
    kernel_size: int
    dense: DenseRows  # rows (filters, kernel_size * m) over [tap][channel]


def depth_multiplier(layer: WindowRows) -> int:
    """dm when every filter f reads only channel f // dm (int8 rows, m > 1), else 0."""
    m, k, filters = layer.input_size, layer.kernel_size, layer.dense.units
    if not optimized(layer.dense) or m < 2 or filters % m:
        return 0
    dm = filters // m
    w = layer.dense.weights.reshape(filters, k, m)
    own = np.zeros((filters, 1, m), bool)
    own[np.arange(filters), 0, np.arange(filters) // dm] = True
    return 0 if np.any(np.where(own, 0, w)) else dm


def tap_weights(layer: WindowRows, columns: int | None = None) -> np.ndarray:
    """int64 [tap][filter] (filters zero-padded to ``columns``): filter f's weight on its own
    channel at each tap."""
    m, k, filters = layer.input_size, layer.kernel_size, layer.dense.units
    dm = depth_multiplier(layer)
    w = layer.dense.weights.reshape(filters, k, m).astype(np.int64)
    taps = w[np.arange(filters), :, np.arange(filters) // dm].T  # (k, filters)
    out = np.zeros((k, columns or filters), np.int64)
    out[:, :filters] = taps
    return out


def context(layer: WindowRows) -> dict[str, Any]:
    dm = depth_multiplier(layer)
    if not dm:
        return {"depthwise": 0}
    filters = layer.dense.units
    taps = tap_weights(layer)
    pairs = tap_weights(layer, padded(filters, 2))
    return {
        "depthwise": dm,
        "optimized": False,  # not the Dense rows' quads: the taps below
        "dw_weights": cformat.c_int_array(taps, per_line=min(filters, 32)),
        "dw_weights_count": taps.size,
        # DSP: int16 [tap][filter], filters padded to even: one word = a channel pair's weights
        "dw_weights_s16": cformat.c_int_array(pairs, per_line=min(pairs.shape[1], 32)),
        "dw_weights_s16_count": pairs.size,
        "dw_filters_even": padded(filters, 2),
    }
