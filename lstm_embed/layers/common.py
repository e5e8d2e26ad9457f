"""Helpers shared by the layer kinds: option checks, float activations, C weight formats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..reader.spec import LayerSpec
from .base import IRError


def require_options(config: dict[str, Any], rules: dict[str, tuple[tuple, Any]]) -> list[str]:
    """Every option whose value is not supported, as 'option=value (supported: ...)'.

    ``rules``: option -> (supported values, default when the config omits it).
    """
    reasons = []
    for option, (supported, default) in rules.items():
        value = config.get(option, default)
        if value not in supported:
            allowed = " or ".join(repr(v) if not isinstance(v, str) else v for v in supported)
            reasons.append(f"{option}={value!r} is not supported (supported: {allowed})")
    return reasons


def layer_weights(spec: LayerSpec, kind: str, count: int) -> tuple[list[np.ndarray], Any]:
    """The ``count`` weight arrays of a layer (float64) before its bias, and the bias (None when
    use_bias=False); an IRError names the layer when the file holds another number of arrays."""
    use_bias = bool(spec.config.get("use_bias", True))
    weights = [np.asarray(w, np.float64) for w in spec.weights]
    if len(weights) != count + use_bias:
        raise IRError(
            f"layer '{spec.name}': {len(weights)} weight arrays in the file; {kind} with"
            f" use_bias={use_bias} has {count + use_bias}"
        )
    return weights[:count], weights[count] if use_bias else None


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def hard_sigmoid(z: np.ndarray) -> np.ndarray:
    """Keras 3's hard_sigmoid: relu6(x + 3) / 6."""
    return np.clip(z / 6.0 + 0.5, 0.0, 1.0)


def hard_sigmoid_keras2(z: np.ndarray) -> np.ndarray:
    """Keras 2's (tf.keras, tf_keras) hard_sigmoid: clip(0.2x + 0.5, 0, 1)."""
    return np.clip(0.2 * z + 0.5, 0.0, 1.0)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "hard_sigmoid_keras2": hard_sigmoid_keras2,
    "tanh": np.tanh,
    "softmax": softmax,
}


def activation_function(name: str) -> Callable[[np.ndarray], np.ndarray]:
    return ACTIVATIONS[name]


def weight_format(bits: int) -> dict[str, Any]:
    """C names of a layer's weight type (CMSIS-NN style suffixes)."""
    return {"weight_bits": bits, "weight_type": f"int{bits}_t", "weight_suffix": f"s{bits}"}
