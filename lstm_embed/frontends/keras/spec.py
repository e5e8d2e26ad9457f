"""What the reader hands to the layer kinds: a Keras model file as plain data.

No ML framework is involved: configs come from the file's JSON and weights from its HDF5
datasets. Differences between Keras versions are already normalized (see ``normalize``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ReaderError(ValueError):
    """The file cannot be read; the message names the file (and layer) and what is supported."""


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the chain, as the file describes it.

    ``config`` is the layer's Keras config with version differences normalized (Keras 3 key
    names; no dtype policy objects). ``weights`` are float32 arrays in the order of the layer's
    ``get_weights()``; a wrapper (Bidirectional, TimeDistributed) holds its inner layers'
    weights in that order too, and its inner layer config under ``config["layer"]``.
    """

    name: str
    class_name: str
    config: dict[str, Any]
    weights: tuple[np.ndarray, ...] = ()
    module: str = "keras.layers"  # where the file says the class comes from
    registered_name: str | None = None  # set for custom (registered) classes

    @property
    def param_count(self) -> int:
        """Equal to Keras' count_params(): every weight the layer holds."""
        return int(sum(w.size for w in self.weights))


@dataclass(frozen=True)
class ModelSpec:
    """A single-chain model: Input((timesteps, features)) -> layers in order."""

    name: str
    source: str  # the file path, for messages
    input_shape: tuple[int | None, ...]  # without the batch axis, e.g. (T or None, m)
    layers: tuple[LayerSpec, ...]  # InputLayer removed, nested Sequentials flattened
    keras_version: str = ""
    file_format: str = ""  # "keras3 .keras", "keras3 .h5", "keras2 .h5", "keras2 .keras"
    batch_size: int | None = None  # fixed batch size of the input, if the file declares one
    meta: dict[str, str] = field(default_factory=dict)
