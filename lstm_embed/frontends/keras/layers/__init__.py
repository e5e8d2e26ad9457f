"""Keras layers -> layer kinds: one reader module per kind, registered here by Keras class name.

A reader is ``read(spec: LayerSpec, input_size: int)`` returning the kind's float layer (None
for a layer that is the identity at inference) or raising ``Unsupported`` with every reason.
Adding a Keras layer: a module here with its ``read`` and one line in ``READERS``.
"""

from __future__ import annotations

from collections.abc import Callable

from lstm_embed.frontends.keras.layers import (
    activation,
    batch_norm,
    bidirectional,
    conv1d,
    conv1d_transpose,
    conv2d,
    dense,
    depthwise,
    embedding,
    gru,
    identity,
    layer_norm,
    lstm,
    masking,
    normalization,
    permute,
    pooling,
    rescaling,
    reshape,
    rnn,
    simple_rnn,
    time_axis,
    time_distributed,
)
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import FloatLayer, Unsupported

Reader = Callable[[LayerSpec, int], FloatLayer | None]


def _wrapper(read: Callable[[LayerSpec, int, Reader], FloatLayer | None]) -> Reader:
    """A wrapper's reader, reading its inner layers through ``read_layer`` (passed in at call
    time, so that the wrapper modules need not import this registry)."""
    return lambda spec, input_size: read(spec, input_size, read_layer)


READERS: dict[str, Reader] = {
    "LSTM": lstm.read,
    "GRU": gru.read,
    "SimpleRNN": simple_rnn.read,
    "Bidirectional": _wrapper(bidirectional.read),
    "Dense": dense.read,
    "TimeDistributed": _wrapper(time_distributed.read),
    "BatchNormalization": batch_norm.read,
    "LayerNormalization": layer_norm.read,
    **{name: activation.read for name in activation.CLASSES},
    "Conv1D": conv1d.read,
    "Conv1DTranspose": conv1d_transpose.read,
    "Masking": masking.read,
    **{name: pooling.read for name in pooling.MODES},
    **{name: reshape.read for name in reshape.CLASSES},
    **{name: identity.read for name in identity.IDENTITY_CLASSES},
    "Normalization": normalization.read,
    "Rescaling": rescaling.read,
    "RNN": rnn.read,
    "DepthwiseConv1D": depthwise.read_depthwise,
    "SeparableConv1D": depthwise.read_separable,
    **{name: time_axis.read for name in time_axis.CLASSES},
    "Permute": permute.read,  # takes the timesteps too (TIMESTEP_READERS)
    "Embedding": embedding.read,
    **{name: conv2d.read for name in conv2d.CLASSES},  # take the frame too (FRAME_READERS)
}

# Readers that need the timesteps of their input (Flatten, Reshape: their output size; Permute)
TIMESTEP_READERS = {
    **{name: reshape.read for name in reshape.CLASSES},
    "Permute": permute.read,
}

# Readers of layers over (T, F, C) inputs: they take the timesteps and the (F, C) frame
FRAME_READERS = {
    **{name: conv2d.read for name in conv2d.CLASSES},
    "Reshape": conv2d.read_reshape,
    "BatchNormalization": batch_norm.read_frames,
    **{name: activation.read_frames for name in activation.CLASSES},
}
frame_after = conv2d.frame_after  # the frame after a layer read as nothing
# the layers that may take a (T, F, C) input (the others would read its last axis only)
FRAME_INPUT = (*conv2d.CLASSES, "Flatten", "Reshape", *identity.IDENTITY_CLASSES)

SUPPORTED = ", ".join(["InputLayer", *READERS])
# what to do about a layer lstm-embed does not read (not: turn Keras' safe mode off; lstm-embed
# never runs code from a file)
UNSUPPORTED_HINT = "rebuild the model from the supported layers, or file an issue asking for it"


def check_class(spec: LayerSpec) -> Reader:
    """The reader of the layer's class; Unsupported naming the type when lstm-embed has none
    (this needs no input size, so it is said even after an unsupported layer)."""
    if spec.class_name == "Lambda":
        reason = (
            "Lambda layers hold Python code, which lstm-embed never runs; rebuild the model"
            " with built-in Keras layers"
        )
        raise Unsupported([reason])
    if spec.registered_name or not spec.module.startswith("keras"):
        reason = (
            f"custom class '{spec.registered_name or spec.class_name}' (module"
            f" '{spec.module}') is not a built-in Keras layer; lstm-embed reads only built-in"
            f" layers ({SUPPORTED}); {UNSUPPORTED_HINT}"
        )
        raise Unsupported([reason])
    reader = READERS.get(spec.class_name)
    if reader is None:
        reason = f"type {spec.class_name} is not supported (supported: {SUPPORTED})"
        raise Unsupported([f"{reason}; {UNSUPPORTED_HINT}"])
    return reader


def read_layer(
    spec: LayerSpec,
    input_size: int,
    timesteps: int | None = None,
    frame: tuple[int, int] | None = None,
) -> FloatLayer | None:
    """LayerSpec -> float layer (None for identities); Unsupported lists every reason.
    ``timesteps``: of the layer's input, None when any length; ``frame``: (rows, channels) of
    each of its timesteps when the input is (T, F, C) (carried as F * C features)."""
    reader = check_class(spec)
    if spec.class_name in FRAME_READERS:
        return FRAME_READERS[spec.class_name](spec, input_size, timesteps, frame)
    if frame is not None and spec.class_name not in FRAME_INPUT:
        raise Unsupported(
            [f"{spec.class_name} on a (timesteps, {frame[0]}, {frame[1]}) input is not supported"
             f" (supported there: {', '.join(FRAME_INPUT[:7])}; Reshape((T, F * C)) or Flatten"
             " before other layers)"]
        )  # fmt: skip
    if spec.class_name in TIMESTEP_READERS:
        return TIMESTEP_READERS[spec.class_name](spec, input_size, timesteps)
    return reader(spec, input_size)


__all__ = [
    "FRAME_INPUT",
    "FRAME_READERS",
    "READERS",
    "SUPPORTED",
    "TIMESTEP_READERS",
    "UNSUPPORTED_HINT",
    "check_class",
    "frame_after",
    "read_layer",
]
