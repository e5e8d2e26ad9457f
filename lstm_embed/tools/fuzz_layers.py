"""The fuzzer's layer draws shared by ``fuzz`` (the recurrent core and its Dense head) and
``fuzz_around`` (the layers around it): weight kinds and one recurrent layer of a spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_embed.kinds.common import RecurrentOptions
from lstm_embed.kinds.gru import GRULayer
from lstm_embed.kinds.lstm import LSTMLayer
from lstm_embed.kinds.simple_rnn import SimpleRNNLayer

# relu/linear SimpleRNN draws: recurrent kernels scaled to at most this spectral norm, so the
# state stays bounded and the converter can hold it (diverging states are refused by design,
# tested on their own)
RNN_CONTRACTION = 0.9
WEIGHT_KINDS = ("normal", "zeros", "huge", "tiny", "equal", "spiky")
HUGE, TINY = 1e4, 1e-8


@dataclass(frozen=True)
class LSTMSpec:
    """One recurrent layer (an LSTM unless ``kind`` says otherwise)."""

    units: int
    recurrent_activation: str = "sigmoid"
    weights: str = "normal"
    bias: str | None = "normal"  # a weight kind, or None for use_bias=False
    kind: str = "lstm"  # or "simple_rnn", "gru"
    activation: str = "tanh"  # tanh, relu or linear (the state's: SimpleRNN's, LSTM's, GRU's)
    go_backwards: bool = False
    stateful: bool = False
    bidirectional: str | None = None  # a merge mode: the layer wrapped in Bidirectional
    reset_after: bool = True  # GRU: Keras' default form, or reset_after=False


def weights(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "huge":
        return rng.uniform(-1, 1, shape) * HUGE
    if kind == "tiny":
        return rng.uniform(-1, 1, shape) * TINY
    if kind == "equal":
        return np.full(shape, rng.choice([HUGE, -HUGE, 0.5, -1.0, TINY]))
    scale = 10 ** rng.uniform(-2, 0.5)
    values = rng.uniform(-1, 1, shape) * scale
    if kind == "spiky" and values.size:
        spikes = rng.integers(0, values.size, max(1, values.size // 50))
        values.flat[spikes] = rng.choice([HUGE, -HUGE], spikes.size)
    elif kind != "normal":
        raise ValueError(f"unknown weight kind {kind!r}")
    return values


def _contracting(la: LSTMSpec, recurrent: np.ndarray) -> np.ndarray:
    """A relu/linear layer's recurrent kernel scaled to at most RNN_CONTRACTION (spectral
    norm), so that its state stays bounded and the converter can hold it; tanh ones as drawn."""
    if la.activation == "tanh":
        return recurrent
    norm = float(np.linalg.norm(recurrent, 2))
    return recurrent * (RNN_CONTRACTION / norm) if norm > RNN_CONTRACTION else recurrent


def recurrent_layer(
    rng: np.random.Generator, la: LSTMSpec, name: str, size: int, sequences: bool
) -> Any:
    """One recurrent layer of the spec's kind, go_backwards and stateful applied (inside a
    Bidirectional: go_backwards of its forward layer only, stateful not)."""
    n = la.units
    if la.kind == "simple_rnn":
        recurrent = _contracting(la, weights(rng, la.weights, (n, n)))
        layer: Any = SimpleRNNLayer(
            name,
            size,
            n,
            weights(rng, la.weights, (size, n)),
            recurrent,
            weights(rng, la.bias, (n,)) if la.bias else None,
            la.activation,
            sequences,
        )
    elif la.kind == "gru":
        bias_shape = (2, 3 * n) if la.reset_after else (3 * n,)
        bias = weights(rng, la.bias, bias_shape) if la.bias else None
        layer = GRULayer(
            name=name,
            input_size=size,
            units=n,
            kernel=weights(rng, la.weights, (size, 3 * n)),
            recurrent_kernel=_contracting(la, weights(rng, la.weights, (n, 3 * n))),
            bias=bias,
            reset_after=la.reset_after,
            recurrent_activation=la.recurrent_activation,
            return_sequences=sequences,
            activation=la.activation,
        )
    else:
        bias = weights(rng, la.bias, (4 * n,)) if la.bias else None  # drawn first, as ever
        layer = LSTMLayer(
            name=name,
            input_size=size,
            units=n,
            kernel=weights(rng, la.weights, (size, 4 * n)),
            recurrent_kernel=_contracting(la, weights(rng, la.weights, (n, 4 * n))),
            bias=bias,
            recurrent_activation=la.recurrent_activation,
            return_sequences=sequences,
            activation=la.activation,
        )
    stateful = la.stateful and not la.bidirectional
    if la.go_backwards or stateful:
        layer = RecurrentOptions(layer, la.go_backwards, stateful)
    return layer
