"""Keras' Permute: (2, 1) on a (timesteps, features) window, read as ``kinds.permute``."""

from __future__ import annotations

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import Unsupported
from lstm_embed.kinds.permute import PermuteLayer


def read(spec: LayerSpec, input_size: int, timesteps: int | None = None) -> PermuteLayer:
    dims = spec.config.get("dims")
    if list(dims or []) != [2, 1]:
        raise Unsupported([f"dims={dims!r} is not supported (supported: (2, 1))"])
    if timesteps is None:
        raise Unsupported(["Permute needs a fixed number of timesteps (Input((T, m)))"])
    return PermuteLayer(spec.name, input_size, timesteps)
