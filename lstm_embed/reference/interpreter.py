"""Integer reference: the numpy model of exactly the arithmetic the generated C performs.

It is the oracle of the C code (host and Cortex-M builds must equal it bit for bit). All values
are int64 numpy arrays holding int16/int32 quantities; each layer kind's ``step`` holds its own
arithmetic (lstm_embed/kinds/), every operation from ``fixedpoint``. Vectorized over the batch
(N sequences) and over units; loops run over timesteps only. ``run`` goes layer by layer over
the window as the generated run() of a run-only model does (for a streaming model, whose C
goes timestep by timestep, the integers are the same: each layer depends only on its input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lstm_embed.ir.model import sequence_kept
from lstm_embed.kinds.common import run_window
from lstm_embed.kinds.lstm import LSTMState, StepTrace
from lstm_embed.kinds.masking import masking_index, step_layer, step_mask
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QModel

__all__ = [
    "LSTMState",
    "StepTrace",
    "Trace",
    "initial_state",
    "run",
    "run_float",
    "run_window",
    "step",
]


@dataclass
class Trace:
    """Every traced step: ``steps[t]`` holds, at processing step t, the step trace of each
    recurrent layer (a Bidirectional's forward and backward layers each), a kind's own
    dataclass whose ``layer`` names it. Layers that read backwards (go_backwards, a
    Bidirectional's backward layer) are traced in the order they process the window."""

    steps: list[list[Any]] = field(default_factory=list)  # [timestep][recurrent layer]

    def add_layer(self, traces: list[Any]) -> None:
        """One layer's step traces (a tuple per step for a layer with several inside)."""
        for t, item in enumerate(traces):
            while len(self.steps) <= t:
                self.steps.append([])
            self.steps[t].extend(item if isinstance(item, tuple) else [item])


def initial_state(model: QModel, batch: int) -> list[Any]:
    """One state per layer (None for layers without state), all zero as after reset().
    A stateful layer's state holds one stream (batch 1) whatever ``batch`` is."""
    return [layer.initial_state(1 if layer.stateful else batch) for layer in model.layers]


def step(
    model: QModel,
    states: list[Any],
    x_q: np.ndarray,
    trace: Trace | None = None,
    head: bool = True,
    mask: np.ndarray | None = None,
    layer_outputs: list | None = None,
) -> np.ndarray:
    """One timestep of a streaming model (its step()): x_q (N, m) -> head output (N, k), or the
    last recurrent layer's output when ``head`` is False (the head runs only when an output is
    due, as in the C). A stateful layer's state then has N streams (``initial_state``'s
    batch 1 serves one). ``layer_outputs`` receives each layer's output of the step."""
    if not model.streaming:
        raise ValueError(f"{model.source}: no step(): {model.run_only_reason}")
    y = np.asarray(x_q, dtype=np.int64)
    # a Masking model: (N,) masked rows, ``mask`` or the integer rule (layers/masking.py)
    mask = step_mask(model, y, mask)
    step_traces = []
    stop = len(model.layers) if head else model.head_start
    for layer, state in zip(model.layers[:stop], states[:stop], strict=True):
        y, layer_trace = step_layer(model, states, layer, y, state, mask)
        if layer_outputs is not None:
            layer_outputs.append(y)
        if layer_trace is not None:
            step_traces.append(layer_trace)
    if trace is not None:
        trace.steps.append(step_traces)
    return y


def run(
    model: QModel,
    x_q: np.ndarray,
    trace: Trace | None = None,
    states: list[Any] | None = None,
    layer_outputs: list | None = None,
) -> np.ndarray:
    """x_q (N, T, m) int16 -> int16 (N, T, k) if the model returns sequences, else (N, k): the
    generated run() on each sequence, layer by layer over the window (``run_window``).

    As the C's run(), it starts every layer that is not stateful from zero; stateful layers
    take the N rows as one stream (Keras' predict(x, batch_size=1) on a stateful model) and
    continue from ``states`` (default: as after reset()), which they are left in.
    ``layer_outputs`` receives each layer's integer output, as the next layer reads it.
    """
    x_q = np.asarray(x_q)
    if masking_index(model.layers) is not None:
        return run_masked(model, x_q, trace, layer_outputs=layer_outputs)
    fresh = initial_state(model, x_q.shape[0])
    if states is None:
        states = fresh
    for index, layer in enumerate(model.layers):
        if not layer.stateful:
            states[index] = fresh[index]
    y = np.asarray(x_q, dtype=np.int64)
    for layer, state in zip(model.layers, states, strict=True):
        layer_traces: list[Any] = []
        y = run_window(layer, y, state, model.tables, layer_traces)
        if layer_outputs is not None:
            layer_outputs.append(y)
        if trace is not None:
            trace.add_layer(layer_traces)
    return y.astype(np.int16)


def run_float(model: QModel, x: np.ndarray) -> np.ndarray:
    """The float convenience path: quantize input, integer run, dequantize output."""
    x_q = fp.quantize_input(x, model.input_inv_scale)
    if masking_index(model.layers) is not None:  # the float input decides the mask (Keras')
        masking = model.layers[masking_index(model.layers)]
        y_q = run_masked(model, x_q, mask=masking.float_mask(x))
    else:
        y_q = run(model, x_q)
    return fp.dequantize(y_q, model.output_scale)


def run_masked(
    model: QModel,
    x_q: np.ndarray,
    trace: Trace | None = None,
    mask: np.ndarray | None = None,
    layer_outputs: list | None = None,
) -> np.ndarray:
    """run() of a model with a Masking layer (streaming: its C goes timestep by timestep):
    ``mask`` (N, T), default the integer rule on x_q (layers/masking.py)."""
    states = initial_state(model, x_q.shape[0])
    steps = x_q.shape[1]
    per_step: list[list] = [[] for _ in range(steps)]
    outputs = [
        step(
            model,
            states,
            x_q[:, t],
            trace,
            head=model.return_sequences or t == steps - 1,
            mask=None if mask is None else mask[:, t],
            layer_outputs=per_step[t],
        )
        for t in range(steps)
    ]
    if layer_outputs is not None:
        layer_outputs += stacked_steps(model, per_step)
    if model.return_sequences:
        return np.stack(outputs, axis=1).astype(np.int16)
    return outputs[-1].astype(np.int16)


def stacked_steps(model: QModel, per_step: list[list]) -> list[np.ndarray]:
    """Each layer's outputs of every step (``per_step[t][layer]``; the head runs only at the
    last step unless the model returns sequences) -> its output as run() gives it: (N, T, k)
    over the steps, or the last step's (N, k) when its output has no timestep axis."""
    result = []
    for index in range(len(model.layers)):
        ys = [outputs[index] for outputs in per_step if len(outputs) > index]
        result.append(np.stack(ys, axis=1) if sequence_kept(model.layers, index) else ys[-1])
    return result
