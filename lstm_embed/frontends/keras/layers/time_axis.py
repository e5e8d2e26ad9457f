"""Keras' UpSampling1D, ZeroPadding1D and Cropping1D, read as ``kinds.time_axis`` layers."""

from __future__ import annotations

from typing import Any

from lstm_embed.frontends.keras.layers.options import require_options
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import Unsupported
from lstm_embed.kinds.time_axis import TimeAxisLayer

CLASSES = {"UpSampling1D": "upsample", "ZeroPadding1D": "pad", "Cropping1D": "crop"}
MAX_STEPS = 65535  # padding, cropping or repeats beyond any window an MCU holds


def _pair(value: Any, key: str) -> tuple[int, int]:
    """An int (both sides) or a pair (before, after), as Keras takes them."""
    pair = (value, value) if isinstance(value, int) else value
    if (
        not isinstance(pair, list | tuple)
        or len(pair) != 2
        or not all(isinstance(v, int) and 0 <= v <= MAX_STEPS for v in pair)
    ):
        raise Unsupported([f"{key}={value!r} is not supported (supported: n or (before, after),"
                           f" 0 to {MAX_STEPS})"])  # fmt: skip
    return int(pair[0]), int(pair[1])


def read(spec: LayerSpec, input_size: int) -> TimeAxisLayer:
    config, cls = spec.config, spec.class_name
    mode = CLASSES[cls]
    reasons = require_options(config, {"data_format": (("channels_last",), "channels_last")})
    if reasons:
        raise Unsupported(reasons)
    if mode == "upsample":
        size = config.get("size", 2)
        if not isinstance(size, int) or not 1 <= size <= MAX_STEPS:
            raise Unsupported([f"size={size!r} is not supported (supported: 1 to {MAX_STEPS})"])
        return TimeAxisLayer(spec.name, input_size, mode, cls, size=size)
    key = "padding" if mode == "pad" else "cropping"
    before, after = _pair(config.get(key, 1), key)
    return TimeAxisLayer(spec.name, input_size, mode, cls, before=before, after=after)
