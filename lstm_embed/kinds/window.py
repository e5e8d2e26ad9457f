"""Geometry of the layers that slide over the window (Conv1D, pooling), Keras' (TF's) rules,
in one place; templates/ops.c.j2 mirrors it (``window_geometry``).

A layer spans ``span`` input timesteps ((kernel_size - 1) * dilation + 1 for Conv1D, pool_size
for pooling), moves by ``stride``, and pads: "valid" not at all, "causal" span - 1 zeros before
the sequence, "same" max((out - 1) * stride + span - T, 0) in all, half of it (rounded down)
before.
"""

from __future__ import annotations

import numpy as np

PADDINGS = {"valid": 0, "same": 1, "causal": 2}  # the C's codes


def output_length(steps: int, span: int, stride: int, padding: str) -> int:
    if padding == "valid":
        return max(0, (steps - span) // stride + 1)
    return (steps + stride - 1) // stride


def pad_before(steps: int, span: int, stride: int, padding: str) -> int:
    if padding == "causal":
        return span - 1
    if padding == "same":
        total = (output_length(steps, span, stride, padding) - 1) * stride + span - steps
        return max(total, 0) // 2
    return 0


def taps(steps: int, span_taps: int, dilation: int, stride: int, padding: str) -> np.ndarray:
    """(out, taps) input timestep of each tap of each output step; -1 where it is padding."""
    span = (span_taps - 1) * dilation + 1
    out = output_length(steps, span, stride, padding)
    start = np.arange(out)[:, None] * stride - pad_before(steps, span, stride, padding)
    index = start + np.arange(span_taps)[None, :] * dilation
    return np.where((index >= 0) & (index < steps), index, -1)


def gather(x: np.ndarray, index: np.ndarray, fill: float) -> np.ndarray:
    """x (N, T, m) at index (out, taps) -> (N, out, taps, m), ``fill`` at -1."""
    picked = x[:, np.maximum(index, 0)]
    return np.where((index >= 0)[None, :, :, None], picked, fill)
