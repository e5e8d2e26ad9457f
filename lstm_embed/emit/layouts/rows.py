"""What the kernel layouts read of a quantized recurrent or Dense layer (``GateRows``: its
integer rows, whatever its kind), and the helpers every layout shares: padding to SIMD groups,
int32 wrapping, the fast requantization's shift packing, int32 C arrays."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from lstm_embed.emit import cformat


class GateRows(Protocol):
    """A quantized layer's rows over [x; h]: int8 weights [unit][row][k], int32 biases and a
    requantization (multiplier, shift) per row; the input columns' extra shift."""

    units: int
    input_size: int
    input_shift: int
    weights_s8: np.ndarray
    bias_s32: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray

    @property
    def row_length(self) -> int: ...


class GRURows(GateRows, Protocol):
    reset_after: bool


FAST_REQUANT_MIN_SHIFT = 33  # shift >= 33: z = ((acc * m) >> 32 + 2^(s-33)) >> (s-32) exactly
MVE_LANES = 8  # int16 lanes of one MVE vector


def wrap_s32(values: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 (the kernels use modulo-2^32 sums).

    >>> wrap_s32(np.array([2**31, -1])).tolist()
    [-2147483648, -1]
    """
    v = np.asarray(values, dtype=np.int64) & 0xFFFFFFFF
    return np.where(v >= 2**31, v - 2**32, v).astype(np.int64)


def padded(length: int, multiple: int) -> int:
    """length rounded up to a multiple.

    >>> padded(7, 2), padded(8, 8), padded(1, 8)
    (8, 8, 8)
    """
    return -(-length // multiple) * multiple


def column_groups(input_size: int, units: int, input_shift: int, multiple: int) -> tuple[int, int]:
    """(input columns, all columns) of a layout in groups of `multiple` columns: without an
    input shift only the end of [x; h] is padded; with one, x and h are padded separately so
    that no group mixes input and recurrent columns.

    >>> column_groups(7, 3, 0, 8), column_groups(7, 3, 2, 8), column_groups(7, 3, 2, 2)
    ((7, 16), (8, 16), (8, 12))
    """
    if input_shift == 0:
        return input_size, padded(input_size + units, multiple)
    x = padded(input_size, multiple)
    return x, x + padded(units, multiple)


def fast_requant(layer: GateRows) -> bool:
    return bool(np.all(layer.shift >= FAST_REQUANT_MIN_SHIFT))


PACKED_SHIFT_BITS = 5  # shift - 33 in the low bits of a fast layer's multipliers


def with_packed_shift(multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Multipliers whose low 5 bits carry shift - 33, so that the DSP and plain kernels read one
    word per row (``packed_requant``); the multiplier (>= 2^30) moves by < 2^-25 of itself.
    Unchanged unless every row takes the fast requantization with shift - 33 < 32."""
    code = np.asarray(shift, np.int64) - FAST_REQUANT_MIN_SHIFT
    if np.any(code < 0) or np.any(code >= 1 << PACKED_SHIFT_BITS):
        return multiplier
    mask = (1 << PACKED_SHIFT_BITS) - 1
    return ((np.asarray(multiplier, np.int64) & ~mask) | code).astype(multiplier.dtype)


def packed_requant(layer: GateRows) -> bool:
    code = layer.shift.astype(np.int64) - FAST_REQUANT_MIN_SHIFT
    mask = (1 << PACKED_SHIFT_BITS) - 1
    return bool(
        fast_requant(layer)
        and np.all(code < 1 << PACKED_SHIFT_BITS)
        and np.all((layer.multiplier.astype(np.int64) & mask) == code)
    )


def c_int32_array(values: np.ndarray, per_line: int = 8) -> str:
    """Like cformat.c_int_array, for values that may be INT32_MIN (which has no literal)."""
    items = [cformat.c_int32(v) for v in np.asarray(values).ravel()]
    return ",\n".join(", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line))
