"""Keras readers of layer kinds, one module per kind: ``read(spec, input_size)`` turns a
LayerSpec into the kind's float layer or raises ``Unsupported`` naming every option it cannot
take. ``READERS`` maps a Keras class name to its reader."""

from __future__ import annotations

from collections.abc import Callable

from lstm_embed.frontends.keras.layers import normalization, rescaling, rnn
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import FloatLayer

Reader = Callable[[LayerSpec, int], FloatLayer | None]

READERS: dict[str, Reader] = {
    "Normalization": normalization.read,
    "Rescaling": rescaling.read,
    "RNN": rnn.read,
}
