"""Helpers shared by the layer kinds: float activations, C weight formats, and the
go_backwards and stateful options of every recurrent kind (``RecurrentOptions``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds.base import FloatLayer, LayerTrace, QLayer, QuantContext


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def hard_sigmoid(z: np.ndarray) -> np.ndarray:
    """Keras 3's hard_sigmoid: relu6(x + 3) / 6."""
    return np.clip(z / 6.0 + 0.5, 0.0, 1.0)


def hard_sigmoid_keras2(z: np.ndarray) -> np.ndarray:
    """Keras 2's (tf.keras, tf_keras) hard_sigmoid: clip(0.2x + 0.5, 0, 1)."""
    return np.clip(0.2 * z + 0.5, 0.0, 1.0)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "hard_sigmoid_keras2": hard_sigmoid_keras2,
    "tanh": np.tanh,
    "softmax": softmax,
}


def activation_function(name: str) -> Callable[[np.ndarray], np.ndarray]:
    return ACTIVATIONS[name]


def weight_format(bits: int) -> dict[str, Any]:
    """C names of a layer's weight type (CMSIS-NN style suffixes)."""
    return {"weight_bits": bits, "weight_type": f"int{bits}_t", "weight_suffix": f"s{bits}"}


# ---------------------------------------------------------------------------------------------
# go_backwards and stateful (Keras' options of every recurrent layer), implemented once here.
#
# A frontend wraps a recurrent kind's float layer in ``RecurrentOptions`` when either flag is
# set (the Keras reader's ``with_recurrent_options``); the wrapper delegates everything else
# to it. So the kinds never see the flags: the wrapper reverses the input in time
# (go_backwards) and treats the rows of a batch as one stream (stateful), and the generic
# stages (reference, emit, the runners) read ``go_backwards`` / ``stateful`` off the chain.

RECURRENT_FLAGS = ("go_backwards", "stateful")
GO_BACKWARDS_REASON = "go_backwards=True reads the window from its last timestep"


class WeightlessLayer:
    """Mixin of float layers without weights (pooling, reshape, masking): no parameters, no
    weight flash, nothing to round."""

    def summary(self) -> dict[str, Any]:
        name = self.type_name  # type: ignore[attr-defined]
        return {"type": name, "activation": None, "units": None, "params_formula": "0"}

    def flash_bytes(self, bits: int) -> int:
        return 0

    def dequantized(self, qlayer: Any, feature_scale: np.ndarray) -> Any:
        return self


class WeightlessQLayer:
    """Mixin of their integer layers: no multiply-accumulates, no weight width."""

    @property
    def macs(self) -> int:
        return 0

    @property
    def weight_bits(self) -> int:
        return 8  # no weights; the report's column needs a value


def flags_of(layer: Any) -> dict[str, bool]:
    """go_backwards and stateful of any layer (False for layers without them)."""
    return {"go_backwards": bool(layer.go_backwards), "stateful": bool(layer.stateful)}


def _stream(x: np.ndarray, go_backwards: bool) -> np.ndarray:
    """Rows (N, T, ...) as one stream (1, N*T, ...), each row reversed for go_backwards:
    Keras' predict(x, batch_size=1) on a stateful layer carries the state from row to row
    (checked against Keras 3 and tf_keras, go_backwards included)."""
    x = x[:, ::-1] if go_backwards else x
    return x.reshape(1, x.shape[0] * x.shape[1], *x.shape[2:])


def _reshape_trace(value: Any, shape: tuple[int, int], to: tuple[int, int]) -> Any:
    """Trace arrays shaped (*shape, ...) reshaped to (*to, ...), recursively (a trace of one
    stream (1, N*T) and of its rows (N, T) hold the same steps)."""
    if isinstance(value, np.ndarray) and value.ndim >= 2 and value.shape[:2] == shape:
        return value.reshape(*to, *value.shape[2:])
    if isinstance(value, dict):
        return {k: _reshape_trace(v, shape, to) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _reshape_trace(getattr(value, f.name), shape, to) for f in fields(value)}
        return replace(value, **changes)
    return value


def _unstream(value: Any, rows: int, steps: int) -> Any:
    return _reshape_trace(value, (1, rows * steps), (rows, steps))


class _Delegating:
    """Attribute access falls through to ``self.layer`` (the wrapped kind)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "layer":
            raise AttributeError(name)
        return getattr(self.layer, name)


@dataclass(frozen=True, eq=False)
class RecurrentOptions(_Delegating, FloatLayer):
    """A recurrent float layer with Keras' go_backwards and/or stateful set.

    go_backwards: the layer reads its input from the last timestep to the first and returns
    its outputs in that order (Keras does not reverse them back), so it needs the whole window.
    stateful: the rows of a batch are one stream, the state carried from row to row.
    """

    layer: FloatLayer
    go_backwards: bool = False
    stateful: bool = False
    recurrent: ClassVar[bool] = True

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        return not self.go_backwards and self.layer.streaming

    @property
    def whole_window_reason(self) -> str:
        return GO_BACKWARDS_REASON

    @property
    def output_size(self) -> int:
        return self.layer.output_size

    @property
    def params(self) -> int:
        return self.layer.params

    @property
    def keeps_timesteps(self) -> bool:
        return self.layer.keeps_timesteps

    def _inputs(self, x: np.ndarray | None) -> np.ndarray | None:
        if x is None:
            return None
        if self.stateful:
            return _stream(x, self.go_backwards)
        return x[:, ::-1] if self.go_backwards else x

    def forward(self, x: np.ndarray) -> LayerTrace:
        trace = self.layer.forward(self._inputs(x))
        return _unstream(trace, x.shape[0], x.shape[1]) if self.stateful else trace

    def chain_output(self, trace: LayerTrace) -> np.ndarray:
        return self.layer.chain_output(trace)

    def quantize(self, ctx: QuantContext) -> QRecurrentOptions:
        changes: dict[str, Any] = {"layer_input": self._inputs(ctx.layer_input)}
        if self.stateful:  # the kind sees the one stream its float trace was computed on
            rows, steps = ctx.layer_input.shape[:2]
            changes["trace"] = _reshape_trace(ctx.trace, (rows, steps), (1, rows * steps))
            if getattr(ctx, "fit", None) is not None:  # a subset of rows is no stream: fit on all
                changes["fit"] = None
        if getattr(ctx, "quantized_input", None) is not None:
            changes["quantized_input"] = self._inputs(ctx.quantized_input)
        qlayer = self.layer.quantize(replace(ctx, **changes))
        return QRecurrentOptions(qlayer, self.go_backwards, self.stateful)

    def summary(self) -> dict[str, Any]:
        row = dict(self.layer.summary())
        options = [f"{flag}=True" for flag, on in flags_of(self).items() if on]
        row["type"] = f"{row['type']} ({', '.join(options)})"
        return row

    def flash_bytes(self, bits: int) -> int:
        return self.layer.flash_bytes(bits)

    def dequantized(self, qlayer: Any, feature_scale: np.ndarray) -> RecurrentOptions:
        inner = self.layer.dequantized(qlayer.layer, feature_scale)
        return RecurrentOptions(inner, self.go_backwards, self.stateful)


@dataclass(frozen=True, eq=False)
class QRecurrentOptions(_Delegating, QLayer):
    """The quantized form of ``RecurrentOptions``: the wrapped kind's integer layer and the
    flags, which the reference and the emitter apply (the kind's step is unchanged)."""

    layer: QLayer
    go_backwards: bool = False
    stateful: bool = False
    recurrent: ClassVar[bool] = True

    @property
    def streaming(self) -> bool:
        return not self.go_backwards and self.layer.streaming

    # the capabilities QLayer declares that the wrapped kind may set
    @property
    def hard_sigmoid(self) -> bool:
        return self.layer.hard_sigmoid

    @property
    def portable_only(self) -> bool:
        return self.layer.portable_only

    def kernel_stack_bytes(self) -> dict[str, int]:
        return self.layer.kernel_stack_bytes()

    def kernel_flash_bytes(self) -> dict[str, int]:
        return self.layer.kernel_flash_bytes()

    @property
    def whole_window_reason(self) -> str:
        return GO_BACKWARDS_REASON

    @property
    def output_size(self) -> int:
        return self.layer.output_size

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.layer.output_feature_scale

    @property
    def macs(self) -> int:
        return self.layer.macs

    @property
    def weight_bits(self) -> int:
        return self.layer.weight_bits

    def initial_state(self, batch: int) -> Any:
        return self.layer.initial_state(batch)

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        return self.layer.step(x_q, state, tables)

    def tables_needed(self) -> set[str]:
        return self.layer.tables_needed()

    def uses(self) -> set[str]:
        return self.layer.uses()

    def state_fields(self) -> list[dict[str, Any]]:
        return self.layer.state_fields()

    def shared_scratch(self) -> list[dict[str, Any]]:
        return self.layer.shared_scratch()

    def scratch_width(self) -> int:
        return self.layer.scratch_width()

    def context(self, index: Any) -> dict[str, Any]:
        return {**self.layer.context(index), **flags_of(self)}

    def format(self) -> str:
        return self.layer.format()

    def flash_bytes(self) -> dict[str, int]:
        return self.layer.flash_bytes()

    @property
    def state_bytes(self) -> int:
        return self.layer.state_bytes


# ---------------------------------------------------------------------------------------------
# One quantized layer over a window, as the generated run() executes it


def run_window(
    layer: Any, x_q: np.ndarray, state: Any, tables: dict, traces: list | None = None
) -> np.ndarray:
    """Integer outputs of one quantized layer on its whole input, in the C's order.

    x_q (N, T, m), or (N, m) after a layer that dropped the timesteps (then one step). Every
    step's trace goes to ``traces`` (in processing order). A layer that needs the whole window
    (Bidirectional) runs its own ``window``; go_backwards layers read from the last timestep
    and return their outputs in that order (Keras'); stateful layers take the rows as one
    stream, ``state`` holding one stream (batch 1) from call to call. Returns (N, T, k), or
    (N, k) for a recurrent layer that does not return sequences.
    """
    x_q = np.asarray(x_q, np.int64)

    def record(trace: Any) -> None:
        if traces is not None and trace is not None:
            traces.append(trace)

    if x_q.ndim == 2:
        y, trace = layer.step(x_q, state, tables)
        record(trace)
        return y
    rows, steps = x_q.shape[:2]
    if layer.window is not None:
        return layer.window(x_q, state, tables, traces)
    flags = flags_of(layer)
    if flags["stateful"]:
        x_q = _stream(x_q, flags["go_backwards"])
        order: Any = range(rows * steps)
    else:
        order = range(steps - 1, -1, -1) if flags["go_backwards"] else range(steps)
    ys, stream_traces = [], []
    for t in order:
        y, trace = layer.step(x_q[:, t], state, tables)
        ys.append(y)
        stream_traces.append(trace)
    y = np.stack(ys, axis=1)
    if flags["stateful"]:
        y = y.reshape(rows, steps, -1)
        stream_traces = [
            merge_rows([stream_traces[r * steps + t] for r in range(rows)]) for t in range(steps)
        ]
    for trace in stream_traces:
        record(trace)
    if layer.recurrent and not layer.return_sequences:
        return y[:, -1]
    return y


def merge_rows(traces: list[Any]) -> Any:
    """Step traces of single rows (batch 1) -> one trace of all rows (arrays concatenated)."""
    first = traces[0]
    if first is None:
        return None
    if isinstance(first, np.ndarray):
        return np.concatenate(traces, axis=0) if first.ndim else first
    if is_dataclass(first) and not isinstance(first, type):
        return replace(
            first,
            **{f.name: merge_rows([getattr(t, f.name) for t in traces]) for f in fields(first)},
        )
    return first
