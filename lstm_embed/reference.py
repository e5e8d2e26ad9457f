"""Integer reference: the numpy model of exactly the arithmetic the generated C performs.

It is the oracle of the C code (host and Cortex-M builds must equal it bit for bit). All values
are int64 numpy arrays holding int16/int32 quantities; each layer kind's ``step`` holds its own
arithmetic (lstm_embed/layers/), every operation from ``fixedpoint``. Vectorized over the batch
(N sequences) and over units; loops run over timesteps only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import fixedpoint as fp
from .layers.lstm import LSTMState, StepTrace
from .qir import QModel

__all__ = ["LSTMState", "StepTrace", "Trace", "initial_state", "run", "run_float", "step"]


@dataclass
class Trace:
    steps: list[list[Any]] = field(default_factory=list)  # [timestep][recurrent layer]


def initial_state(model: QModel, batch: int) -> list[Any]:
    """One state per layer (None for layers without state), all zero as after reset()."""
    return [layer.initial_state(batch) for layer in model.layers]


def step(
    model: QModel,
    states: list[Any],
    x_q: np.ndarray,
    trace: Trace | None = None,
    head: bool = True,
) -> np.ndarray:
    """One timestep: x_q (N, m) -> head output (N, k), or the last recurrent layer's output
    when ``head`` is False (the head runs only when an output is due, as in the C)."""
    y = np.asarray(x_q, dtype=np.int64)
    step_traces = []
    stop = len(model.layers) if head else model.head_start
    for layer, state in zip(model.layers[:stop], states[:stop], strict=True):
        y, layer_trace = layer.step(y, state, model.tables)
        if layer_trace is not None:
            step_traces.append(layer_trace)
    if trace is not None:
        trace.steps.append(step_traces)
    return y


def run(model: QModel, x_q: np.ndarray, trace: Trace | None = None) -> np.ndarray:
    """x_q (N, T, m) int16 -> int16 (N, T, k) if the model returns sequences, else (N, k)."""
    x_q = np.asarray(x_q)
    states = initial_state(model, x_q.shape[0])
    steps = x_q.shape[1]
    outputs = [
        step(model, states, x_q[:, t], trace, head=model.return_sequences or t == steps - 1)
        for t in range(steps)
    ]
    if model.return_sequences:
        return np.stack(outputs, axis=1).astype(np.int16)
    return outputs[-1].astype(np.int16)


def run_float(model: QModel, x: np.ndarray) -> np.ndarray:
    """The float convenience path: quantize input, integer run, dequantize output."""
    y_q = run(model, fp.quantize_input(x, model.input_inv_scale))
    return fp.dequantize(y_q, model.output_scale)
