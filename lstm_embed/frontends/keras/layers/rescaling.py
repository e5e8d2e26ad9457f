"""Keras' Rescaling: x * scale + offset, read as the per-feature affine of
``kinds.feature_affine``."""

from __future__ import annotations

from lstm_embed.frontends.keras.layers.normalization import per_feature
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import Unsupported
from lstm_embed.kinds.feature_affine import FeatureAffineLayer


def read(spec: LayerSpec, input_size: int) -> FeatureAffineLayer:
    config = spec.config
    values = {key: config.get(key, default) for key, default in (("scale", 1.0), ("offset", 0.0))}
    for key, value in values.items():
        if isinstance(value, dict):  # an array Keras serialized as an object
            raise Unsupported(
                [
                    f"{key} given as {value.get('class_name', 'an object')} is not"
                    " supported (supported: a number or a list of numbers)"
                ]
            )
    scale = per_feature(spec.name, "scale", values["scale"], input_size)
    offset = per_feature(spec.name, "offset", values["offset"], input_size)
    return FeatureAffineLayer(spec.name, input_size, scale, offset, "Rescaling", 0)
