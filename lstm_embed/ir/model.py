"""Float IR: a chain of layers read out of a Keras model, before any quantization.

The layer kinds (``lstm_embed.kinds``) hold their own dataclasses; this module holds the chain
with its declared shapes and the queries every stage shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lstm_embed.kinds import DenseLayer, FloatLayer, IRError, LSTMLayer
from lstm_embed.kinds.dense import DENSE_ACTIVATIONS
from lstm_embed.kinds.lstm import GATES, RECURRENT_ACTIVATIONS

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
        stateful = [i for i, la in enumerate(self.layers) if la.recurrent or la.per_step_state]
        return stateful[-1] + 1 if stateful else 0

    @property
    def return_sequences(self) -> bool:
        """The output has a timestep axis (no layer turned the sequence into one vector, or
        one made a sequence of the vector again: ``sequence_out``)."""
        return sequence_kept(self.layers, len(self.layers) - 1)

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    @property
    def stateful(self) -> bool:
        """Keras stateful=True on some layer: run() does not reset that layer's state, so
        consecutive calls (and the rows of one input) continue one stream."""
        return any(la.stateful for la in self.layers)

    @property
    def stateful_layers(self) -> list:
        return [la for la in self.layers if la.stateful]

    @property
    def whole_window_layer(self):  # -> layer | None
        """The first layer that needs the whole window (Bidirectional, go_backwards): with one,
        the model has run() only (no step())."""
        return next((la for la in self.layers if not la.streaming), None)

    @property
    def streaming(self) -> bool:
        return self.whole_window_layer is None

    @property
    def run_only_reason(self) -> str:
        """Why the model has no step(): '' for a streaming model."""
        layer = self.whole_window_layer
        if layer is None:
            return ""
        return f"layer '{layer.name}' needs the whole window ({layer.whole_window_reason})"

    @property
    def leaf_layers(self) -> list:
        """The layers with a trace of their own: a Bidirectional's forward and backward layers
        in its place (``sublayers``), every other layer as it is."""
        return [leaf for la in self.layers for leaf in leaves(la)]


def leaves(layer):  # -> list of layers
    if layer.sublayers is None:
        return [layer]
    return [leaf for inner in layer.sublayers() for leaf in leaves(inner)]


def leaf_traces(layers, traces) -> list:
    """The float traces of ``leaves`` of each layer, in the same order (``subtraces``)."""
    result = []
    for layer, trace in zip(layers, traces, strict=True):
        sub = layer.sublayers
        result += leaf_traces(sub(), layer.subtraces(trace)) if sub is not None else [trace]
    return result


def sequence_out(layer, sequence: bool) -> bool:
    """Whether ``layer``'s output has a timestep axis, given whether its input has: a
    recurrent layer keeps it with return_sequences, another kind unless it pools or flattens
    it away (``keeps_timesteps``); RepeatVector makes one (``makes_timesteps``)."""
    if layer.makes_timesteps:
        return True
    if layer.recurrent:
        return sequence and layer.return_sequences
    return sequence and layer.keeps_timesteps


def sequence_kept(layers: tuple, index: int) -> bool:
    """Whether the output of layer ``index`` still has a timestep axis."""
    sequence = True
    for layer in layers[: index + 1]:
        sequence = sequence_out(layer, sequence)
    return sequence


def timesteps_after(layers: tuple, timesteps: int | None) -> list[int | None]:
    """The timesteps of each layer's output (None: any length), through the layers that change
    them (``output_timesteps``: strided Conv1D, pooling, RepeatVector); 1 after a layer whose
    output has no timestep axis."""
    out, sequence = [], True
    for layer in layers:
        if layer.output_timesteps is not None:
            timesteps = layer.output_timesteps(timesteps)
        sequence = sequence_out(layer, sequence)
        out.append(timesteps if sequence else 1)
        timesteps = timesteps if sequence else 1
    return out


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
            raise IRError(
                f"{self.source}: the model has no recurrent layer"
                " (supported: LSTM, GRU, SimpleRNN, Bidirectional)"
            )
        size = self.input_size
        for index, layer in enumerate(self.layers):
            if layer.input_size != size:
                raise IRError(f"layer '{layer.name}': input size {layer.input_size} != {size}")
            if layer.recurrent and not sequence_kept(self.layers, index - 1):
                raise IRError(
                    f"layer '{layer.name}': its input has no timesteps (the recurrent layer"
                    " before it must return sequences)"
                )
            if layer.needs_vector and sequence_kept(self.layers, index - 1):
                raise IRError(f"layer '{layer.name}': its input must be one vector per sequence")
            size = layer.output_size
        steps = timesteps_after(self.layers, self.timesteps)
        if self.return_sequences and steps[-1] != self.timesteps:
            raise IRError(
                f"{self.source}: the output has {steps[-1]} timesteps, the input"
                f" {self.timesteps}; supported: as many output timesteps as input timesteps,"
                " or one output vector (the runners return one output per input timestep)"
            )
        if self.timesteps is None and not self.streaming:
            raise IRError(
                f"{self.source}: {self.run_only_reason}, which the C holds in buffers sized by"
                " the model's timesteps; the input has none (Input((None, m))): build the model"
                " with Input((T, m))"
            )
        batch = self.meta.get("batch_size")
        if self.stateful and batch not in (None, "", "None", "1"):
            raise IRError(
                f"{self.source}: stateful layers with batch size {batch}: lstm-embed runs one"
                " stream (batch size 1, as Keras' predict(x, batch_size=1)); rebuild the model"
                " with batch_size=1"
            )

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)
