"""Swapping the time and feature axes ((T, m) -> (m, T), Keras' Permute((2, 1))): channels-first
windows turned into the (timesteps, features) a recurrent layer takes. Run-only (every output
timestep holds one value of every input timestep), exactly the model's timesteps.

Integer: input feature j (its own scale s_j: the model input is quantized per column) becomes
output timestep j, and each output feature mixes every input feature; so the output gets one
scale, max_j s_j, and each value is requantized into it, y_q = sat16(requantize(x_q, M_j,
S_j)) with M_j, S_j the multiplier of s_j / max s (``fixedpoint.affine_s16``; 1 is exact: a
copy when the scales are equal). Templates: templates/kinds/permute/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.kinds.base import FloatLayer, IRError, LayerTrace, QLayer, QuantContext
from lstm_embed.kinds.common import WeightlessLayer, WeightlessQLayer
from lstm_embed.quantize import fixedpoint as fp


@dataclass(frozen=True)
class PermuteLayer(WeightlessLayer, FloatLayer):
    kind: ClassVar[str] = "permute"
    type_name: ClassVar[str] = "Permute"
    streaming: ClassVar[bool] = False
    name: str
    input_size: int
    in_timesteps: int

    def __post_init__(self) -> None:
        if self.in_timesteps < 1 or self.input_size < 1:
            raise IRError(f"layer '{self.name}': Permute needs a fixed, non-empty window")

    whole_window_reason = "Permute swaps timesteps and features"
    exact_timesteps = True

    @property
    def output_size(self) -> int:
        return self.in_timesteps

    @property
    def params(self) -> int:
        return 0

    def output_timesteps(self, steps: int | None) -> int | None:
        return self.input_size

    def forward(self, x: np.ndarray) -> LayerTrace:
        return LayerTrace(np.swapaxes(x, 1, 2))

    def quantize(self, ctx: QuantContext) -> QPermuteLayer:
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        out_scale = float(np.max(scale))
        multiplier, shift = fp.signed_multipliers(scale / out_scale)
        return QPermuteLayer(
            self.name, self.input_size, self.in_timesteps, multiplier, shift, out_scale
        )


@dataclass(frozen=True)
class QPermuteLayer(WeightlessQLayer, QLayer):
    kind: ClassVar[str] = "permute"
    template: ClassVar[str] = "kinds/permute/layer.c.j2"
    streaming: ClassVar[bool] = False
    name: str
    input_size: int
    in_timesteps: int
    multiplier: np.ndarray  # (input_size,): input feature's scale / the output's
    shift: np.ndarray
    output_scale: float

    whole_window_reason = "Permute swaps timesteps and features"
    exact_timesteps = True

    @property
    def output_size(self) -> int:
        return self.in_timesteps

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.full(self.in_timesteps, self.output_scale)

    def output_timesteps(self, steps: int | None) -> int | None:
        return self.input_size

    def window(self, x_q: np.ndarray, state: Any, tables: dict, traces: list | None):
        x_q = np.asarray(x_q, np.int64)
        y = fp.affine_s16(x_q, self.multiplier, self.shift, np.zeros(self.input_size, np.int64))
        return np.swapaxes(y, 1, 2)

    def uses(self) -> set[str]:
        return {"affine"}

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "in_timesteps": self.in_timesteps,
            "output_scale": f"{self.output_scale:.6g}",
            "multiplier": cformat.c_int_array(self.multiplier, per_line=8),
            "shift": cformat.c_int_array(self.shift, per_line=16),
        }

    def format(self) -> str:
        return f"out int16 x {self.output_scale:.3g}"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": 5 * self.input_size}
