"""Layers that move values along the time axis without computing: up-sampling (each timestep
repeated ``size`` times), zero padding (``before`` and ``after`` zero timesteps added),
cropping (``before`` and ``after`` timesteps dropped) and dilation (``size - 1`` zero timesteps
between every two, then zero padding: the first half of a Conv1DTranspose, whose second half is
a valid Conv1D). Run-only: each output timestep depends
on the window's length or on timesteps that have not arrived; run() takes exactly the model's
timesteps. The int16 values are copied (padding: zeros, the real 0 of every symmetric format),
so every output feature keeps its input feature's scale. Templates:
templates/kinds/time_axis/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds.base import FloatLayer, IRError, LayerTrace, QLayer, QuantContext
from lstm_embed.kinds.common import WeightlessLayer, WeightlessQLayer

MODES = ("upsample", "pad", "crop", "dilate")


class TimeAxisGeometry:
    """What the float and the integer layer share: the source timestep of each output one."""

    mode: str
    size: int
    before: int
    after: int
    type_name: str

    @property
    def whole_window_reason(self) -> str:
        return f"{self.type_name} moves timesteps"

    @property
    def exact_timesteps(self) -> bool:
        return True

    def output_timesteps(self, steps: int | None) -> int | None:
        if steps is None:
            return None
        if self.mode == "upsample":
            return steps * self.size
        if self.mode == "pad":
            return steps + self.before + self.after
        if self.mode == "dilate":
            return (max(steps, 1) - 1) * self.size + (steps > 0) + self.before + self.after
        return max(0, steps - self.before - self.after)

    def sources(self, steps: int) -> np.ndarray:
        """Input timestep of each output timestep; -1 where the output is zero padding."""
        out = np.arange(self.output_timesteps(steps) or 0)
        if self.mode == "upsample":
            return out // self.size
        if self.mode == "pad":
            index = out - self.before
            return np.where((index >= 0) & (index < steps), index, -1)
        if self.mode == "dilate":
            index = out - self.before
            real = (index >= 0) & (index % self.size == 0) & (index // self.size < steps)
            return np.where(real, index // self.size, -1)
        return out + self.before

    def moved(self, x: np.ndarray) -> np.ndarray:
        index = self.sources(x.shape[1])
        picked = x[:, np.maximum(index, 0)]
        return np.where((index >= 0)[None, :, None], picked, 0).astype(x.dtype)


@dataclass(frozen=True)
class TimeAxisLayer(TimeAxisGeometry, WeightlessLayer, FloatLayer):
    kind: ClassVar[str] = "time_axis"
    streaming: ClassVar[bool] = False
    name: str
    input_size: int
    mode: str
    type_name: str
    size: int = 1
    before: int = 0
    after: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES or self.size < 1 or self.before < 0 or self.after < 0:
            raise IRError(f"layer '{self.name}': {self.type_name} geometry not supported")

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def params(self) -> int:
        return 0

    def forward(self, x: np.ndarray) -> LayerTrace:
        return LayerTrace(self.moved(x))

    def quantize(self, ctx: QuantContext) -> QTimeAxisLayer:
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        return QTimeAxisLayer(
            self.name, self.input_size, self.mode, self.type_name, self.size, self.before,
            self.after, scale.copy(),
        )  # fmt: skip


@dataclass(frozen=True)
class QTimeAxisLayer(TimeAxisGeometry, WeightlessQLayer, QLayer):
    kind: ClassVar[str] = "time_axis"
    template: ClassVar[str] = "kinds/time_axis/layer.c.j2"
    streaming: ClassVar[bool] = False
    name: str
    input_size: int
    mode: str
    type_name: str
    size: int
    before: int
    after: int
    feature_scale: np.ndarray  # the input's, passed on

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.feature_scale

    def window(self, x_q: np.ndarray, state: Any, tables: dict, traces: list | None):
        return self.moved(np.asarray(x_q, np.int64))

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "type_name": self.type_name,
            "mode": self.mode,
            "input_size": self.input_size,
            "size": self.size,
            "before": self.before,
            "after": self.after,
        }

    def format(self) -> str:
        return "out = input format"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": 0}
