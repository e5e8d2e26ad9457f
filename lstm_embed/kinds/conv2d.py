"""Conv2D over (T, F, C) windows, channels_last: a Dense over each output position's taps.

The chain carries a (T, F, C) tensor as T timesteps of F * C features (row-major, as Keras'
``Reshape((T, F * C))`` flattens it); the layer knows its input frame (F, C). Keras:
y[t, f, o] = act(b[o] + sum_{i, j, c} W[i, j, c, o] x[t s_t - p_t + i d_t, f s_f - p_f + j d_f, c]),
zeros outside the input (padding "valid": none, "same": TF's split, ``kinds/window.py``). Each
output position (t, f) is the Dense ``window_dense`` (rows over k_t * k_f * C taps, the
kernel reshaped to (k_t * k_f * C, filters)), quantized and computed exactly as Dense
(``dense.quantize_dense``: per-filter scales; the Dense helpers of templates/ops.c.j2, whose
optimized row kernels drop in unchanged).

Along T the layer is a Conv1D: with kernel height 1 and stride 1 along T it works per frame
and streams (``step()``); any taller kernel or time stride needs the whole window (Keras'
Conv2D has no causal padding, so a valid or same kernel over time reads later frames:
run-only, as Conv1D valid/same). The kernel is shared over F, so every position of a channel
must have one scale: the model input's scale is made so (``shared_input_scale``).
Templates: templates/kinds/conv2d/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit.layouts import dense as dense_layouts
from lstm_embed.kinds import window as geometry
from lstm_embed.kinds.base import (
    FloatLayer,
    IRError,
    LayerTrace,
    QLayer,
    QuantContext,
    QuantizeError,
    check_finite,
    check_shape,
)
from lstm_embed.kinds.common import activation_function
from lstm_embed.kinds.conv1d import CONV_ACTIVATIONS
from lstm_embed.kinds.dense import DenseLayer, QDenseLayer, quantize_dense

Pair = tuple[int, int]  # (along T, along F)
# windows up to this many taps are gathered by straight-line C (one load and one store per tap,
# constant offsets); the generic loops cost about 5 instructions more per tap (measured on
# qemu-m4, BENCHMARKS.md's layer rows), longer windows keep the loops to bound the code size
UNROLLED_GATHER_TAPS = 64
# the MVE form with output positions in the lanes (int8 rows requantized in their packed form)
LANES_ACTIVATIONS = ("linear", "relu")


def windows_2d(
    x: np.ndarray, frame: Pair, index_t: np.ndarray | None, index_f: np.ndarray
) -> np.ndarray:
    """Taps of every output position, zeros outside the input.

    x (N, T, F * C) with ``index_t`` (T_out, k_t) -> (N, T_out, F_out, k_t, k_f, C); one frame
    x (N, F * C) with ``index_t`` None -> (N, F_out, k_f, C). ``index_*``: ``window.taps``."""
    rows = x.shape[0]
    if index_t is None:
        frames = x.reshape(rows, 1, 1, *frame)
    else:
        frames = geometry.gather(x, index_t, 0).reshape(rows, *index_t.shape, *frame)
    picked = frames[:, :, :, np.maximum(index_f, 0)]  # (N, T_out, k_t, F_out, k_f, C)
    taps = np.where((index_f >= 0)[None, None, None, :, :, None], picked, 0)
    taps = taps.transpose(0, 1, 3, 2, 4, 5)
    return taps[:, 0, :, 0] if index_t is None else taps


def shared_channel_scale(scale: np.ndarray, frame: Pair) -> np.ndarray:
    """Per-feature scales (F * C) made one per channel, the coarsest of its positions."""
    per_channel = np.max(np.reshape(np.broadcast_to(scale, (frame[0] * frame[1],)), frame), 0)
    return np.tile(per_channel, frame[0]).astype(np.asarray(scale).dtype)


def channel_scale(layer: str, scale: np.ndarray, frame: Pair) -> np.ndarray:
    """The one scale per channel of a (F * C) input; refused when positions differ."""
    full = np.broadcast_to(np.asarray(scale, np.float64), (frame[0] * frame[1],))
    per_channel = full.reshape(frame)
    if not np.all(per_channel == per_channel[0]):
        raise QuantizeError(
            f"layer '{layer}': its input has different scales at the positions of one channel;"
            " a kernel shared over positions needs one scale per channel"
        )
    return per_channel[0].copy()


class Conv2DGeometry:
    """What the float and the integer Conv2D derive from the frame, kernel, strides,
    dilation and padding."""

    frame: Pair  # (F, C) of the input
    kernel_hw: Pair
    strides: Pair
    dilation: Pair
    padding: str

    def span(self, axis: int) -> int:
        return (self.kernel_hw[axis] - 1) * self.dilation[axis] + 1

    @property
    def streaming(self) -> bool:
        """Kernel height 1 and stride 1 along T: one frame at a time."""
        return self.kernel_hw[0] == 1 and self.strides[0] == 1

    @property
    def whole_window_reason(self) -> str:
        return f"Conv2D kernel {self.kernel_hw[0]} and stride {self.strides[0]} along time"

    @property
    def frame_out(self) -> int:
        return geometry.output_length(self.frame[0], self.span(1), self.strides[1], self.padding)

    @property
    def index_f(self) -> np.ndarray:
        return geometry.taps(
            self.frame[0], self.kernel_hw[1], self.dilation[1], self.strides[1], self.padding
        )

    def index_t(self, steps: int) -> np.ndarray:
        return geometry.taps(
            steps, self.kernel_hw[0], self.dilation[0], self.strides[0], self.padding
        )

    def output_timesteps(self, steps: int | None) -> int | None:
        if steps is None or self.streaming:
            return steps
        return geometry.output_length(steps, self.span(0), self.strides[0], self.padding)

    @property
    def window_size(self) -> int:
        return self.kernel_hw[0] * self.kernel_hw[1] * self.frame[1]


@dataclass(frozen=True)
class Conv2DLayer(Conv2DGeometry, FloatLayer):
    kind: ClassVar[str] = "conv2d"
    type_name: ClassVar[str] = "Conv2D"
    name: str
    input_size: int  # F * C
    frame: Pair
    filters: int
    kernel_hw: Pair
    kernel: np.ndarray  # (k_t, k_f, C, filters), Keras layout
    bias: np.ndarray | None
    activation: str = "linear"
    padding: str = "valid"
    strides: Pair = (1, 1)
    dilation: Pair = (1, 1)

    def __post_init__(self) -> None:
        if self.padding not in ("valid", "same") or min(self.strides) < 1:
            raise IRError(f"layer '{self.name}': padding or strides not supported")
        if self.filters < 1 or min(self.kernel_hw) < 1 or min(self.dilation) < 1:
            raise IRError(f"layer '{self.name}': filters, kernel_size, dilation must be >= 1")
        if self.frame[0] * self.frame[1] != self.input_size:
            raise IRError(f"layer '{self.name}': frame {self.frame} != {self.input_size} features")
        shape = (*self.kernel_hw, self.frame[1], self.filters)
        check_shape(self.name, "kernel", self.kernel, shape)
        check_finite(self.name, "kernel", self.kernel)
        if self.bias is not None:
            check_shape(self.name, "bias", self.bias, (self.filters,))
            check_finite(self.name, "bias", self.bias)
        if self.activation not in CONV_ACTIVATIONS:
            raise IRError(f"layer '{self.name}': activation {self.activation!r} not supported")
        if self.frame_out < 1:
            raise IRError(f"layer '{self.name}': the kernel is wider than the {self.frame[0]} rows")

    @property
    def output_frame(self) -> Pair:
        return (self.frame_out, self.filters)

    @property
    def output_size(self) -> int:
        return self.frame_out * self.filters

    @property
    def params(self) -> int:
        return self.kernel.size + (self.filters if self.bias is not None else 0)

    def shared_input_scale(self, scale: np.ndarray) -> np.ndarray:
        return shared_channel_scale(scale, self.frame)

    def window_dense(self) -> DenseLayer:
        """The Dense of one output position (k_t * k_f * C inputs, taps in kernel order)."""
        kernel = self.kernel.reshape(self.window_size, self.filters)
        return DenseLayer(
            self.name, self.window_size, self.filters, kernel, self.bias, self.activation
        )

    def forward(self, x: np.ndarray) -> LayerTrace:
        taps = windows_2d(x, self.frame, self.index_t(x.shape[1]), self.index_f)
        z = taps.reshape(*taps.shape[:3], -1) @ self.window_dense().kernel
        z = z + (self.bias if self.bias is not None else 0.0)
        z = z.reshape(*z.shape[:2], -1)
        return LayerTrace(activation_function(self.activation)(z), gate_preactivations={"z": z})

    def quantize(self, ctx: QuantContext) -> QConv2DLayer:
        per_channel = channel_scale(self.name, ctx.feature_scale, self.frame)
        max_out = float(np.max(np.abs(ctx.trace.output)))
        window_scale = np.tile(per_channel, self.kernel_hw[0] * self.kernel_hw[1])
        dense = quantize_dense(self.window_dense(), window_scale, max_out, ctx.bits)
        kind = QConv2DLayer if self.streaming else QConv2DWindowLayer
        return kind(
            self.name, self.input_size, self.frame, self.kernel_hw, dense, self.padding,
            self.strides, self.dilation,
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        bias = f"+{self.filters}" if self.bias is not None else ""
        kt, kf = self.kernel_hw
        return {
            "type": "Conv2D",
            "activation": self.activation,
            "units": self.filters,
            "params_formula": f"{kt}*{kf}*{self.frame[1]}*{self.filters}{bias}",
        }

    def flash_bytes(self, bits: int) -> int:
        return self.window_dense().flash_bytes(bits)

    def dequantized(self, qlayer: QConv2DLayer, feature_scale: np.ndarray) -> Conv2DLayer:
        per_channel = np.reshape(np.broadcast_to(feature_scale, (self.input_size,)), self.frame)
        scale = np.tile(per_channel[0], self.kernel_hw[0] * self.kernel_hw[1])
        dense = self.window_dense().dequantized(qlayer.dense, scale)
        return Conv2DLayer(
            self.name, self.input_size, self.frame, self.filters, self.kernel_hw,
            dense.kernel.reshape(self.kernel.shape), dense.bias, self.activation, self.padding,
            self.strides, self.dilation,
        )  # fmt: skip


@dataclass(frozen=True)
class QConv2DLayer(Conv2DGeometry, QLayer):
    """The position Dense (``dense``: rows over k_t * k_f * C taps), run at every position."""

    kind: ClassVar[str] = "conv2d"
    template: ClassVar[str] = "kinds/conv2d/layer.c.j2"
    name: str
    input_size: int
    frame: Pair
    kernel_hw: Pair
    dense: QDenseLayer
    padding: str = "valid"
    strides: Pair = (1, 1)
    dilation: Pair = (1, 1)

    @property
    def output_size(self) -> int:
        return self.frame_out * self.dense.units

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.tile(self.dense.output_feature_scale, self.frame_out)

    @property
    def macs(self) -> int:
        """Per output timestep: every position of the frame."""
        return self.dense.macs * self.frame_out

    @property
    def weight_bits(self) -> int:
        return self.dense.weight_bits

    def _rows(self, taps: np.ndarray, tables: dict) -> np.ndarray:
        """Taps (..., positions, k_t, k_f, C) through the rows -> (..., positions * filters)."""
        lead = taps.shape[: taps.ndim - 3]
        y, _ = self.dense.step(taps.reshape(-1, self.window_size), None, tables)
        return y.reshape(*lead[:-1], lead[-1] * self.dense.units)

    def step(self, x_q: np.ndarray, state: Any, tables: dict):
        taps = windows_2d(np.asarray(x_q, np.int64), self.frame, None, self.index_f)
        return self._rows(taps[:, :, None], tables), None

    def tables_needed(self) -> set[str]:
        return self.dense.tables_needed()

    def uses(self) -> set[str]:
        flags = self.dense.uses() | (set() if self.streaming else {"window_geometry"})
        if self._lanes_context()["pairs"]:
            flags.add("conv2d_pairs")  # the DSP kernel's SMLABB/SMLATB (templates/ops.c.j2)
        return flags

    def shared_scratch(self) -> list[dict[str, Any]]:
        return [{"type": "int16_t", "name": "conv_window", "size": self.window_size,
                 "comment": "convolution input window, oldest tap first"}]  # fmt: skip

    def scratch_width(self) -> int:
        return self.output_size

    def context(self, index: int) -> dict[str, Any]:
        return {
            **self.dense.context(index),
            "input_size": self.input_size,
            "rows": self.frame[0],
            "channels": self.frame[1],
            "rows_out": self.frame_out,
            "filters": self.dense.units,
            "window_size": self.window_size,
            "kernel_t": self.kernel_hw[0],
            "kernel_f": self.kernel_hw[1],
            "stride_t": self.strides[0],
            "stride_f": self.strides[1],
            "dilation_t": self.dilation[0],
            "dilation_f": self.dilation[1],
            "before_f": geometry.pad_before(
                self.frame[0], self.span(1), self.strides[1], self.padding
            ),
            "span_t": self.span(0),
            "padding": self.padding,
            "padding_code": geometry.PADDINGS[self.padding],
            "streaming": self.streaming,
            "unrolled_gather": self.window_size <= UNROLLED_GATHER_TAPS,
            **self._lanes_context(),
        }

    def _lanes_context(self) -> dict[str, Any]:
        """The output rows [lanes_lo, lanes_hi) whose every tap along F lies inside the input:
        the MVE kernel runs them 4 positions per vector (the others: the gather and the rows)."""
        before = geometry.pad_before(self.frame[0], self.span(1), self.strides[1], self.padding)
        lo = -(-before // self.strides[1])
        hi = min(self.frame_out, (self.frame[0] - self.span(1) + before) // self.strides[1] + 1)
        lanes = (
            dense_layouts.optimized(self.dense)
            and self.dense.packed_requant
            and self.dense.activation in LANES_ACTIVATIONS
            and self.window_size <= UNROLLED_GATHER_TAPS
            and hi > lo
        )
        # DSP: 2 adjacent positions per word of taps (one channel, stride 1 along F)
        pairs = lanes and self.frame[1] * self.strides[1] == 1
        return {"lanes": bool(lanes), "pairs": bool(pairs), "lanes_lo": lo, "lanes_hi": hi}

    def format(self) -> str:
        kt, kf = self.kernel_hw
        return f"window {kt}x{kf}x{self.frame[1]} at {self.frame_out} rows, " + self.dense.format()

    def flash_bytes(self) -> dict[str, int]:
        return self.dense.flash_bytes()


@dataclass(frozen=True)
class QConv2DWindowLayer(QConv2DLayer):
    """The run-only form (kernel taller than 1 or stride along T): the whole window at once."""

    @property
    def valid_span(self) -> tuple[int, int] | None:  # type: ignore[override]
        if self.padding != "valid":
            return None
        return self.span(0), self.strides[0]

    def window(self, x_q: np.ndarray, state: Any, tables: dict, traces: list | None):
        x_q = np.asarray(x_q, np.int64)
        taps = windows_2d(x_q, self.frame, self.index_t(x_q.shape[1]), self.index_f)
        return self._rows(taps, tables)
