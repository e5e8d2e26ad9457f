"""Keras Dense -> ``kinds.dense.DenseLayer``."""

from __future__ import annotations

from lstm_embed.frontends.keras.layers.options import layer_weights, require_options
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import Unsupported
from lstm_embed.kinds.dense import DENSE_ACTIVATIONS, DenseLayer


def read(spec: LayerSpec, input_size: int) -> DenseLayer:
    config = spec.config
    reasons = require_options(config, {"activation": (DENSE_ACTIVATIONS, "linear")})
    if reasons:
        raise Unsupported(reasons)
    (kernel,), bias = layer_weights(spec, "a Dense layer", 1)
    return DenseLayer(
        name=spec.name,
        input_size=input_size,
        units=int(config["units"]),
        kernel=kernel,
        bias=bias,
        activation=config.get("activation", "linear"),
    )
