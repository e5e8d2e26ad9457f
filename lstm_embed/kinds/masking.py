"""Masking(mask_value): padded timesteps that the recurrent layers skip, with Keras' semantics.

Keras (checked with Keras 3.15 and tf_keras 2.21, LSTM, GRU and SimpleRNN, return_sequences on
and off, masked steps at the start, in the middle and at the end; tests/test_around_core.py
holds it): a timestep is masked when every feature equals mask_value (float32 compare; NaN is
never equal); Masking outputs zeros there; a recurrent layer the mask reaches leaves its state
unchanged at a masked step, its output there is its previous output (zeros before the first
unmasked step: ``zero_output_for_mask`` is False in both versions), and without
return_sequences it returns the output of the last unmasked step. The mask passes through the
per-timestep layers that support masking (Dense, TimeDistributed(Dense), Activation, ReLU,
LeakyReLU, BatchNormalization, LayerNormalization, Dropout) and through recurrent layers that
return sequences; Conv1D and a recurrent layer without return_sequences drop it.

Rules here (``MASK_PASSING_KINDS``, ``mask_reach``):
- Masking is supported as the first layer, on the model input, in streaming models; the mask
  may not reach a stateful or whole-window recurrent layer.
- Float entry points (``run_f32``, ``step_f32``, ``reference.run_float``, the float model) test
  the float input as Keras does (``float_mask``).
- Integer entry points (``run``, ``step``) take a timestep as masked when every int16 feature
  equals the quantized mask value, ``quantize_input(mask_value)`` (``integer_mask``). Padding
  with exactly mask_value gives the same mask either way; an unpadded timestep whose every
  feature quantizes to the mask value (all within half an input LSB of it) counts as padding
  on the integer path only.
Template: templates/kinds/masking/ (layer.c.j2: the mask tests; layer_call.c.j2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.kinds.base import FloatLayer, IRError, LayerTrace, QLayer, QuantContext
from lstm_embed.kinds.common import WeightlessLayer, WeightlessQLayer
from lstm_embed.quantize import fixedpoint as fp

# Per-timestep kinds Keras passes the mask through (Conv1D drops it)
MASK_PASSING_KINDS = ("dense", "activation", "batch_norm", "layer_norm")


@dataclass(frozen=True)
class MaskingLayer(WeightlessLayer, FloatLayer):
    kind: ClassVar[str] = "masking"
    type_name: ClassVar[str] = "Masking"
    computes_mask: ClassVar[bool] = True
    name: str
    input_size: int
    mask_value: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.mask_value):
            raise IRError(f"layer '{self.name}': mask_value must be finite")

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def params(self) -> int:
        return 0

    def mask_of(self, x: np.ndarray) -> np.ndarray:
        """(N, T) True where every feature equals mask_value, compared in float32 (Keras)."""
        return float_mask(x, self.mask_value)

    def forward(self, x: np.ndarray) -> LayerTrace:
        return LayerTrace(np.where(self.mask_of(x)[..., None], 0.0, x))

    def quantize(self, ctx: QuantContext) -> QMaskingLayer:
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        inv_scale = (1.0 / scale).astype(np.float32)
        mask_q = fp.quantize_input(np.full(self.input_size, self.mask_value), inv_scale)
        return QMaskingLayer(self.name, self.input_size, self.mask_value, mask_q, scale.copy())

    def flash_bytes(self, bits: int) -> int:
        return 2 * self.input_size


def float_mask(x: np.ndarray, mask_value: float) -> np.ndarray:
    x32 = np.asarray(x, np.float32)
    return np.all(x32 == np.float32(mask_value), axis=-1)


@dataclass(frozen=True)
class QMaskingLayer(WeightlessQLayer, QLayer):
    """Output: the input, or zeros at a masked timestep (the mask comes from the entry point:
    ``integer_mask`` or ``float_mask``)."""

    kind: ClassVar[str] = "masking"
    template: ClassVar[str] = "kinds/masking/layer.c.j2"
    computes_mask: ClassVar[bool] = True
    name: str
    input_size: int
    mask_value: float
    mask_q: np.ndarray  # (m,) int16: quantize_input(mask_value)
    feature_scale: np.ndarray  # the model input's, passed on

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.feature_scale

    def integer_mask(self, x_q: np.ndarray) -> np.ndarray:
        """(N[, T]) True where every int16 feature equals the quantized mask value."""
        return np.all(np.asarray(x_q) == self.mask_q, axis=-1)

    def float_mask(self, x: np.ndarray) -> np.ndarray:
        return float_mask(x, self.mask_value)

    def step(self, x_q: np.ndarray, state: Any, tables: dict, mask: np.ndarray | None = None):
        mask = self.integer_mask(x_q) if mask is None else mask
        return np.where(mask[..., None], 0, np.asarray(x_q, np.int64)), None

    def scratch_width(self) -> int:
        return self.input_size

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "mask_value": cformat.c_float(self.mask_value),
            "mask_q": cformat.c_int_array(self.mask_q),
        }

    def format(self) -> str:
        return f"mask_value {self.mask_value:g} (int16 {list(self.mask_q)})"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": 2 * self.input_size}


# ---------------------------------------------------------------------------------------------
# Which layers the mask reaches, and the masked float and integer runs of a recurrent layer


def masking_index(layers: Any) -> int | None:
    return next((i for i, la in enumerate(layers) if la.computes_mask), None)


def mask_reach(layers: Any) -> list[bool]:
    """Per layer: True for a recurrent layer that the mask of a Masking layer reaches."""
    live, reach = False, []
    for layer in layers:
        if layer.computes_mask:
            live = True
            reach.append(False)
            continue
        reach.append(live and layer.recurrent)
        if layer.recurrent:
            live = live and layer.return_sequences
        elif layer.kind not in MASK_PASSING_KINDS:
            live = False
    return reach


def check_chain(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    """FOLDS entry: the chain unchanged and a reason for every Masking it cannot place."""
    problems = []
    reach = mask_reach(layers)
    for index, layer in enumerate(layers):
        if not layer.computes_mask:
            continue
        where = f"layer '{layer.name}' (Masking)"
        if index != 0:
            problems.append(f"{where}: supported as the first layer (on the model input)")
    for layer, reached in zip(layers, reach, strict=True):
        if reached and (not layer.streaming or layer.stateful):
            problems.append(
                f"layer '{layer.name}': a mask reaching a stateful or whole-window recurrent"
                " layer is not supported (supported: streaming recurrent layers)"
            )
    if masking_index(layers) is not None and any(not la.streaming for la in layers):
        problems.append("Masking is supported in streaming models only (every layer has step())")
    return layers, problems


def masked_forward(layer: FloatLayer, x: np.ndarray, mask: np.ndarray) -> LayerTrace:
    """A recurrent float layer under a mask (N, T): each sequence run on its unmasked steps
    only (their state is all a masked step keeps), then every trace array spread back over
    the window, a masked step repeating the step before it (zeros before the first)."""
    keep = ~np.asarray(mask, bool)
    rows, steps = keep.shape
    position = np.cumsum(keep, axis=1) - 1  # compressed index of each step's output
    counts = keep.sum(axis=1)
    pieces: dict[int, tuple[np.ndarray, LayerTrace]] = {}
    for count in np.unique(counts):
        members = np.flatnonzero(counts == count)
        if count == 0:  # nothing unmasked: the zero initial state throughout
            trace = layer.forward(np.zeros_like(x[members][:, :1]))
            pieces[int(count)] = (members, _spread(trace, None, steps, zero=True))
            continue
        compressed = np.stack([x[r][keep[r]] for r in members])
        trace = layer.forward(compressed)
        pieces[int(count)] = (members, _spread(trace, position[members], steps))
    first = next(iter(pieces.values()))[1]
    return _join_rows(first, pieces, rows)


def _spread(trace: LayerTrace, position: np.ndarray | None, steps: int, zero: bool = False):
    def spread(a: np.ndarray | None) -> np.ndarray | None:
        if a is None or a.ndim < 2:
            return a
        if zero:
            return np.zeros((a.shape[0], steps, *a.shape[2:]), a.dtype)
        index = np.maximum(position, 0)
        out = np.take_along_axis(a, index.reshape(*index.shape, *([1] * (a.ndim - 2))), axis=1)
        before = (position < 0).reshape(*position.shape, *([1] * (a.ndim - 2)))
        return np.where(before, 0.0, out)

    return LayerTrace(
        spread(trace.output),
        spread(trace.cell),
        {k: spread(v) for k, v in trace.gate_preactivations.items()},
    )


def _join_rows(first: LayerTrace, pieces: dict, rows: int) -> LayerTrace:
    def join(get) -> np.ndarray | None:
        sample = get(first)
        if sample is None:
            return None
        out = np.zeros((rows, *sample.shape[1:]), sample.dtype)
        for members, trace in pieces.values():
            out[members] = get(trace)
        return out

    keys = first.gate_preactivations
    return LayerTrace(
        join(lambda t: t.output),
        join(lambda t: t.cell),
        {k: join(lambda t, k=k: t.gate_preactivations[k]) for k in keys},
    )


def forward_masked_chain(layers: Any, x: np.ndarray) -> tuple[np.ndarray, list[LayerTrace]]:
    """The float forward pass of a chain with a Masking layer (``float_model.forward``)."""
    reach = mask_reach(layers)
    y = np.asarray(x, np.float64)
    mask, traces = None, []
    for layer, reached in zip(layers, reach, strict=True):
        if layer.computes_mask:
            mask = layer.mask_of(y)
        trace = masked_forward(layer, y, mask) if reached else layer.forward(y)
        traces.append(trace)
        y = layer.chain_output(trace)
    return y, traces


@dataclass
class MaskedState:
    """A masked recurrent layer's state in the streaming reference: its own and its last output."""

    inner: Any
    output: np.ndarray


def restore_rows(new: Any, old: Any, rows: np.ndarray) -> Any:
    """``new`` with the rows of ``rows`` (N,) taken from ``old``: every array of a state (its
    dataclass fields, nested ones too) whose first axis is the batch."""
    if isinstance(new, np.ndarray) and new.ndim >= 1 and new.shape[0] == rows.shape[0]:
        return np.where(rows.reshape(-1, *([1] * (new.ndim - 1))), old, new)
    if is_dataclass(new) and not isinstance(new, type):
        for f in fields(new):
            setattr(new, f.name, restore_rows(getattr(new, f.name), getattr(old, f.name), rows))
    return new


def masked_step(layer: QLayer, x_q: np.ndarray, state: MaskedState, tables: dict, mask):
    """One step of a recurrent layer the mask reaches: masked rows keep the state and repeat
    the last output."""
    saved = copy.deepcopy(state.inner)
    y, trace = layer.step(x_q, state.inner, tables)
    if mask.any():
        restore_rows(state.inner, saved, mask)
        y = np.where(mask[:, None], state.output, y)
    state.output = np.asarray(y, np.int64).copy()
    return y, trace


def masked_window(
    layer: QLayer,
    x_q: np.ndarray,
    mask: np.ndarray,
    state: Any,
    tables: dict,
    traces: list | None = None,
):
    """A recurrent layer over a window (N, T, m) under a mask (N, T) in the C's order (a graph
    node that reads a mask): a masked row keeps its state and repeats its last output. Returns
    (N, T, k), or (N, k) without return_sequences; ``state`` ends as the C's. Every step's
    trace goes to ``traces``, as ``run_window``'s."""
    x_q, mask = np.asarray(x_q, np.int64), np.asarray(mask, bool)
    steps = x_q.shape[1]
    order = range(steps - 1, -1, -1) if layer.go_backwards else range(steps)
    masked = MaskedState(state, np.zeros((len(x_q), layer.output_size), np.int64))
    ys = []
    for t in order:
        y_t, trace = masked_step(layer, x_q[:, t], masked, tables, mask[:, t])
        ys.append(y_t)
        if traces is not None and trace is not None:
            traces.append(trace)
    y = np.stack(ys, axis=1)
    return y if layer.return_sequences else y[:, -1]


def step_mask(model: Any, x_q: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """The (N,) mask of one step of ``model``: None without a Masking layer, else ``mask`` or
    the integer rule on the model input x_q."""
    index = masking_index(model.layers)
    if index is None:
        return None
    return model.layers[index].integer_mask(x_q) if mask is None else np.asarray(mask, bool)


def step_layer(model: Any, states: list, layer: Any, y: np.ndarray, state: Any, mask):
    """reference.step's call of one layer: Masking gets the mask, a recurrent layer it reaches
    skips the masked rows (its state becomes a MaskedState in ``states`` on first use, at the
    zero output of a fresh state), every other layer steps as usual."""
    if layer.computes_mask:
        return layer.step(y, state, model.tables, mask)
    if mask is None or state is None:  # no mask, or a layer without per-step state
        return layer.step(y, state, model.tables)
    index = next(i for i, s in enumerate(states) if s is state)
    if not mask_reach(model.layers)[index]:
        return layer.step(y, state, model.tables)
    if not isinstance(state, MaskedState):
        state = states[index] = MaskedState(state, np.zeros((len(y), layer.output_size), np.int64))
    return masked_step(layer, y, state, model.tables, mask)


def float_step_masks(model: Any, x: np.ndarray) -> np.ndarray | None:
    """(N, T) masks of the float entry points, None without a Masking layer."""
    index = masking_index(model.layers)
    return None if index is None else model.layers[index].float_mask(x)
