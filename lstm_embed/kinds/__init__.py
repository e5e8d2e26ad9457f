"""Layer kinds, one module each: op, quantization, integer step and C context; no file format.

Adding a kind: a module here with a float layer (``base.FloatLayer``) whose ``quantize`` returns
a quantized layer (``base.QLayer``), its templates, and a reader in each file format's
frontend that maps onto it; docs/adding-a-layer-kind.md.
"""

from __future__ import annotations

from collections.abc import Callable

from lstm_embed.kinds import (
    activation,
    batch_norm,
    conv1d,
    conv2d,
    embedding,
    feature_affine,
    layer_norm,
    masking,
    permute,
    pooling,
    pooling2d,
    reshape,
    stack,
    time_axis,
)
from lstm_embed.kinds.attention import QAttentionLayer
from lstm_embed.kinds.base import FloatLayer, IRError, QLayer, QuantizeError, Unsupported
from lstm_embed.kinds.bidirectional import QBidirectionalLayer
from lstm_embed.kinds.common import QRecurrentOptions
from lstm_embed.kinds.dense import DenseLayer, QDenseLayer
from lstm_embed.kinds.gru import GRULayer, QGRULayer
from lstm_embed.kinds.lstm import LSTMLayer, QLSTMLayer
from lstm_embed.kinds.merge import QMergeLayer
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
    embedding.QEmbeddingLayer,
    conv2d.QConv2DLayer,
    conv2d.QConv2DWindowLayer,
    pooling2d.QPooling2DLayer,
    pooling2d.QPooling2DWindowLayer,
)

# SimpleRNN, Bidirectional, and go_backwards / stateful around any recurrent kind
RECURRENT_FAMILY_QLAYERS = (QSimpleRNNLayer, QBidirectionalLayer, QRecurrentOptions)
SEVERAL_INPUT_QLAYERS = (QMergeLayer, QAttentionLayer)  # graphs only

# Quantized layer types by class name, for reading an integer model back from disk
QLAYER_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (
        QLSTMLayer,
        QGRULayer,
        QDenseLayer,
        *AROUND_CORE_QLAYERS,
        *RECURRENT_FAMILY_QLAYERS,
        *SEVERAL_INPUT_QLAYERS,
    )
}

# Chain rewrites that are exact in float (a layer absorbed by its neighbour); each returns the
# new chain and a reason for every layer it could not place
FOLDS: list[Callable[[list[FloatLayer]], tuple[list[FloatLayer], list[str]]]] = [
    stack.expand,
    feature_affine.fold,
    batch_norm.fold,
    activation.fold,
    masking.check_chain,
    embedding.check_chain,
]


def fold_chain(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    problems: list[str] = []
    for rewrite in FOLDS:
        layers, found = rewrite(layers)
        problems += found
    return layers, problems


__all__ = [
    "QLAYER_TYPES",
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
    "fold_chain",
]
