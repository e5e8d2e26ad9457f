"""Integer IR: the quantized model that the reference executes and the emitter renders.

Formats are values: activations are int16 with a float ``scale`` (real = q * scale); the hidden
state is Q0.15; each LSTM layer's cell state is int16 with ``cell_frac`` fractional bits; gate
pre-activations are int32 with ``fixedpoint.Z_FRAC_BITS`` fractional bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .fixedpoint import ActivationTable
from .ir import LayerStack

Q15_SCALE = 2.0**-15


@dataclass(frozen=True)
class QLSTMLayer:
    kind: ClassVar[str] = "lstm"
    name: str
    input_size: int
    units: int
    recurrent_activation: str
    return_sequences: bool
    weights: np.ndarray  # int8 or int16 (units, 4, input_size + units): rows per unit, i f g o
    bias_s32: np.ndarray  # (units, 4)
    multiplier: np.ndarray  # (units, 4) int32, accumulator -> Z_FRAC_BITS
    shift: np.ndarray  # (units, 4)
    weight_scale: np.ndarray  # (units, 4) float, real weight = q * weight_scale (after folding)
    # cell state range +/-2**(15 - cell_frac): int16 with cell_frac fractional bits, or for
    # int16-weight layers int32 with 15 more (the int16 cell's rounding then dominates)
    cell_frac: int
    has_bias: bool = True
    input_shift: int = 0  # the input columns' partial sum is multiplied by 2**input_shift

    def __post_init__(self) -> None:
        k = self.input_size + self.units
        assert self.weights.shape == (self.units, 4, k)
        assert self.weights.dtype in (np.int8, np.int16)
        assert self.bias_s32.shape == (self.units, 4)
        assert 1 <= self.cell_frac <= 15

    @property
    def weight_bits(self) -> int:
        return self.weights.dtype.itemsize * 8

    @property
    def weights_s8(self) -> np.ndarray:
        """The int8 weights (only for layers quantized to 8 bits)."""
        if self.weight_bits != 8:
            raise ValueError(f"layer '{self.name}' has {self.weight_bits}-bit weights")
        return self.weights

    @property
    def row_length(self) -> int:
        return self.input_size + self.units

    @property
    def effective_row_length(self) -> int:
        """Row length for overflow bounds: input columns count 2**input_shift times."""
        return self.input_size * 2**self.input_shift + self.units

    @property
    def portable_only(self) -> bool:
        """int16-weight layers run the reference kernel on every core (int64 row sums)."""
        return self.weight_bits != 8

    @property
    def wide_cell(self) -> bool:
        return self.weight_bits == 16

    @property
    def cell_stored_frac(self) -> int:
        """Fractional bits of the stored cell value."""
        return self.cell_frac + (15 if self.wide_cell else 0)

    @property
    def cell_limits(self) -> tuple[int, int]:
        """Saturation limits of the stored cell (the int16 range, scaled for a wide cell)."""
        scale = 2**15 if self.wide_cell else 1
        return -(2**15) * scale, (2**15) * scale - 1

    @property
    def cell_int_bits(self) -> int:
        return 15 - self.cell_frac

    @property
    def macs(self) -> int:
        return 4 * self.units * self.row_length

    @property
    def output_size(self) -> int:
        return self.units


@dataclass(frozen=True)
class QDenseLayer:
    kind: ClassVar[str] = "dense"
    name: str
    input_size: int
    units: int
    activation: str
    weights: np.ndarray  # int8 or int16 (units, input_size)
    bias_s32: np.ndarray  # (units,)
    multiplier: np.ndarray  # (units,)
    shift: np.ndarray  # (units,)
    weight_scale: np.ndarray  # (units,)
    input_scale: float
    output_scale: float  # Q0.15 (2**-15) for sigmoid, tanh, softmax
    has_bias: bool = True

    def __post_init__(self) -> None:
        assert self.weights.shape == (self.units, self.input_size)
        assert self.weights.dtype in (np.int8, np.int16)

    @property
    def weight_bits(self) -> int:
        return self.weights.dtype.itemsize * 8

    @property
    def uses_table(self) -> bool:
        return self.activation in ("sigmoid", "tanh", "softmax")

    @property
    def macs(self) -> int:
        return self.units * self.input_size

    @property
    def output_size(self) -> int:
        return self.units


QLayer = QLSTMLayer | QDenseLayer


@dataclass(frozen=True)
class QModel(LayerStack):
    name: str
    source: str
    input_size: int
    timesteps: int | None
    input_scale: np.ndarray  # (input_size,) float32: x_q = round(x / scale)
    output_scale: float
    layers: tuple[QLayer, ...]
    tables: dict[str, ActivationTable] = field(default_factory=dict)
    params: int = 0

    @property
    def macs_per_step(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def input_inv_scale(self) -> np.ndarray:
        return (1.0 / self.input_scale.astype(np.float64)).astype(np.float32)
