"""Keras BatchNormalization (its inference statistics) -> ``kinds.batch_norm.BatchNormLayer``."""

from __future__ import annotations

import numpy as np

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import IRError, Unsupported
from lstm_embed.kinds.batch_norm import BatchNormLayer

LAST_AXIS = (-1, 1, 2)  # Keras 3 writes -1; Keras 2 the axis number (1 after an LSTM vector)


def last_axis(config: dict) -> object:
    """The config's axis, a 1-list unwrapped (Keras 2 writes [axis])."""
    axis = config.get("axis", -1)
    return axis[0] if isinstance(axis, list) and len(axis) == 1 else axis


def read_frames(
    spec: LayerSpec, input_size: int, timesteps: int | None, frame: tuple[int, int] | None
) -> BatchNormLayer:
    """On (T, F, C) frames (carried as F * C features, row-major): Keras normalizes the
    channel axis, so each channel's statistics repeat over the F rows."""
    if frame is None:
        return read(spec, input_size)
    if last_axis(spec.config) not in (-1, 3):
        raise Unsupported(
            [f"axis={spec.config.get('axis')!r} on (timesteps, rows, channels) frames is not"
             " supported (supported: -1, the channels)"]
        )  # fmt: skip
    layer = read(spec, frame[1])
    rows = frame[0]
    return BatchNormLayer(
        layer.name, input_size, *(np.tile(v, rows) for v in (layer.gamma, layer.beta,
        layer.moving_mean, layer.moving_variance)), layer.epsilon,
    )  # fmt: skip


def read(spec: LayerSpec, input_size: int) -> BatchNormLayer:
    config = spec.config
    if last_axis(config) not in LAST_AXIS:
        raise Unsupported([f"axis={config.get('axis')!r} is not supported (supported: the last)"])
    weights = [np.asarray(w, np.float64) for w in spec.weights]
    scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
    if len(weights) != scale + center + 2:
        raise IRError(
            f"layer '{spec.name}': {len(weights)} weight arrays, expected {scale + center + 2}"
        )
    gamma = weights.pop(0) if scale else np.ones(input_size)
    beta = weights.pop(0) if center else np.zeros(input_size)
    mean, variance = weights
    epsilon = float(config.get("epsilon", 1e-3))
    return BatchNormLayer(spec.name, input_size, gamma, beta, mean, variance, epsilon)
