"""Float forward pass of the IR (Keras semantics), used for calibration ranges.

It also serves as an independent check of the reader: tests hold it equal to
``model.predict`` within float32 rounding.
"""

from __future__ import annotations

import numpy as np

from lstm_embed.ir.model import Model
from lstm_embed.kinds.base import LayerTrace
from lstm_embed.kinds.common import hard_sigmoid, sigmoid, softmax
from lstm_embed.kinds.masking import forward_masked_chain, masking_index

__all__ = ["LayerTrace", "forward", "hard_sigmoid", "sigmoid", "softmax"]


def forward(model: Model, x: np.ndarray) -> tuple[np.ndarray, list[LayerTrace]]:
    """x (N, T, m) -> (output shaped like model.predict, per-layer traces)."""
    if masking_index(model.layers) is not None:  # the recurrent layers skip masked steps
        return forward_masked_chain(model.layers, x)
    y = np.asarray(x, dtype=np.float64)
    traces = []
    for layer in model.layers:
        trace = layer.forward(y)
        traces.append(trace)
        y = layer.chain_output(trace)
    return y, traces
