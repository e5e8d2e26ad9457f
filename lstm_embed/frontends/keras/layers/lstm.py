"""Keras LSTM -> ``kinds.lstm.LSTMLayer`` (Keras' kernel layout and gate order i, f, c, o are
the kind's own, so the weights pass through as they are)."""

from __future__ import annotations

from typing import Any

from lstm_embed.frontends.keras.layers.options import read_recurrent
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.lstm import LSTMLayer
from lstm_embed.kinds.recurrent import ACCEPTED_RECURRENT_ACTIVATIONS, STATE_ACTIVATIONS


def read(spec: LayerSpec, input_size: int) -> Any:
    rules = {
        "activation": (STATE_ACTIVATIONS, "tanh"),
        "recurrent_activation": (ACCEPTED_RECURRENT_ACTIVATIONS, "sigmoid"),
    }
    config = spec.config
    return read_recurrent(
        spec, input_size, LSTMLayer, rules,
        recurrent_activation=config.get("recurrent_activation", "sigmoid"),
        activation=config.get("activation", "tanh"),
    )  # fmt: skip
