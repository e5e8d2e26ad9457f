"""Float IR: what the frontend reads out of a Keras model, before any quantization.

Plain frozen dataclasses validated at construction. Keras' LSTM gate order (i, f, c, o) is
stated once here (``GATES``) and weights are split into gates only through ``LSTMLayer.gate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

GATES = ("i", "f", "g", "o")  # Keras order: input, forget, cell candidate ("c" in Keras), output
RECURRENT_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
DENSE_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")


class IRError(ValueError):
    """A model that the IR cannot represent; the message names the layer and the problem."""


def _check_finite(layer: str, what: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise IRError(
            f"layer '{layer}': {what} contains NaN or Inf; only finite weights are supported"
        )


@dataclass(frozen=True)
class LSTMLayer:
    kind: ClassVar[str] = "lstm"
    name: str
    input_size: int
    units: int
    kernel: np.ndarray  # (input_size, 4*units), Keras layout
    recurrent_kernel: np.ndarray  # (units, 4*units)
    bias: np.ndarray | None  # (4*units,) or None when use_bias=False
    recurrent_activation: str = "sigmoid"
    return_sequences: bool = False

    def __post_init__(self) -> None:
        n, m = self.units, self.input_size
        if n < 1 or m < 1:
            raise IRError(f"layer '{self.name}': units and input size must be >= 1")
        if self.kernel.shape != (m, 4 * n):
            raise IRError(f"layer '{self.name}': kernel shape {self.kernel.shape} != {(m, 4 * n)}")
        if self.recurrent_kernel.shape != (n, 4 * n):
            raise IRError(
                f"layer '{self.name}': recurrent kernel shape {self.recurrent_kernel.shape}"
                f" != {(n, 4 * n)}"
            )
        if self.bias is not None and self.bias.shape != (4 * n,):
            raise IRError(f"layer '{self.name}': bias shape {self.bias.shape} != {(4 * n,)}")
        if self.recurrent_activation not in RECURRENT_ACTIVATIONS:
            raise IRError(
                f"layer '{self.name}': recurrent_activation '{self.recurrent_activation}' is not"
                f" supported (supported: {', '.join(RECURRENT_ACTIVATIONS)})"
            )
        _check_finite(self.name, "kernel", self.kernel)
        _check_finite(self.name, "recurrent_kernel", self.recurrent_kernel)
        if self.bias is not None:
            _check_finite(self.name, "bias", self.bias)

    @property
    def params(self) -> int:
        bias = 4 * self.units if self.bias is not None else 0
        return 4 * self.units * (self.input_size + self.units) + bias

    @property
    def output_size(self) -> int:
        return self.units

    def gate(self, gate: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kernel (m, n), recurrent kernel (n, n), bias (n,)) of one gate."""
        k = GATES.index(gate)
        cols = slice(k * self.units, (k + 1) * self.units)
        bias = self.bias[cols] if self.bias is not None else np.zeros(self.units)
        return self.kernel[:, cols], self.recurrent_kernel[:, cols], bias


@dataclass(frozen=True)
class DenseLayer:
    kind: ClassVar[str] = "dense"
    name: str
    input_size: int
    units: int
    kernel: np.ndarray  # (input_size, units)
    bias: np.ndarray | None
    activation: str = "linear"

    def __post_init__(self) -> None:
        if self.kernel.shape != (self.input_size, self.units):
            raise IRError(
                f"layer '{self.name}': kernel shape {self.kernel.shape}"
                f" != {(self.input_size, self.units)}"
            )
        if self.bias is not None and self.bias.shape != (self.units,):
            raise IRError(f"layer '{self.name}': bias shape {self.bias.shape} != {(self.units,)}")
        if self.activation not in DENSE_ACTIVATIONS:
            raise IRError(
                f"layer '{self.name}': activation '{self.activation}' is not supported"
                f" (supported: {', '.join(DENSE_ACTIVATIONS)})"
            )
        _check_finite(self.name, "kernel", self.kernel)
        if self.bias is not None:
            _check_finite(self.name, "bias", self.bias)

    @property
    def params(self) -> int:
        return self.input_size * self.units + (self.units if self.bias is not None else 0)

    @property
    def output_size(self) -> int:
        return self.units

    @property
    def bias_or_zeros(self) -> np.ndarray:
        return self.bias if self.bias is not None else np.zeros(self.units)


Layer = LSTMLayer | DenseLayer


class LayerStack:
    """Queries shared by the float and the integer model: LSTM layers, then Dense layers."""

    layers: tuple

    @property
    def lstm_layers(self) -> list:
        return [la for la in self.layers if la.kind == "lstm"]

    @property
    def dense_layers(self) -> list:
        return [la for la in self.layers if la.kind == "dense"]

    @property
    def return_sequences(self) -> bool:
        return self.lstm_layers[-1].return_sequences

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size


@dataclass(frozen=True)
class Model(LayerStack):
    """Input((timesteps, input_size)) -> LSTM+ -> Dense*; timesteps is None for any length."""

    name: str
    input_size: int
    timesteps: int | None
    layers: tuple[Layer, ...]
    source: str = "<in-memory model>"
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layers or not isinstance(self.layers[0], LSTMLayer):
            raise IRError(f"{self.source}: the first layer after Input must be an LSTM")
        size = self.input_size
        seen_dense = False
        for index, layer in enumerate(self.layers):
            if layer.input_size != size:
                raise IRError(f"layer '{layer.name}': input size {layer.input_size} != {size}")
            if isinstance(layer, LSTMLayer):
                if seen_dense:
                    raise IRError(
                        f"layer '{layer.name}': an LSTM after a Dense layer is not supported"
                    )
                if not layer.return_sequences and index + 1 < len(self.lstm_layers):
                    raise IRError(f"layer '{layer.name}': a stacked LSTM must return sequences")
            else:
                seen_dense = True
            size = layer.output_size

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)
