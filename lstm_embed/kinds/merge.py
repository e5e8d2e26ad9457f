"""Merge layers of a graph: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate.

Each takes several tensors of the same rank (all sequences of one length, or all vectors);
elementwise merges broadcast an operand of one feature over the others' features (Keras does).
Concatenate on the time axis (``TIME_CONCAT``) joins sequences of one feature size and any
lengths (``part_steps``) one after the other; it needs every operand whole (run-only).

Quantization (the operands' scales differ: each is brought to the output's honestly):
- Concatenate (feature axis) copies its operands' int16 values; the output keeps each part's
  own per-feature scale (exact: no rounding, nothing saturates).
- Add, Subtract, Average: one output scale from the calibrated largest |y| (headroom
  OUTPUT_HEADROOM); each operand is multiplied by its ratio of scales to the output's, a
  multiplier in Q(``shift``) per output feature, the products summed in int64 and rounded once
  (half up), then saturated to int16.
- Multiply (two operands): the int32 product of the operands times one multiplier per feature
  (s_a s_b / s_y), in int64, rounded once, saturated.
- Maximum, Minimum: each operand requantized to the output scale as above (rounded,
  saturated), then the largest or smallest (requantization is monotone, so this is the max of
  the real values to within one rounding).
- Concatenate on the time axis: a feature's timesteps share one scale, the largest of the
  operands' for that feature (nothing saturates); each operand is requantized to it as above
  (exact, multiplier 2**shift, where the scales are equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds.base import FloatLayer, IRError, LayerTrace, QLayer, QuantContext
from lstm_embed.kinds.common import WeightlessLayer, WeightlessQLayer
from lstm_embed.quantize import fixedpoint as fp

# Keras class -> op
OPS = {
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Average": "average",
    "Maximum": "maximum",
    "Minimum": "minimum",
    "Concatenate": "concatenate",
}
ELEMENTWISE = ("add", "subtract", "multiply", "average", "maximum", "minimum")
TIME_CONCAT = "concatenate_time"  # Concatenate(axis=1) of sequences
OUTPUT_HEADROOM = 1.5  # as Dense's linear outputs: calibrated peak times 1.5
MAX_SHIFT = 46  # products |x| * multiplier < 2**15 * 2**31; sums of a few stay far below 2**63
MULTIPLIER_BITS = 31


def output_width(op: str, sizes: tuple[int, ...]) -> int:
    return sum(sizes) if op == "concatenate" else max(sizes)


def time_concat_problem(sizes: tuple[int, ...], steps: tuple[int | None, ...]) -> str:
    """Why a time-axis concatenation cannot be built ("" when it can)."""
    if len(set(sizes)) != 1:
        return f"feature sizes {list(sizes)} differ (the time axis joins equal feature sizes)"
    if any(s is None for s in steps):
        return "an operand has no declared timestep count"
    return ""


def check_sizes(name: str, op: str, sizes: tuple[int, ...]) -> None:
    """Keras' rules: Subtract takes two operands; elementwise operands have equal feature sizes
    or 1 (broadcast); Multiply here takes two."""
    if len(sizes) < 2:
        raise IRError(f"layer '{name}': a merge takes at least 2 inputs, got {len(sizes)}")
    if op in ("subtract", "multiply") and len(sizes) != 2:
        raise IRError(
            f"layer '{name}': {op} of {len(sizes)} inputs is not supported (supported: 2)"
        )
    if op == TIME_CONCAT and len(set(sizes)) != 1:
        raise IRError(f"layer '{name}': feature sizes {list(sizes)} differ on a time-axis concat")
    if op in ELEMENTWISE:
        width = max(sizes)
        if any(s not in (1, width) for s in sizes):
            raise IRError(
                f"layer '{name}': feature sizes {list(sizes)} do not broadcast (supported: equal"
                " sizes, or 1)"
            )


def apply_float(op: str, xs: list[np.ndarray]) -> np.ndarray:
    if op == TIME_CONCAT:
        return np.concatenate(xs, axis=-2)
    if op == "concatenate":
        return np.concatenate(xs, axis=-1)
    if op == "add":
        return sum(xs[1:], xs[0])
    if op == "subtract":
        return xs[0] - xs[1]
    if op == "multiply":
        return xs[0] * xs[1]
    if op == "average":
        return sum(xs[1:], xs[0]) / len(xs)
    if op == "maximum":
        return np.maximum.reduce(np.broadcast_arrays(*xs))
    return np.minimum.reduce(np.broadcast_arrays(*xs))


class MergeCapabilities:
    """What a merge (float or quantized) tells the generic stages: a concat on the time axis
    joins its operands' timesteps and needs each one whole; every other merge streams."""

    op: str

    @property
    def streaming(self) -> bool:
        return self.op != TIME_CONCAT

    @property
    def whole_window_reason(self) -> str:
        return "Concatenate on the time axis needs each operand whole"

    @property
    def joins_timesteps(self) -> bool:
        return self.op == TIME_CONCAT


@dataclass(frozen=True)
class MergeLayer(MergeCapabilities, WeightlessLayer, FloatLayer):
    """A merge of ``len(input_sizes)`` tensors along the feature axis (Concatenate) or
    elementwise."""

    kind: ClassVar[str] = "merge"
    arity: ClassVar[int | None] = None  # any number of inputs
    name: str
    op: str
    input_sizes: tuple[int, ...]
    type_name: str = ""
    part_steps: tuple[int, ...] = ()  # a time-axis concat: each operand's timesteps

    def __post_init__(self) -> None:
        if self.op not in (*OPS.values(), TIME_CONCAT):
            raise IRError(f"layer '{self.name}': unknown merge {self.op!r}")
        check_sizes(self.name, self.op, self.input_sizes)

    @property
    def input_size(self) -> int:  # type: ignore[override]
        return self.input_sizes[0]

    @property
    def output_size(self) -> int:
        return output_width(self.op, self.input_sizes)

    @property
    def params(self) -> int:
        return 0

    def forward(self, x: np.ndarray) -> LayerTrace:
        raise IRError(f"layer '{self.name}': a merge takes several inputs")

    def forward_inputs(self, xs: list[np.ndarray]) -> LayerTrace:
        return LayerTrace(apply_float(self.op, [np.asarray(x, np.float64) for x in xs]))

    def quantize(self, ctx: QuantContext) -> QMergeLayer:
        scales = [np.broadcast_to(np.asarray(s, np.float64), (n,)) for s, n in
                  zip(ctx.input_scales, self.input_sizes, strict=True)]  # fmt: skip
        width = self.output_size
        if self.op == "concatenate":
            out_scale = np.concatenate(scales)
            empty = np.zeros((len(scales), width), np.int64)
            return QMergeLayer(self.name, self.op, self.input_sizes, empty, 0, out_scale)
        if self.op == TIME_CONCAT:
            return self._quantize_time(scales)
        peak = float(np.max(np.abs(ctx.trace.output))) if ctx.trace.output.size else 0.0
        y_scale = (peak * OUTPUT_HEADROOM if peak > 0 else 1.0) / fp.INT16_MAX
        wide = [np.broadcast_to(s if len(s) == width else s[:1], (width,)) for s in scales]
        if self.op == "multiply":
            ratios = np.array([wide[0] * wide[1] / y_scale])
        else:
            divisor = len(wide) if self.op == "average" else 1
            ratios = np.array([s / y_scale / divisor for s in wide])
        shift = _common_shift(ratios)
        multipliers = np.minimum(
            fp.round_half_away(ratios * 2.0**shift), 2**MULTIPLIER_BITS - 1
        ).astype(np.int64)
        if self.op == "subtract":
            multipliers[1] = -multipliers[1]
        return QMergeLayer(
            self.name, self.op, self.input_sizes, multipliers, shift, np.full(width, y_scale)
        )

    def _quantize_time(self, scales: list[np.ndarray]) -> QMergeLayer:
        out_scale = np.max(np.stack(scales), axis=0)
        ratios = np.array([s / out_scale for s in scales])
        shift = _common_shift(ratios)
        multipliers = np.minimum(
            fp.round_half_away(ratios * 2.0**shift), 2**MULTIPLIER_BITS - 1
        ).astype(np.int64)
        return QMergeLayer(self.name, self.op, self.input_sizes, multipliers, shift, out_scale,
                           self.part_steps)  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type_name or self.op.capitalize(),
            "activation": None,
            "units": None,
            "params_formula": "0",
        }


def _common_shift(ratios: np.ndarray) -> int:
    """The largest shift whose multipliers round(ratio * 2**shift) stay below 2**30 (1 bit
    of margin under int32), at most MAX_SHIFT."""
    top = float(np.max(ratios)) if ratios.size else 0.0
    if top <= 0:
        return MAX_SHIFT
    shift = 30 - int(np.ceil(np.log2(top)))
    return int(min(max(shift, 1), MAX_SHIFT))


@dataclass(frozen=True)
class QMergeLayer(MergeCapabilities, WeightlessQLayer, QLayer):
    """``multipliers`` (operands, output features): operand i's factor per output feature in
    Q(``shift``) (negative for Subtract's second operand); unused by Concatenate."""

    kind: ClassVar[str] = "merge"
    template: ClassVar[str] = "kinds/merge/layer.c.j2"
    arity: ClassVar[int | None] = None
    name: str
    op: str
    input_sizes: tuple[int, ...]
    multipliers: np.ndarray
    shift: int
    output_scale: np.ndarray  # (output features,)
    part_steps: tuple[int, ...] = ()  # a time-axis concat: each operand's timesteps

    @property
    def input_size(self) -> int:  # type: ignore[override]
        return self.input_sizes[0]

    @property
    def output_size(self) -> int:
        return output_width(self.op, self.input_sizes)

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.asarray(self.output_scale, np.float64)

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        raise ValueError(f"layer '{self.name}': a merge takes several inputs")

    def apply(self, xs: list[np.ndarray], tables: dict) -> np.ndarray:
        """int16 operands (..., size_i) -> int16 (..., output features), as the C computes."""
        xs = [np.asarray(x, np.int64) for x in xs]
        if self.op == "concatenate":
            return np.concatenate(xs, axis=-1)
        m = self.multipliers
        if self.op == "multiply":
            return fp.saturate_s16(fp.rounding_shift_right(xs[0] * xs[1] * m[0], self.shift))
        if self.op in ("maximum", "minimum", TIME_CONCAT):
            parts = [fp.saturate_s16(fp.rounding_shift_right(x * mi, self.shift))
                     for x, mi in zip(xs, m, strict=True)]  # fmt: skip
            if self.op == TIME_CONCAT:
                return np.concatenate(parts, axis=-2)
            pick = np.maximum if self.op == "maximum" else np.minimum
            return pick.reduce(np.broadcast_arrays(*parts))
        acc = sum(x * mi for x, mi in zip(xs, m, strict=True))
        return fp.saturate_s16(fp.rounding_shift_right(acc, self.shift))

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "op": self.op,
            "input_sizes": list(self.input_sizes),
            "part_steps": list(self.part_steps),
            "output_size": self.output_size,
            "shift": self.shift,
            "half": (1 << (self.shift - 1)) if self.shift > 0 else 0,
            "multipliers": [
                {"values": ", ".join(str(int(v)) for v in row), "count": len(row)}
                for row in self.multipliers
            ],
        }

    def format(self) -> str:
        if self.op == "concatenate":
            return "int16, each part's own scale"
        if self.op == TIME_CONCAT:
            return f"int16, per feature the operands' largest scale, operands in Q{self.shift}"
        return f"int16 x {float(self.output_scale[0]):.3g}, operands in Q{self.shift}"

    def flash_bytes(self) -> dict[str, int]:
        size = 0 if self.op == "concatenate" else 4 * self.multipliers.size
        return {"weights": size, "bias": 0, "requant": 0}
