"""Keras layers that do nothing at inference: read, then left out of the model."""

from __future__ import annotations

from lstm_embed.frontends.keras.spec import LayerSpec

# Keras classes that are the identity when the model predicts (training-time noise and dropout)
IDENTITY_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)


def read(spec: LayerSpec, input_size: int) -> None:
    return None
