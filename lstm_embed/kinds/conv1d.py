"""Conv1D: a Dense over a window of kernel_size inputs.

Keras: y_t = act(b + sum_j W[j] . x_{t - (K-1-j) d}), x before the sequence zero (padding
"causal" pads (K-1) d zeros on the left), K = kernel_size, d = dilation_rate. That is a Dense
over the window [x_{t-(K-1)d}, ..., x_{t-d}, x_t] (K * m inputs, the kernel reshaped to
(K * m, filters)), quantized and computed exactly as Dense (``dense.quantize_dense``, the Dense
helpers of templates/ops.c.j2). The last (K-1) d inputs live in the caller-owned state (a ring
buffer with its write position, zero after reset(): the causal padding), so the layer runs one
timestep at a time and ``step()`` streams it (causal, stride 1). kernel_size 1 is a Dense per
timestep with any padding. Any other padding ("valid", "same") or a stride above 1 needs the
whole window (``window``; run() only): the window of output step t starts at input
t * strides - pad before (``layers/window.py``, Keras' rules), zeros outside the sequence.
Templates: templates/kinds/conv1d/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.layouts import depthwise as depthwise_layouts
from lstm_embed.kinds import window as geometry
from lstm_embed.kinds.base import (
    FloatLayer,
    IRError,
    LayerTrace,
    QLayer,
    QuantContext,
    check_finite,
    check_shape,
)
from lstm_embed.kinds.common import activation_function
from lstm_embed.kinds.dense import DenseLayer, QDenseLayer, quantize_dense

CONV_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid")


class ConvGeometry:
    """What the float and the integer Conv1D derive from kernel_size, dilation, strides and
    padding."""

    kernel_size: int
    dilation: int
    strides: int
    padding: str

    @property
    def history(self) -> int:
        """Past inputs the layer holds: (kernel_size - 1) * dilation."""
        return (self.kernel_size - 1) * self.dilation

    @property
    def streaming(self) -> bool:
        """Causal with stride 1 (or kernel_size 1): one timestep at a time."""
        return self.strides == 1 and (self.padding == "causal" or self.kernel_size == 1)

    @property
    def whole_window_reason(self) -> str:
        return f"Conv1D padding={self.padding!r}, strides={self.strides}"

    @property
    def per_step_state(self) -> bool:
        return self.streaming and self.history > 0

    def output_timesteps(self, steps: int | None) -> int | None:
        if steps is None or self.streaming:
            return steps
        return geometry.output_length(steps, self.history + 1, self.strides, self.padding)


@dataclass(frozen=True)
class Conv1DLayer(ConvGeometry, FloatLayer):
    kind: ClassVar[str] = "conv1d"
    type_name: ClassVar[str] = "Conv1D"
    name: str
    input_size: int
    filters: int
    kernel_size: int
    dilation: int
    kernel: np.ndarray  # (kernel_size, input_size, filters), Keras layout
    bias: np.ndarray | None
    activation: str = "linear"
    padding: str = "causal"
    strides: int = 1

    def __post_init__(self) -> None:
        if self.padding not in geometry.PADDINGS or self.strides < 1:
            raise IRError(f"layer '{self.name}': padding or strides not supported")
        if self.filters < 1 or self.kernel_size < 1 or self.dilation < 1:
            raise IRError(f"layer '{self.name}': filters, kernel_size, dilation must be >= 1")
        check_shape(
            self.name, "kernel", self.kernel, (self.kernel_size, self.input_size, self.filters)
        )
        if self.bias is not None:
            check_shape(self.name, "bias", self.bias, (self.filters,))
            check_finite(self.name, "bias", self.bias)
        check_finite(self.name, "kernel", self.kernel)
        if self.activation not in CONV_ACTIVATIONS:
            raise IRError(f"layer '{self.name}': activation {self.activation!r} not supported")

    @property
    def output_size(self) -> int:
        return self.filters

    @property
    def params(self) -> int:
        bias = self.filters if self.bias is not None else 0
        return self.kernel_size * self.input_size * self.filters + bias

    def window_dense(self) -> DenseLayer:
        """The same layer as a Dense over the window (K * m inputs, oldest tap first)."""
        kernel = self.kernel.reshape(self.kernel_size * self.input_size, self.filters)
        return DenseLayer(
            self.name, kernel.shape[0], self.filters, kernel, self.bias, self.activation
        )

    def windows(self, x: np.ndarray) -> np.ndarray:
        """(N, T, m) -> (N, T_out, K * m): each output step's window, zeros outside."""
        index = geometry.taps(
            x.shape[1], self.kernel_size, self.dilation, self.strides, self.padding
        )
        taps = geometry.gather(x, index, 0)
        return taps.reshape(*taps.shape[:2], -1)

    def forward(self, x: np.ndarray) -> LayerTrace:
        z = self.windows(x) @ self.window_dense().kernel + (
            self.bias if self.bias is not None else 0.0
        )
        return LayerTrace(activation_function(self.activation)(z), gate_preactivations={"z": z})

    def quantize(self, ctx: QuantContext) -> QConv1DLayer:
        # nearest rounding of the rows (the error-feedback rounding is Dense's and LSTM's)
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        max_out = float(np.max(np.abs(ctx.trace.output)))
        dense = quantize_dense(
            self.window_dense(), np.tile(scale, self.kernel_size), max_out, ctx.bits
        )
        kind = QConv1DLayer if self.streaming else QConv1DWindowLayer
        return kind(
            self.name, self.input_size, self.kernel_size, self.dilation, dense,
            self.padding, self.strides,
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        bias = f"+{self.filters}" if self.bias is not None else ""
        return {
            "type": "Conv1D",
            "activation": self.activation,
            "units": self.filters,
            "params_formula": f"{self.kernel_size}*{self.input_size}*{self.filters}{bias}",
        }

    def flash_bytes(self, bits: int) -> int:
        return self.window_dense().flash_bytes(bits)

    def dequantized(self, qlayer: QConv1DLayer, feature_scale: np.ndarray) -> Conv1DLayer:
        scale = np.tile(np.broadcast_to(feature_scale, (self.input_size,)), self.kernel_size)
        dense = self.window_dense().dequantized(qlayer.dense, scale)
        kernel = dense.kernel.reshape(self.kernel_size, self.input_size, self.filters)
        return Conv1DLayer(
            self.name, self.input_size, self.filters, self.kernel_size, self.dilation,
            kernel, dense.bias, self.activation, self.padding, self.strides,
        )  # fmt: skip


@dataclass
class ConvState:
    history: np.ndarray  # (N, (K-1) d, m) int16 values: slot (position + i) % L is x_{t-L+i}
    position: int = 0


@dataclass(frozen=True)
class QConv1DLayer(ConvGeometry, QLayer):
    """The window Dense (``dense``: rows over K * m inputs) and the history of past inputs."""

    kind: ClassVar[str] = "conv1d"
    template: ClassVar[str] = "kinds/conv1d/layer.c.j2"
    name: str
    input_size: int
    kernel_size: int
    dilation: int
    dense: QDenseLayer
    padding: str = "causal"
    strides: int = 1

    @property
    def output_size(self) -> int:
        return self.dense.units

    @property
    def valid_span(self) -> tuple[int, int] | None:  # type: ignore[override]
        if self.streaming or self.padding != "valid":
            return None
        return self.history + 1, self.strides

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.dense.output_feature_scale

    @property
    def macs(self) -> int:
        return self.dense.macs

    @property
    def weight_bits(self) -> int:
        return self.dense.weight_bits

    def initial_state(self, batch: int) -> ConvState | None:
        if not self.per_step_state:
            return None
        return ConvState(np.zeros((batch, self.history, self.input_size), np.int64))

    def step(self, x_q: np.ndarray, state: ConvState | None, tables: dict):
        x_q = np.asarray(x_q, np.int64)
        if state is None:
            return self.dense.step(x_q, None, tables)
        length = self.history
        taps = [
            state.history[:, (state.position + j * self.dilation) % length]
            for j in range(self.kernel_size - 1)
        ]
        window = np.concatenate([*taps, x_q], axis=-1)
        state.history[:, state.position] = x_q
        state.position = (state.position + 1) % length
        return self.dense.step(window, None, tables)

    def tables_needed(self) -> set[str]:
        return self.dense.tables_needed()

    def uses(self) -> set[str]:
        flags = self.dense.uses() | (set() if self.streaming else {"window_geometry"})
        if depthwise_layouts.depth_multiplier(self):  # its own kernel, not the rows' quads
            flags = (flags - {"quad_rows"}) | {"depthwise"}
        return flags

    def state_fields(self) -> list[dict[str, Any]]:
        if not self.per_step_state:
            return []
        label = cformat.c_comment(self.name)
        return [
            {"type": "int16_t", "name": "history", "size": self.history * self.input_size,
             "comment": f"'{label}' last {self.history} inputs (ring buffer)"},
            {"type": "int32_t", "name": "position", "size": 1,
             "comment": f"'{label}' next slot of the ring buffer"},
        ]  # fmt: skip

    def shared_scratch(self) -> list[dict[str, Any]]:
        if not self.history and self.streaming:
            return []
        size = self.kernel_size * self.input_size
        return [{"type": "int16_t", "name": "conv_window", "size": size,
                 "comment": "Conv1D input window, oldest tap first"}]  # fmt: skip

    def scratch_width(self) -> int:
        return self.dense.units

    @property
    def state_bytes(self) -> int:
        return 2 * self.history * self.input_size + 4 if self.per_step_state else 0

    def context(self, index: int) -> dict[str, Any]:
        return {
            **self.dense.context(index),
            "input_size": self.input_size,
            "window_size": self.kernel_size * self.input_size,
            "filters": self.dense.units,
            "kernel_size": self.kernel_size,
            "dilation": self.dilation,
            "history": self.history,
            "streaming": self.streaming,
            "per_step_state": self.per_step_state,
            "padding_code": geometry.PADDINGS[self.padding],
            "padding": self.padding,
            "strides": self.strides,
            "span": self.history + 1,
            **depthwise_layouts.context(self),
        }

    def format(self) -> str:
        return f"window {self.kernel_size}x{self.input_size}, " + self.dense.format()

    def flash_bytes(self) -> dict[str, int]:
        return self.dense.flash_bytes()


@dataclass(frozen=True)
class QConv1DWindowLayer(QConv1DLayer):
    """The run-only forms (padding valid or same, or strides > 1): the whole window at once."""

    def window(self, x_q: np.ndarray, state: Any, tables: dict, traces: list | None):
        """Every output step's window (zeros outside the sequence) through the rows."""
        x_q = np.asarray(x_q, np.int64)
        index = geometry.taps(
            x_q.shape[1], self.kernel_size, self.dilation, self.strides, self.padding
        )
        windows = geometry.gather(x_q, index, 0)
        rows, steps = windows.shape[:2]
        y, _ = self.dense.step(windows.reshape(rows * steps, -1), None, tables)
        return y.reshape(rows, steps, -1)
