"""Keras Flatten, Reshape and RepeatVector -> ``kinds.reshape.ReshapeLayer``. Flatten and
Reshape need the timesteps of their input (``read``'s third argument)."""

from __future__ import annotations

import numpy as np

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import Unsupported
from lstm_embed.kinds.reshape import ReshapeLayer

CLASSES = ("Flatten", "Reshape", "RepeatVector")


def read(spec: LayerSpec, input_size: int, timesteps: int | None = None) -> ReshapeLayer:
    config, cls = spec.config, spec.class_name
    if cls == "RepeatVector":
        n = config.get("n")
        if not isinstance(n, int) or n < 1:
            raise Unsupported([f"n={n!r} is not supported (supported: >= 1)"])
        return ReshapeLayer(spec.name, input_size, "repeat", n, input_size, cls)
    if config.get("data_format", "channels_last") != "channels_last":
        raise Unsupported([f"data_format={config.get('data_format')!r} is not supported"])
    if timesteps is None:
        raise Unsupported([f"{cls} needs a fixed number of timesteps (Input((T, m)))"])
    total = timesteps * input_size
    if cls == "Flatten":
        return ReshapeLayer(spec.name, input_size, "flatten", 1, total, cls, timesteps)
    target = list(config.get("target_shape") or [])
    if len(target) not in (1, 2) or sum(1 for d in target if d == -1) > 1:
        raise Unsupported([f"target_shape={target!r} is not supported (supported: (T', m'),"
                           " or (n,): a regrouping of (timesteps, features))"])  # fmt: skip
    known = int(np.prod([d for d in target if d != -1]))
    if known < 1 or total % known:
        raise Unsupported([f"target_shape={target!r} does not hold {timesteps}x{input_size}"])
    target = [total // known if d == -1 else int(d) for d in target]
    if int(np.prod(target)) != total:
        raise Unsupported([f"target_shape={target!r} does not hold {timesteps}x{input_size}"])
    if len(target) == 1:
        return ReshapeLayer(spec.name, input_size, "flatten", 1, total, cls, timesteps)
    return ReshapeLayer(spec.name, input_size, "reshape", target[0], target[1], cls, timesteps)
