"""Keras Embedding(input_dim, output_dim, mask_zero) -> ``kinds.embedding.EmbeddingLayer``.

It takes the model's integer ids, one per timestep: the frontend reads an input shape
(batch, T) before it as T timesteps of one feature (``frontend._feature_size``).
"""

from __future__ import annotations

import numpy as np

from lstm_embed.frontends.keras.layers.options import require_options
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import IRError, Unsupported
from lstm_embed.kinds.embedding import EmbeddingLayer

RULES = {
    "sparse": ((False,), False),  # Keras 3: sparse gradients, a training option only
    "lora_rank": ((None,), None),
}


def read(spec: LayerSpec, input_size: int) -> EmbeddingLayer:
    config = spec.config
    reasons = require_options(config, RULES)
    if input_size != 1:
        reasons.append(
            f"its input has {input_size} features per timestep; supported: the model's input"
            " of one integer id per timestep (Input((T,)) as the first layer)"
        )
    if reasons:
        raise Unsupported(reasons)
    if len(spec.weights) != 1:
        raise IRError(
            f"layer '{spec.name}': {len(spec.weights)} weight arrays in the file; an Embedding"
            " has 1 (embeddings)"
        )
    table = np.asarray(spec.weights[0], np.float64)
    expected = (int(config.get("input_dim", -1)), int(config.get("output_dim", -1)))
    if table.shape != expected:
        raise IRError(
            f"layer '{spec.name}': embeddings shape {table.shape} != (input_dim, output_dim)"
            f" {expected}"
        )
    return EmbeddingLayer(spec.name, 1, table, bool(config.get("mask_zero", False)))
