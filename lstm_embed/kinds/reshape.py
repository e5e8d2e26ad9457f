"""Flatten, Reshape (where it only regroups (timesteps, features)) and RepeatVector: the same
int16 values in another shape; run-only.

- Flatten: (T, m) -> T * m features, one vector (T fixed: the model's timesteps).
- Reshape(target_shape): (T, m) -> (T', m') with T * m = T' * m' (a -1 in the target is
  resolved as Keras does), or -> one vector of T * m (a one-dimensional target): the values in
  the same row-major order, so the C copies them.
- RepeatVector(n): one vector -> n timesteps of it.
- last (no Keras class; ONNX's out[:, -1, :] after a layer that needs the whole window):
  (T, m) -> the last timestep's m features, one vector.
Each output feature keeps the scale of the input feature it holds (so Reshape needs m' a
multiple of m, or one scale for every input feature). Flatten and Reshape depend on the
window's length: their run() takes exactly the model's timesteps (``exact_timesteps``).
Templates: templates/kinds/reshape/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds.base import (
    FloatLayer,
    IRError,
    LayerTrace,
    QLayer,
    QuantContext,
    QuantizeError,
)
from lstm_embed.kinds.common import WeightlessLayer, WeightlessQLayer


@dataclass(frozen=True)
class ReshapeLayer(WeightlessLayer, FloatLayer):
    kind: ClassVar[str] = "reshape"
    streaming: ClassVar[bool] = False
    name: str
    input_size: int
    mode: str  # "flatten", "reshape" or "repeat"
    out_timesteps: int  # 1 for flatten, T' for reshape, n for repeat
    out_size: int
    type_name: str
    in_timesteps: int | None = None  # flatten, reshape: the window they regroup

    def __post_init__(self) -> None:
        if self.mode not in ("flatten", "reshape", "repeat", "last"):
            raise IRError(f"layer '{self.name}': mode {self.mode!r}")
        if self.mode == "repeat":
            consistent = self.out_size == self.input_size and self.out_timesteps >= 1
        elif self.mode == "last":
            consistent = self.out_size == self.input_size and (self.in_timesteps or 0) >= 1
        else:  # the same values regrouped
            total = (self.in_timesteps or 0) * self.input_size
            consistent = self.out_timesteps * self.out_size == total and total > 0
            consistent = consistent and (self.mode == "reshape" or self.out_timesteps == 1)
        if not consistent:
            raise IRError(
                f"layer '{self.name}': {self.type_name} of {self.in_timesteps}x"
                f"{self.input_size} into {self.out_timesteps}x{self.out_size}"
            )

    @property
    def whole_window_reason(self) -> str:
        if self.mode == "repeat":
            return "RepeatVector makes a sequence of one vector"
        if self.mode == "last":
            return "it keeps the window's last timestep"
        return f"{self.type_name} regroups the window's timesteps"

    @property
    def keeps_timesteps(self) -> bool:
        return self.mode not in ("flatten", "last")

    @property
    def makes_timesteps(self) -> bool:
        return self.mode == "repeat"

    @property
    def needs_vector(self) -> bool:
        return self.mode == "repeat"

    @property
    def exact_timesteps(self) -> bool:
        return self.mode != "repeat"

    @property
    def output_size(self) -> int:
        return self.out_size

    @property
    def params(self) -> int:
        return 0

    def output_timesteps(self, steps: int | None) -> int | None:
        return self.out_timesteps

    def forward(self, x: np.ndarray) -> LayerTrace:
        if self.mode == "repeat":
            return LayerTrace(np.repeat(x[:, None], self.out_timesteps, axis=1))
        if self.mode == "flatten":
            return LayerTrace(x.reshape(len(x), -1))
        if self.mode == "last":
            return LayerTrace(x[:, -1])
        return LayerTrace(x.reshape(len(x), self.out_timesteps, self.out_size))

    def quantize(self, ctx: QuantContext) -> QReshapeLayer:
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        if self.mode == "reshape" and self.out_size % self.input_size and np.ptp(scale) > 0:
            raise QuantizeError(
                f"layer '{self.name}' (Reshape): its input features have different scales"
                f" (the model input's); supported: {self.out_size} output features a multiple"
                f" of the {self.input_size} input ones, or Reshape after a layer with one scale"
            )
        reps = -(-self.out_size // self.input_size)
        out_scale = np.tile(scale, reps)[: self.out_size].copy()
        return QReshapeLayer(
            self.name, self.input_size, self.mode, self.out_timesteps, self.out_size,
            self.type_name, self.in_timesteps, out_scale,
        )  # fmt: skip


@dataclass(frozen=True)
class QReshapeLayer(WeightlessQLayer, QLayer):
    kind: ClassVar[str] = "reshape"
    template: ClassVar[str] = "kinds/reshape/layer.c.j2"
    streaming: ClassVar[bool] = False
    name: str
    input_size: int
    mode: str
    out_timesteps: int
    out_size: int
    type_name: str
    in_timesteps: int | None
    out_scale: np.ndarray

    @property
    def whole_window_reason(self) -> str:
        if self.mode == "repeat":
            return "RepeatVector makes a sequence of one vector"
        if self.mode == "last":
            return "it keeps the window's last timestep"
        return f"{self.type_name} regroups the window's timesteps"

    @property
    def keeps_timesteps(self) -> bool:
        return self.mode not in ("flatten", "last")

    @property
    def makes_timesteps(self) -> bool:
        return self.mode == "repeat"

    @property
    def exact_timesteps(self) -> bool:
        return self.mode != "repeat"

    def output_timesteps(self, steps: int | None) -> int | None:
        return self.out_timesteps

    @property
    def output_size(self) -> int:
        return self.out_size

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.out_scale

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        """RepeatVector on its one vector (the run-only path steps a vector input)."""
        x_q = np.asarray(x_q, np.int64)
        return np.repeat(x_q[:, None], self.out_timesteps, axis=1), None

    @property
    def frame_identity(self) -> bool:  # type: ignore[override]
        return self.mode == "reshape" and self.out_timesteps == self.in_timesteps

    def window(self, x_q: np.ndarray, state: Any, tables: dict, traces: list | None):
        x_q = np.asarray(x_q, np.int64)
        if self.mode == "flatten":
            return x_q.reshape(len(x_q), -1)
        if self.mode == "last":
            return x_q[:, -1]
        return x_q.reshape(len(x_q), self.out_timesteps, self.out_size)

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "type_name": self.type_name,
            "mode": self.mode,
            "input_size": self.input_size,
            "out_timesteps": self.out_timesteps,
            "out_size": self.out_size,
            "in_timesteps": self.in_timesteps,
        }

    def format(self) -> str:
        return "out = input format"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": 0}
