"""Keras LayerNormalization -> ``kinds.layer_norm.LayerNormLayer``."""

from __future__ import annotations

import numpy as np

from lstm_embed.frontends.keras.layers.batch_norm import LAST_AXIS, last_axis
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import IRError, Unsupported
from lstm_embed.kinds.layer_norm import LayerNormLayer


def read(spec: LayerSpec, input_size: int) -> LayerNormLayer:
    config = spec.config
    reasons = []
    if last_axis(config) not in LAST_AXIS:
        reasons.append(f"axis={config.get('axis')!r} is not supported (supported: the last)")
    if config.get("rms_scaling", False):
        reasons.append("rms_scaling=True is not supported (supported: False)")
    if reasons:
        raise Unsupported(reasons)
    scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
    weights = [np.asarray(w, np.float64) for w in spec.weights]
    if len(weights) != scale + center:
        expected = scale + center
        raise IRError(f"layer '{spec.name}': {len(weights)} weight arrays, expected {expected}")
    gamma = weights.pop(0) if scale else np.ones(input_size)
    beta = weights.pop(0) if center else np.zeros(input_size)
    epsilon = float(config.get("epsilon", 1e-3))
    return LayerNormLayer(spec.name, input_size, gamma, beta, epsilon, scale, center)
