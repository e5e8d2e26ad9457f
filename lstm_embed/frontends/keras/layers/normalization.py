"""Keras' Normalization: (x - mean) / max(sqrt(variance), epsilon) per feature, read as the
per-feature affine of ``kinds.feature_affine``.

The statistics come from ``adapt()`` (the weights: mean, variance and an integer sample count,
which inference ignores) or from the config's ``mean`` and ``variance`` (then no weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import IRError, Unsupported
from lstm_embed.kinds.feature_affine import FeatureAffineLayer

# Keras' backend.epsilon() (keras.config.epsilon()), which the file does not record
KERAS_EPSILON = 1e-7
FEATURE_AXES = (-1, 2)  # the last axis of (batch, timesteps, features)


def _axis(value: Any) -> Any:
    if isinstance(value, list | tuple) and len(value) == 1:
        return value[0]
    return value


def per_feature(layer: str, what: str, value: Any, size: int) -> np.ndarray:
    """A config or weight value (a number, or any nesting of size numbers) as (size,) floats."""
    try:
        array = np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise IRError(f"layer '{layer}': {what} is not a number or a list of numbers") from error
    if array.size == 1:
        return np.full(size, float(array[0]))
    if array.size != size:
        raise IRError(f"layer '{layer}': {what} has {array.size} values for {size} features")
    return array


def read(spec: LayerSpec, input_size: int) -> FeatureAffineLayer:
    config = spec.config
    reasons = []
    if _axis(config.get("axis", -1)) not in FEATURE_AXES:
        reasons.append(
            f"axis={config.get('axis')!r} is not supported (supported: -1, the features)"
        )
    if config.get("invert", False):
        reasons.append("invert=True is not supported (supported: False)")
    if reasons:
        raise Unsupported(reasons)
    weights = spec.weights
    if config.get("mean") is not None and config.get("variance") is not None:
        mean, variance = config["mean"], config["variance"]
    elif len(weights) in (2, 3):  # adapted: mean, variance (and the sample count)
        mean, variance = weights[0], weights[1]
    else:
        raise IRError(
            f"layer '{spec.name}': neither mean and variance in the config nor adapted"
            f" statistics in the weights ({len(weights)} arrays); adapt() it or give them"
        )
    mean = per_feature(spec.name, "mean", mean, input_size)
    variance = per_feature(spec.name, "variance", variance, input_size)
    scale = 1.0 / np.maximum(np.sqrt(np.maximum(variance, 0.0)), KERAS_EPSILON)
    return FeatureAffineLayer(
        spec.name, input_size, scale, -mean * scale, "Normalization", spec.param_count
    )
