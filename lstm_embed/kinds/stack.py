"""Several recurrent layers that the file holds as one layer (Keras' RNN(StackedRNNCells([...]))):
read as one entry (inspect shows one row), then expanded into its layers before anything else
runs (``expand``, the first chain rewrite), so every later stage sees the plain layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds.base import FloatLayer, IRError, LayerTrace


@dataclass(frozen=True, eq=False)
class StackedLayers(FloatLayer):
    """``layers`` in order, each feeding the next (their sizes checked)."""

    kind: ClassVar[str] = "stack"
    recurrent: ClassVar[bool] = True
    name: str
    input_size: int
    layers: tuple[Any, ...]
    type_name: str = "RNN"

    def __post_init__(self) -> None:
        size = self.input_size
        for layer in self.layers:
            if layer.input_size != size:
                raise IRError(
                    f"layer '{self.name}': '{layer.name}' takes {layer.input_size} inputs,"
                    f" the layer before it gives {size}"
                )
            size = layer.output_size

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def return_sequences(self) -> bool:
        return bool(self.layers[-1].return_sequences)

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        return all(layer.streaming for layer in self.layers)

    def forward(self, x: np.ndarray) -> LayerTrace:
        trace = LayerTrace(x)
        for layer in self.layers:
            trace = layer.forward(x)
            x = layer.chain_output(trace)
        return trace

    def chain_output(self, trace: LayerTrace) -> np.ndarray:
        return self.layers[-1].chain_output(trace)

    def summary(self) -> dict[str, Any]:
        rows = [layer.summary() for layer in self.layers]
        return {
            "type": self.type_name,
            "activation": rows[-1].get("activation"),
            "units": rows[-1].get("units"),
            "params_formula": " + ".join(f"({r['params_formula']})" for r in rows),
        }

    def flash_bytes(self, bits: int) -> int:
        return sum(layer.flash_bytes(bits) for layer in self.layers)


@dataclass(frozen=True, eq=False)
class ComposedLayers(StackedLayers):
    """A layer the file holds as one that converts as several kinds in a row (Keras'
    Conv1DTranspose: zeros between and around the timesteps, then a valid Conv1D); not
    recurrent, its sequence is the last layer's."""

    recurrent: ClassVar[bool] = False

    @property
    def return_sequences(self) -> bool:
        return True

    @property
    def keeps_timesteps(self) -> bool:
        return all(layer.keeps_timesteps for layer in self.layers)

    @property
    def whole_window_reason(self) -> str:
        return next((la.whole_window_reason for la in self.layers if not la.streaming), "")

    def output_timesteps(self, steps: int | None) -> int | None:
        for layer in self.layers:
            steps = layer.output_timesteps(steps)
        return steps

    @property
    def exact_timesteps(self) -> bool:
        return any(layer.exact_timesteps for layer in self.layers)

    def summary(self) -> dict[str, Any]:
        row = self.layers[-1].summary()
        return {**super().summary(), "type": self.type_name, "units": row.get("units")}


def expand(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    """The chain with every stack replaced by its layers."""
    out: list[FloatLayer] = []
    for layer in layers:
        out.extend(layer.layers if isinstance(layer, StackedLayers) else [layer])
    return out, []
