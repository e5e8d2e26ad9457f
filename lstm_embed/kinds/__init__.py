"""Layer kinds, one module each; ``READERS`` maps a Keras class name to its reader.

Adding a kind: a module here with ``read(spec, input_size)`` returning a float layer (see
``base.FloatLayer``) whose ``quantize`` returns a quantized layer (``base.QLayer``), a template
``templates/layers/<kind>.c.j2`` and one line in ``READERS`` (docs/adding-a-layer-kind.md).
"""

from __future__ import annotations

from collections.abc import Callable

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds import (
    activation,
    batch_norm,
    bidirectional,
    conv1d,
    dense,
    feature_affine,
    gru,
    identity,
    layer_norm,
    lstm,
    masking,
    permute,
    pooling,
    reshape,
    simple_rnn,
    stack,
    time_axis,
    time_distributed,
)
from lstm_embed.kinds.base import FloatLayer, IRError, QLayer, QuantizeError, Unsupported
from lstm_embed.kinds.bidirectional import QBidirectionalLayer
from lstm_embed.kinds.common import QRecurrentOptions
from lstm_embed.kinds.dense import DenseLayer, QDenseLayer
from lstm_embed.kinds.gru import GRULayer, QGRULayer
from lstm_embed.kinds.lstm import LSTMLayer, QLSTMLayer
from lstm_embed.kinds.simple_rnn import QSimpleRNNLayer

# the quantized layers of the kinds around the recurrent core
AROUND_CORE_QLAYERS = (
    activation.QActivationLayer,
    batch_norm.QAffineLayer,
    layer_norm.QLayerNormLayer,
    conv1d.QConv1DLayer,
    conv1d.QConv1DWindowLayer,
    masking.QMaskingLayer,
    pooling.QPoolingLayer,
    reshape.QReshapeLayer,
    time_axis.QTimeAxisLayer,
    permute.QPermuteLayer,
)

# SimpleRNN, Bidirectional, and go_backwards / stateful around any recurrent kind
RECURRENT_FAMILY_QLAYERS = (QSimpleRNNLayer, QBidirectionalLayer, QRecurrentOptions)

Reader = Callable[[LayerSpec, int], FloatLayer | None]


def _keras_layer_readers() -> dict[str, Reader]:
    from lstm_embed.frontends.keras.layers import READERS as KERAS_LAYER_READERS

    return dict(KERAS_LAYER_READERS)


READERS: dict[str, Reader] = {
    "LSTM": lstm.read,
    "GRU": gru.read,
    "SimpleRNN": simple_rnn.read,
    "Bidirectional": bidirectional.read,
    "Dense": dense.read,
    "TimeDistributed": time_distributed.read,
    "BatchNormalization": batch_norm.read,
    "LayerNormalization": layer_norm.read,
    "Activation": activation.read,
    "ReLU": activation.read,
    "LeakyReLU": activation.read,
    "Softmax": activation.read,
    "Conv1D": conv1d.read,
    "Masking": masking.read,
    **{name: pooling.read for name in pooling.MODES},
    **{name: reshape.read for name in reshape.KINDS},
    **{name: identity.read for name in identity.IDENTITY_CLASSES},
    # kinds whose Keras reading lives in frontends/keras/layers (added there, listed here too)
    **_keras_layer_readers(),
}

# Quantized layer types by class name, for reading an integer model back from disk
QLAYER_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (QLSTMLayer, QGRULayer, QDenseLayer, *AROUND_CORE_QLAYERS, *RECURRENT_FAMILY_QLAYERS)
}

SUPPORTED = ", ".join(["InputLayer", *READERS])
# what to do about a layer lstm-embed does not read (not: turn Keras' safe mode off; lstm-embed
# never runs code from a file)
UNSUPPORTED_HINT = "rebuild the model from the supported layers, or file an issue asking for it"

# Chain rewrites that are exact in float (a layer absorbed by its neighbour); each returns the
# new chain and a reason for every layer it could not place
FOLDS: list[Callable[[list[FloatLayer]], tuple[list[FloatLayer], list[str]]]] = [
    stack.expand,
    feature_affine.fold,
    batch_norm.fold,
    activation.fold,
    masking.check_chain,
]


def fold_chain(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    problems: list[str] = []
    for rewrite in FOLDS:
        layers, found = rewrite(layers)
        problems += found
    return layers, problems


# Readers that need the timesteps of their input (Flatten, Reshape, Permute: their output size)
TIMESTEP_READERS = (*reshape.KINDS, "Permute")


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


def read_layer(spec: LayerSpec, input_size: int, timesteps: int | None = None) -> FloatLayer | None:
    """LayerSpec -> float layer (None for identities); Unsupported lists every reason.
    ``timesteps``: of the layer's input, None when any length."""
    reader = check_class(spec)
    if spec.class_name in TIMESTEP_READERS:
        return reader(spec, input_size, timesteps)
    return reader(spec, input_size)


__all__ = [
    "QLAYER_TYPES",
    "READERS",
    "SUPPORTED",
    "DenseLayer",
    "FloatLayer",
    "GRULayer",
    "IRError",
    "LSTMLayer",
    "QDenseLayer",
    "QGRULayer",
    "QLSTMLayer",
    "QLayer",
    "QuantizeError",
    "Unsupported",
    "check_class",
    "fold_chain",
    "read_layer",
]
