"""Keras Activation, ReLU, LeakyReLU and Softmax -> ``kinds.activation.ActivationLayer``
(None for a linear Activation, the identity)."""

from __future__ import annotations

from typing import Any

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.activation import ActivationLayer
from lstm_embed.kinds.base import Unsupported

CLASSES = ("Activation", "ReLU", "LeakyReLU", "Softmax")
# Keras 3 activations.leaky_relu's default slope (the LeakyReLU layer's default is 0.3)
LEAKY_RELU_FUNCTION_SLOPE = 0.2
ACTIVATION_NAMES = ("linear", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "softmax")


def _number(config: dict[str, Any], key: str, default: float | None) -> float | None:
    """A float option; tf_keras writes ReLU's options as strings ("6.0", "None")."""
    value = config.get(key, default)
    if value is None or value == "None":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Unsupported([f"{key}={value!r} is not a number"]) from None


def read(spec: LayerSpec, input_size: int) -> ActivationLayer | None:
    config, cls = spec.config, spec.class_name
    slope, max_value, threshold = 0.0, None, 0.0
    if cls == "Activation":
        name = config.get("activation", "linear")
        if name not in ACTIVATION_NAMES:
            supported = ", ".join(ACTIVATION_NAMES)
            raise Unsupported([f"activation={name!r} is not supported (supported: {supported})"])
        if name == "linear":
            return None
        function = "relu" if name in ("relu6", "leaky_relu") else name
        max_value = 6.0 if name == "relu6" else None
        slope = LEAKY_RELU_FUNCTION_SLOPE if name == "leaky_relu" else 0.0
    elif cls == "Softmax":
        function = "softmax"
        axis = config.get("axis", -1)
        if axis not in (-1, [-1]):
            raise Unsupported([f"axis={axis!r} is not supported (supported: -1, the features)"])
    elif cls == "LeakyReLU":
        function = "relu"
        key = "negative_slope" if "negative_slope" in config else "alpha"  # Keras 3 / Keras 2
        slope = _number(config, key, 0.3) or 0.0
    else:  # ReLU
        function = "relu"
        slope = _number(config, "negative_slope", 0.0) or 0.0
        max_value = _number(config, "max_value", None)
        threshold = _number(config, "threshold", 0.0) or 0.0
    return ActivationLayer(
        spec.name, input_size, function, slope, max_value, threshold, type_name=cls
    )


def read_frames(
    spec: LayerSpec, input_size: int, timesteps: int | None, frame: tuple[int, int] | None
) -> ActivationLayer | None:
    """On (T, F, C) frames each value goes through the function alone; a softmax would take
    the frame's F * C values as one vector, not Keras' channel axis, so it is refused."""
    layer = read(spec, input_size)
    if frame is not None and layer is not None and layer.function == "softmax":
        raise Unsupported(
            [f"a softmax over (timesteps, {frame[0]}, {frame[1]}) frames is not supported"
             " (supported: on features, after Reshape((T, F * C)) or Flatten)"]
        )  # fmt: skip
    return layer
