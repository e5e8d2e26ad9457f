"""Keras Masking(mask_value) -> ``kinds.masking.MaskingLayer``."""

from __future__ import annotations

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import IRError
from lstm_embed.kinds.masking import MaskingLayer


def read(spec: LayerSpec, input_size: int) -> MaskingLayer:
    value = spec.config.get("mask_value", 0.0)
    try:
        mask_value = float(value)
    except (TypeError, ValueError):
        raise IRError(f"layer '{spec.name}': mask_value={value!r} is not a number") from None
    return MaskingLayer(spec.name, input_size, mask_value)
