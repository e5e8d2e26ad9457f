"""Keras Conv1D -> ``kinds.conv1d.Conv1DLayer``."""

from __future__ import annotations

import numpy as np

from lstm_embed.frontends.keras.layers.options import require_options, single
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds import window as geometry
from lstm_embed.kinds.base import IRError, Unsupported
from lstm_embed.kinds.conv1d import CONV_ACTIVATIONS, Conv1DLayer


def read(spec: LayerSpec, input_size: int) -> Conv1DLayer:
    config = dict(spec.config)
    for key in ("kernel_size", "strides", "dilation_rate"):
        if key in config:
            config[key] = single(config[key])
    kernel_size = config.get("kernel_size")
    reasons = require_options(
        config,
        {
            "activation": (CONV_ACTIVATIONS, "linear"),
            "data_format": (("channels_last",), "channels_last"),
            "groups": ((1,), 1),
            "padding": (tuple(geometry.PADDINGS), "valid"),
        },
    )
    padding = config.get("padding", "valid")
    strides = config.get("strides", 1)
    if not isinstance(strides, int) or strides < 1:
        reasons.append(f"strides={strides!r} is not supported (supported: >= 1)")
    dilation = config.get("dilation_rate", 1)
    if not isinstance(kernel_size, int) or kernel_size < 1:
        reasons.append(f"kernel_size={kernel_size!r} is not supported (supported: >= 1)")
    if not isinstance(dilation, int) or dilation < 1:
        reasons.append(f"dilation_rate={dilation!r} is not supported (supported: >= 1)")
    if reasons:
        raise Unsupported(reasons)
    use_bias = bool(config.get("use_bias", True))
    weights = [np.asarray(w, np.float64) for w in spec.weights]
    if len(weights) != (2 if use_bias else 1):
        raise IRError(
            f"layer '{spec.name}': {len(weights)} weight arrays in the file; a Conv1D with"
            f" use_bias={use_bias} has {2 if use_bias else 1}"
        )
    return Conv1DLayer(
        name=spec.name,
        input_size=input_size,
        filters=int(config["filters"]),
        kernel_size=kernel_size,
        dilation=dilation,
        kernel=weights[0],
        bias=weights[1] if use_bias else None,
        activation=config.get("activation", "linear"),
        padding=padding,
        strides=strides,
    )
