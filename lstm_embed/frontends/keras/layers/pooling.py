"""Keras MaxPooling1D, AveragePooling1D and their Global forms -> ``kinds.pooling.PoolingLayer``."""

from __future__ import annotations

from typing import Any

from lstm_embed.frontends.keras.layers.options import require_options, single
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import Unsupported
from lstm_embed.kinds.pooling import MAX_POOL, PoolingLayer

MODES = {
    "MaxPooling1D": "max",
    "AveragePooling1D": "average",
    "GlobalMaxPooling1D": "max",
    "GlobalAveragePooling1D": "average",
}


def read(spec: LayerSpec, input_size: int) -> PoolingLayer:
    config, cls = spec.config, spec.class_name
    rules: dict[str, tuple[tuple, Any]] = {"data_format": (("channels_last",), "channels_last")}
    if cls.startswith("Global"):
        rules["keepdims"] = ((False,), False)
        reasons = require_options(config, rules)
        if reasons:
            raise Unsupported(reasons)
        return PoolingLayer(spec.name, input_size, MODES[cls], cls, whole=True)
    rules["padding"] = (("valid", "same"), "valid")
    reasons = require_options(config, rules)
    pool = single(config.get("pool_size", 2))
    strides = single(config.get("strides")) or pool  # Keras: strides None means pool_size
    for key, value in (("pool_size", pool), ("strides", strides)):
        if not isinstance(value, int) or not 1 <= value <= MAX_POOL:
            reasons.append(f"{key}={value!r} is not supported (supported: 1 to {MAX_POOL})")
    if reasons:
        raise Unsupported(reasons)
    padding = config.get("padding", "valid")
    return PoolingLayer(spec.name, input_size, MODES[cls], cls, pool, strides, padding)
