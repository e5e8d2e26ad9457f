"""Float IR: a chain of layers read out of a Keras model, before any quantization.

The layer kinds (``lstm_embed.layers``) hold their own dataclasses; this module holds the chain
with its declared shapes and the queries every stage shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .layers import DenseLayer, FloatLayer, IRError, LSTMLayer
from .layers.dense import DENSE_ACTIVATIONS
from .layers.lstm import GATES, RECURRENT_ACTIVATIONS

Layer = FloatLayer

__all__ = [
    "DENSE_ACTIVATIONS",
    "GATES",
    "RECURRENT_ACTIVATIONS",
    "DenseLayer",
    "IRError",
    "LSTMLayer",
    "Layer",
    "LayerStack",
    "Model",
]


class LayerStack:
    """Chain queries shared by the float and the integer model."""

    layers: tuple

    @property
    def recurrent_layers(self) -> list:
        return [la for la in self.layers if la.recurrent]

    @property
    def lstm_layers(self) -> list:
        return [la for la in self.layers if la.kind == "lstm"]

    @property
    def dense_layers(self) -> list:
        return [la for la in self.layers if la.kind == "dense"]

    @property
    def head_start(self) -> int:
        """Index of the first layer after the last one with per-step state (recurrent layers,
        and e.g. a causal Conv1D holding its last inputs: ``per_step_state``): the head, which
        runs only when an output is due (every step if the model returns sequences, else the
        last)."""
        stateful = [
            i
            for i, la in enumerate(self.layers)
            if la.recurrent or getattr(la, "per_step_state", False)
        ]
        return stateful[-1] + 1 if stateful else 0

    @property
    def return_sequences(self) -> bool:
        """The output has a timestep axis (no layer turned the sequence into one vector)."""
        return all(la.return_sequences for la in self.recurrent_layers)

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size


def sequence_kept(layers: tuple, index: int) -> bool:
    """Whether the output of layer ``index`` still has a timestep axis."""
    return all(la.return_sequences for la in layers[: index + 1] if la.recurrent)


@dataclass(frozen=True)
class Model(LayerStack):
    """Input((timesteps, input_size)) -> a chain of layers; timesteps None for any length."""

    name: str
    input_size: int
    timesteps: int | None
    layers: tuple[FloatLayer, ...]
    source: str = "<in-memory model>"
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.recurrent_layers:
            raise IRError(f"{self.source}: the model has no recurrent layer (supported: LSTM)")
        size = self.input_size
        for index, layer in enumerate(self.layers):
            if layer.input_size != size:
                raise IRError(f"layer '{layer.name}': input size {layer.input_size} != {size}")
            if layer.recurrent and not sequence_kept(self.layers, index - 1):
                raise IRError(
                    f"layer '{layer.name}': its input has no timesteps (the recurrent layer"
                    " before it must return sequences)"
                )
            size = layer.output_size

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)
