"""MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D and GlobalAveragePooling1D over the
timesteps, per feature; run-only (each needs the whole window, or the pooled span of it).

Integer: the output keeps the input's format. Max: the largest int16 of the span (exact).
Average: the int32 sum over the span's timesteps inside the sequence divided by their count,
rounded half away from zero (``fixedpoint.div_round_half_away``); as Keras (TF), "same" padding
averages over the timesteps it covers, not the padding. GlobalAveragePooling1D under a mask (a
graph's mask tensor, True at a padded step) averages the unmasked timesteps only, as Keras;
with every step masked (Keras: 0/0, NaN) the output is 0. Geometry: ``layers/window.py``.
Templates: templates/kinds/pooling/ (layer.c.j2, layer_call.c.j2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds import window as geometry
from lstm_embed.kinds.base import FloatLayer, IRError, LayerTrace, QLayer, QuantContext
from lstm_embed.kinds.common import WeightlessLayer, WeightlessQLayer
from lstm_embed.quantize import fixedpoint as fp

MAX_POOL = 65535  # int16 sums of this many timesteps fit int32 (a window that long is no MCU's)


@dataclass(frozen=True)
class PoolingLayer(WeightlessLayer, FloatLayer):
    kind: ClassVar[str] = "pooling"
    streaming: ClassVar[bool] = False
    needs_timesteps: ClassVar[bool] = True
    name: str
    input_size: int
    mode: str  # "max" or "average"
    type_name: str
    pool: int = 1
    strides: int = 1
    padding: str = "valid"
    whole: bool = False  # Global*: over every timestep, the timestep axis gone

    def __post_init__(self) -> None:
        if self.mode not in ("max", "average") or self.padding not in ("valid", "same"):
            raise IRError(f"layer '{self.name}': pooling mode or padding not supported")

    @property
    def whole_window_reason(self) -> str:
        return f"{self.type_name} pools over timesteps"

    @property
    def keeps_timesteps(self) -> bool:
        return not self.whole

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def params(self) -> int:
        return 0

    def output_timesteps(self, steps: int | None) -> int | None:
        if self.whole or steps is None:
            return steps
        return geometry.output_length(steps, self.pool, self.strides, self.padding)

    @property
    def reads_mask(self) -> bool:  # type: ignore[override]
        return self.whole and self.mode == "average"

    def forward_masked(self, xs: list[np.ndarray], mask: np.ndarray) -> LayerTrace:
        """GlobalAveragePooling1D over the unmasked timesteps (mask (N, T), True: padded)."""
        x = xs[0]
        keep = ~np.asarray(mask, bool)
        count = keep.sum(axis=1)[:, None]
        total = np.sum(np.where(keep[..., None], x, 0.0), axis=1)
        return LayerTrace(np.where(count > 0, total / np.maximum(count, 1), 0.0))

    def forward(self, x: np.ndarray) -> LayerTrace:
        if self.whole:
            y = np.max(x, axis=1) if self.mode == "max" else np.mean(x, axis=1)
            return LayerTrace(y)
        index = geometry.taps(x.shape[1], self.pool, 1, self.strides, self.padding)
        inside = (index >= 0)[None, :, :, None]
        if self.mode == "max":
            return LayerTrace(np.max(geometry.gather(x, index, -np.inf), axis=2))
        total = np.sum(geometry.gather(x, index, 0.0), axis=2)
        return LayerTrace(total / np.sum(inside, axis=2))

    def quantize(self, ctx: QuantContext) -> QPoolingLayer:
        scale = np.broadcast_to(np.asarray(ctx.feature_scale, np.float64), (self.input_size,))
        return QPoolingLayer(
            self.name, self.input_size, self.mode, self.type_name, self.pool, self.strides,
            self.padding, self.whole, scale.copy(),
        )  # fmt: skip


@dataclass(frozen=True)
class QPoolingLayer(WeightlessQLayer, QLayer):
    kind: ClassVar[str] = "pooling"
    template: ClassVar[str] = "kinds/pooling/layer.c.j2"
    streaming: ClassVar[bool] = False
    name: str
    input_size: int
    mode: str
    type_name: str
    pool: int
    strides: int
    padding: str
    whole: bool
    feature_scale: np.ndarray  # the input's, passed on

    @property
    def whole_window_reason(self) -> str:
        return f"{self.type_name} pools over timesteps"

    @property
    def keeps_timesteps(self) -> bool:
        return not self.whole

    def output_timesteps(self, steps: int | None) -> int | None:
        if self.whole or steps is None:
            return steps
        return geometry.output_length(steps, self.pool, self.strides, self.padding)

    @property
    def valid_span(self) -> tuple[int, int] | None:  # type: ignore[override]
        if self.whole or self.padding != "valid":
            return None
        return self.pool, self.strides

    @property
    def output_size(self) -> int:
        return self.input_size

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.feature_scale

    @property
    def reads_mask(self) -> bool:  # type: ignore[override]
        return self.whole and self.mode == "average"

    def window_masked(self, xs: list[np.ndarray], mask: np.ndarray, tables: dict) -> np.ndarray:
        """The C's masked average: the int32 sum of the unmasked steps divided by their
        count, rounded half away from zero; 0 when every step is masked."""
        x_q = xs[0]
        keep = ~np.asarray(mask, bool)
        total = np.sum(np.where(keep[..., None], np.asarray(x_q, np.int64), 0), axis=1)
        count = keep.sum(axis=1)[:, None]
        y = fp.div_round_half_away(total, np.maximum(count, 1))
        return np.where(count > 0, y, 0)

    def window(self, x_q: np.ndarray, state: Any, tables: dict, traces: list | None):
        x_q = np.asarray(x_q, np.int64)
        steps = x_q.shape[1]
        if self.whole:
            index = np.arange(steps)[None, :]
        else:
            index = geometry.taps(steps, self.pool, 1, self.strides, self.padding)
        if self.mode == "max":
            y = np.max(geometry.gather(x_q, index, fp.INT16_MIN), axis=2)
        else:
            total = np.sum(geometry.gather(x_q, index, 0), axis=2)
            count = np.sum(index >= 0, axis=1)[None, :, None]
            y = fp.div_round_half_away(total, count)
        return y[:, 0] if self.whole else y

    def uses(self) -> set[str]:
        flags = set() if self.whole else {"window_geometry"}
        return flags | ({"div_round"} if self.mode == "average" else set())

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "type_name": self.type_name,
            "input_size": self.input_size,
            "mode": self.mode,
            "pool": self.pool,
            "strides": self.strides,
            "padding": self.padding,
            "padding_code": geometry.PADDINGS[self.padding],
            "whole": self.whole,
        }

    def format(self) -> str:
        return "out = input format"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": 0, "biases": 0}
