"""MaxPooling2D, AveragePooling2D, GlobalMaxPooling2D and GlobalAveragePooling2D over (T, F, C)
windows (channels_last; the chain's T timesteps of F * C features, ``kinds/conv2d.py``).

Per channel, over a (pool_t, pool_f) span moved by (stride_t, stride_f), padding valid or same
(``kinds/window.py``). With pool and stride 1 along T the layer works per frame and streams;
otherwise it needs the whole window (run-only, as the 1D pooling). The Global forms pool over
every timestep and row: one vector of C values. Integer, as the 1D pooling: the output keeps
the input's format; max is the largest int16 of the span, average the int32 sum of the values
inside the input over their count, rounded half away from zero
(``fixedpoint.div_round_half_away``; TF's "same" averages exclude the padding).
Templates: templates/kinds/pooling2d/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds import window as geometry
from lstm_embed.kinds.base import (
    FloatLayer,
    IRError,
    LayerTrace,
    QLayer,
    QuantContext,
    QuantizeError,
)
from lstm_embed.kinds.common import WeightlessLayer, WeightlessQLayer
from lstm_embed.kinds.conv2d import Pair, shared_channel_scale, windows_2d
from lstm_embed.quantize import fixedpoint as fp


class Pool2DGeometry:
    frame: Pair  # (F, C) of the input
    pool: Pair
    strides: Pair
    padding: str
    whole: bool
    type_name: str

    @property
    def streaming(self) -> bool:
        return not self.whole and self.pool[0] == 1 and self.strides[0] == 1

    @property
    def whole_window_reason(self) -> str:
        return f"{self.type_name} pools over timesteps"

    @property
    def keeps_timesteps(self) -> bool:
        return not self.whole

    @property
    def frame_out(self) -> int:
        return geometry.output_length(self.frame[0], self.pool[1], self.strides[1], self.padding)

    @property
    def output_frame(self) -> Pair | None:
        return None if self.whole else (self.frame_out, self.frame[1])

    @property
    def output_size(self) -> int:
        return self.frame[1] if self.whole else self.frame_out * self.frame[1]

    def output_timesteps(self, steps: int | None) -> int | None:
        if self.whole or steps is None or self.streaming:
            return steps
        return geometry.output_length(steps, self.pool[0], self.strides[0], self.padding)

    @property
    def before_f(self) -> int:
        """Padding rows before the frame (same padding)."""
        if self.whole:
            return 0
        return geometry.pad_before(self.frame[0], self.pool[1], self.strides[1], self.padding)

    def index_f(self, rows: int) -> np.ndarray:
        if self.whole:
            return np.arange(rows)[None, :]
        return geometry.taps(rows, self.pool[1], 1, self.strides[1], self.padding)

    def index_t(self, steps: int) -> np.ndarray:
        if self.whole:
            return np.arange(steps)[None, :]
        return geometry.taps(steps, self.pool[0], 1, self.strides[0], self.padding)

    def spans(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (N, T, F * C) or one frame (N, F * C) -> every span's values (zero outside) and
        whether each is inside, (..., T_out, F_out, pool_t, pool_f, C)."""
        index_f = self.index_f(self.frame[0])
        index_t = None if x.ndim == 2 else self.index_t(x.shape[1])
        taps = windows_2d(x, self.frame, index_t, index_f)
        inside_t = np.ones((1, 1), bool) if index_t is None else index_t >= 0
        inside = (inside_t[:, None, :, None] & (index_f >= 0)[None, :, None, :]).astype(bool)
        if index_t is None:
            taps, inside = taps[:, :, None], inside[0]
        return taps, inside[..., None]

    def pooled(self, x: np.ndarray, low: float, average) -> np.ndarray:
        """Max or ``average(total, count)`` over every span, flattened as the chain carries it."""
        taps, inside = self.spans(x)
        if self.mode == "max":  # type: ignore[attr-defined]
            y = np.max(np.where(inside, taps, low), axis=(-3, -2))
        else:
            count = np.broadcast_to(
                np.sum(inside, axis=(-3, -2)), taps.shape[:-3] + taps.shape[-1:]
            )
            y = average(np.sum(taps, axis=(-3, -2)), count)
        if self.whole:
            return y[:, 0, 0]
        return y.reshape(*y.shape[: y.ndim - 2], -1)


@dataclass(frozen=True)
class Pooling2DLayer(Pool2DGeometry, WeightlessLayer, FloatLayer):
    kind: ClassVar[str] = "pooling2d"
    name: str
    input_size: int
    frame: Pair
    mode: str  # "max" or "average"
    type_name: str
    pool: Pair = (1, 1)
    strides: Pair = (1, 1)
    padding: str = "valid"
    whole: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("max", "average") or self.padding not in ("valid", "same"):
            raise IRError(f"layer '{self.name}': pooling mode or padding not supported")
        if self.frame[0] * self.frame[1] != self.input_size:
            raise IRError(f"layer '{self.name}': frame {self.frame} != {self.input_size} features")
        if not self.whole and self.frame_out < 1:
            raise IRError(f"layer '{self.name}': the pool is wider than the {self.frame[0]} rows")

    @property
    def params(self) -> int:
        return 0

    def shared_input_scale(self, scale: np.ndarray) -> np.ndarray:
        return shared_channel_scale(scale, self.frame)

    def forward(self, x: np.ndarray) -> LayerTrace:
        return LayerTrace(self.pooled(x, -np.inf, np.divide))

    def quantize(self, ctx: QuantContext) -> QPooling2DLayer:
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        per_channel = np.max(scale.reshape(self.frame), axis=0)
        if not np.all(scale.reshape(self.frame) == per_channel):
            raise QuantizeError(
                f"layer '{self.name}': its input has different scales at the positions of one"
                " channel; pooling over positions needs one scale per channel"
            )
        out = per_channel if self.whole else np.tile(per_channel, self.frame_out)
        kind = QPooling2DLayer if self.streaming else QPooling2DWindowLayer
        return kind(
            self.name, self.input_size, self.frame, self.mode, self.type_name, self.pool,
            self.strides, self.padding, self.whole, out,
        )  # fmt: skip


@dataclass(frozen=True)
class QPooling2DLayer(Pool2DGeometry, WeightlessQLayer, QLayer):
    kind: ClassVar[str] = "pooling2d"
    template: ClassVar[str] = "kinds/pooling2d/layer.c.j2"
    name: str
    input_size: int
    frame: Pair
    mode: str
    type_name: str
    pool: Pair
    strides: Pair
    padding: str
    whole: bool
    feature_scale: np.ndarray  # the output's: the input's channel scales

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.feature_scale

    def step(self, x_q: np.ndarray, state: Any, tables: dict):
        return self.pooled(np.asarray(x_q, np.int64), fp.INT16_MIN, fp.div_round_half_away), None

    def uses(self) -> set[str]:
        flags = {"div_round"} if self.mode == "average" else set()
        return flags | (set() if self.streaming or self.whole else {"window_geometry"})

    def scratch_width(self) -> int:
        return self.output_size

    def context(self, index: int) -> dict[str, Any]:
        rows = self.frame[0]
        return {
            "index": index,
            "name": self.name,
            "type_name": self.type_name,
            "input_size": self.input_size,
            "rows": rows,
            "channels": self.frame[1],
            "rows_out": 1 if self.whole else self.frame_out,
            "mode": self.mode,
            "pool_t": self.pool[0],
            "pool_f": rows if self.whole else self.pool[1],
            "stride_t": self.strides[0],
            "stride_f": self.strides[1],
            "before_f": self.before_f,
            "padding": self.padding,
            "padding_code": geometry.PADDINGS[self.padding],
            "whole": self.whole,
            "streaming": self.streaming,
        }

    def format(self) -> str:
        return "out = input format"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": 0}


@dataclass(frozen=True)
class QPooling2DWindowLayer(QPooling2DLayer):
    """The run-only forms (pooling along T, Global*): the whole window at once."""

    @property
    def valid_span(self) -> tuple[int, int] | None:  # type: ignore[override]
        if self.whole or self.padding != "valid":
            return None
        return self.pool[0], self.strides[0]

    def window(self, x_q: np.ndarray, state: Any, tables: dict, traces: list | None):
        return self.pooled(np.asarray(x_q, np.int64), fp.INT16_MIN, fp.div_round_half_away)
