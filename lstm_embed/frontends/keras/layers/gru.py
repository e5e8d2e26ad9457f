"""Keras GRU -> ``kinds.gru.GRULayer`` (Keras' layout and gate order z, r, h are the kind's
own; reset_after picks the bias shape)."""

from __future__ import annotations

from typing import Any

from lstm_embed.frontends.keras.layers.options import read_recurrent
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.gru import GRULayer
from lstm_embed.kinds.recurrent import ACCEPTED_RECURRENT_ACTIVATIONS, STATE_ACTIVATIONS


def read(spec: LayerSpec, input_size: int) -> Any:
    rules = {
        "activation": (STATE_ACTIVATIONS, "tanh"),
        "recurrent_activation": (ACCEPTED_RECURRENT_ACTIVATIONS, "sigmoid"),
    }
    config = spec.config
    return read_recurrent(
        spec, input_size, GRULayer, rules,
        reset_after=bool(config.get("reset_after", True)),
        recurrent_activation=config.get("recurrent_activation", "sigmoid"),
        activation=config.get("activation", "tanh"),
    )  # fmt: skip
