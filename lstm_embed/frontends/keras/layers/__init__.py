"""Keras readers of layer kinds, one module per kind: ``read(spec, input_size)`` turns a
LayerSpec into the kind's float layer or raises ``Unsupported`` naming every option it cannot
take. ``READERS`` maps a Keras class name to its reader."""

from __future__ import annotations

from collections.abc import Callable

from lstm_embed.frontends.keras.layers import (
    depthwise,
    normalization,
    permute,
    rescaling,
    rnn,
    time_axis,
)
from lstm_embed.kinds.base import FloatLayer

Reader = Callable[..., FloatLayer | None]
# Readers that take the timesteps of their input as a third argument
TIMESTEP_CLASSES = ("Permute",)

READERS: dict[str, Reader] = {
    "Normalization": normalization.read,
    "Rescaling": rescaling.read,
    "RNN": rnn.read,
    "DepthwiseConv1D": depthwise.read_depthwise,
    "SeparableConv1D": depthwise.read_separable,
    **{name: time_axis.read for name in time_axis.CLASSES},
    "Permute": permute.read,  # takes the timesteps too (TIMESTEP_READERS)
}
