"""Keras SimpleRNN -> ``kinds.simple_rnn.SimpleRNNLayer``."""

from __future__ import annotations

from typing import Any

from lstm_embed.frontends.keras.layers.options import read_recurrent
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.simple_rnn import ACTIVATIONS, SimpleRNNLayer


def read(spec: LayerSpec, input_size: int) -> Any:
    rules = {"activation": (ACTIVATIONS, "tanh")}
    activation = spec.config.get("activation", "tanh")
    return read_recurrent(spec, input_size, SimpleRNNLayer, rules, activation=activation)
