"""Integer reference: the numpy model of exactly the arithmetic the generated C performs.

It is the oracle of the C code (host and Cortex-M builds must equal it bit for bit). All values
are int64 numpy arrays holding int16/int32 quantities; every operation comes from ``fixedpoint``.
Vectorized over the batch (N sequences) and over units; loops run over timesteps only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import fixedpoint as fp
from .qir import QDenseLayer, QLSTMLayer, QModel


@dataclass
class LSTMState:
    h_q15: np.ndarray  # (N, units)
    c: np.ndarray  # (N, units), cell_frac fractional bits


@dataclass
class StepTrace:
    """Every gate of one step of one LSTM layer (for --trace and mismatch reports)."""

    layer: str
    z: np.ndarray  # (N, units, 4) gate pre-activations, Z_FRAC_BITS
    gates_q15: np.ndarray  # (N, units, 4) activated i, f, g, o
    c: np.ndarray
    h_q15: np.ndarray


@dataclass
class Trace:
    steps: list[list[StepTrace]] = field(default_factory=list)  # [timestep][lstm layer]


def recurrent_activation(layer: QLSTMLayer, z: np.ndarray, model: QModel) -> np.ndarray:
    if layer.recurrent_activation == "hard_sigmoid":
        return fp.hard_sigmoid_q15(z)
    return fp.sigmoid_q15(z, model.tables["sigmoid"])


def gate_preactivations(layer: QLSTMLayer, x_q: np.ndarray, h_q15: np.ndarray) -> np.ndarray:
    """(N, units, 4) int32 gate pre-activations with Z_FRAC_BITS fractional bits.

    acc = bias + dot(w_x, x) * 2**input_shift + dot(w_h, h): the input columns carry their own
    power-of-two scale so that a wide input range does not coarsen the recurrent weights.
    """
    w = layer.weights.astype(np.int64)
    m = layer.input_size
    dot_x = np.einsum("ugk,nk->nug", w[..., :m], x_q.astype(np.int64))
    dot_h = np.einsum("ugk,nk->nug", w[..., m:], h_q15.astype(np.int64))
    dot = dot_x * (1 << layer.input_shift) + dot_h
    return fp.requantize(
        accumulate(dot, layer.bias_s32, layer.weight_bits), layer.multiplier, layer.shift
    )


def accumulate(dot: np.ndarray, bias: np.ndarray, bits: int) -> np.ndarray:
    """int8 rows: bias + dot in int32 (bounded by the quantizer); int16 rows: int64 rounded."""
    return fp.wide_accumulator(dot, bias) if bits == 16 else dot + bias


def cell_update(layer: QLSTMLayer, gates_q15: np.ndarray, c: np.ndarray) -> np.ndarray:
    """c' = f*c + i*g, with cf = cell_frac. int16 cell: f*c is Q(15+cf); i*g (Q30) is shifted to
    Q(15+cf); the sum is rounded back to Qcf. Wide (int32, Q(cf+15)) cell: f*c is rounded
    from Q(30+cf) to Q(15+cf), i*g shifted to it, the sum kept."""
    i, f, g = gates_q15[..., 0], gates_q15[..., 1], gates_q15[..., 2]
    ig = fp.rounding_shift_right(i * g, 15 - layer.cell_frac)
    low, high = layer.cell_limits
    if layer.wide_cell:
        return fp.saturate(fp.rounding_shift_right(f * c, 15) + ig, low, high)
    return fp.saturate(fp.rounding_shift_right(f * c + ig, 15), low, high)


def cell_to_z(layer: QLSTMLayer, c: np.ndarray) -> np.ndarray:
    """Cell -> Z_FRAC_BITS: an exact multiplication (int16 cell) or a rounded shift (wide)."""
    if layer.wide_cell:
        return fp.rounding_shift_right(c, layer.cell_stored_frac - fp.Z_FRAC_BITS)
    return c * (1 << (fp.Z_FRAC_BITS - layer.cell_frac))


def hidden_update(layer: QLSTMLayer, o_q15: np.ndarray, c: np.ndarray, model: QModel):
    """h' = o * tanh(c)."""
    tanh_c = fp.tanh_q15(cell_to_z(layer, c), model.tables["tanh"])
    return fp.saturate_s16(fp.rounding_shift_right(o_q15 * tanh_c, 15))


def lstm_step(layer: QLSTMLayer, model: QModel, state: LSTMState, x_q: np.ndarray) -> StepTrace:
    z = gate_preactivations(layer, x_q, state.h_q15)
    gates = np.empty_like(z)
    for k in (0, 1, 3):
        gates[..., k] = recurrent_activation(layer, z[..., k], model)
    gates[..., 2] = fp.tanh_q15(z[..., 2], model.tables["tanh"])
    state.c = cell_update(layer, gates, state.c)
    state.h_q15 = hidden_update(layer, gates[..., 3], state.c, model)
    return StepTrace(layer.name, z, gates, state.c, state.h_q15)


def dense_forward(layer: QDenseLayer, model: QModel, x_q: np.ndarray) -> np.ndarray:
    dot = x_q.astype(np.int64) @ layer.weights.T.astype(np.int64)
    z = fp.requantize(
        accumulate(dot, layer.bias_s32, layer.weight_bits), layer.multiplier, layer.shift
    )
    if layer.activation == "sigmoid":
        return fp.sigmoid_q15(z, model.tables["sigmoid"])
    if layer.activation == "tanh":
        return fp.tanh_q15(z, model.tables["tanh"])
    if layer.activation == "softmax":
        return fp.softmax_q15(z, model.tables["exp"])
    y = fp.saturate_s16(z)
    return np.maximum(y, 0) if layer.activation == "relu" else y


def initial_state(model: QModel, batch: int) -> list[LSTMState]:
    return [
        LSTMState(np.zeros((batch, la.units), np.int64), np.zeros((batch, la.units), np.int64))
        for la in model.lstm_layers
    ]


def step(
    model: QModel,
    states: list[LSTMState],
    x_q: np.ndarray,
    trace: Trace | None = None,
    head: bool = True,
) -> np.ndarray:
    """One timestep: x_q (N, m) -> head output (N, k), or the last h when ``head`` is False."""
    y = np.asarray(x_q, dtype=np.int64)
    step_traces = []
    for layer, state in zip(model.lstm_layers, states, strict=True):
        step_traces.append(lstm_step(layer, model, state, y))
        y = state.h_q15
    if trace is not None:
        trace.steps.append(step_traces)
    if head:
        for dense in model.dense_layers:
            y = dense_forward(dense, model, y)
    return y


def run(model: QModel, x_q: np.ndarray, trace: Trace | None = None) -> np.ndarray:
    """x_q (N, T, m) int16 -> int16 (N, T, k) if return_sequences else (N, k).

    The head runs on the last step only unless the last LSTM returns sequences (as in Keras).
    """
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
