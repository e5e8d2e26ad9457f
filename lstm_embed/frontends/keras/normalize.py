"""Every difference between Keras versions' layer configs, normalized in one place.

The result uses Keras 3 key names. Each rule says which version writes what; anything not
listed here is kept exactly as the file has it (initializers, regularizers, Lambda functions,
custom classes' own keys), so a layer kind sees what Keras would have seen.
"""

from __future__ import annotations

import struct
from typing import Any

# Keras 3 writes the input shape as InputLayer "batch_shape"; Keras 2 as "batch_input_shape",
# on the InputLayer or, in Sequential models without one, on the first layer.
SHAPE_KEYS = ("batch_shape", "batch_input_shape")

# Wrappers hold whole serialized layers under these config keys (Bidirectional, TimeDistributed;
# RNN its cell), and StackedRNNCells a list of them under "cells".
WRAPPED_KEYS = ("layer", "backward_layer", "cell")
WRAPPED_LIST_KEYS = ("cells",)

ACTIVATION_KEYS = ("activation", "recurrent_activation")

# tf_keras keeps these options as float32 (backend.cast_to_floatx) and writes that value
# (LeakyReLU(0.3): alpha 0.30000001192092896); Keras 3 writes the number as given. Both compute
# with the float32, and the shortest decimal of it is the number the user wrote.
KERAS2_FLOAT32_OPTIONS = {
    "LeakyReLU": ("alpha",),
    "ReLU": ("max_value", "negative_slope", "threshold"),
}
# Keras 2 calls LeakyReLU's slope "alpha"; Keras 3 "negative_slope"
KERAS2_RENAMED = {("LeakyReLU", "alpha"): "negative_slope"}


def split_class_name(entry: dict[str, Any]) -> tuple[str, str, str | None]:
    """(class_name, module, registered_name) of a serialized layer dict."""
    class_name = str(entry.get("class_name", ""))
    registered = entry.get("registered_name")
    # .h5 files (both versions) write no module, and a registered custom class as "Package>Name"
    module = entry.get("module", "keras.layers")
    if ">" in class_name:
        registered = registered or class_name
        class_name = class_name.rsplit(">", 1)[1]
        module = entry.get("module")
    # .keras files write registered_name null for built-ins and "Package>Name" for custom
    # classes (with module null); Keras 3 also writes "Functional" for its own Functional class
    if registered in (None, class_name, "Functional"):
        registered = None
    return class_name, str(module or ""), None if registered is None else str(registered)


def layer_config(class_name: str, config: Any, keras2: bool = False) -> dict[str, Any]:
    """A layer's config with version differences removed (a new dict; the input is unchanged)."""
    if not isinstance(config, dict):
        return {"config": config}  # Keras 1 style or a custom class's oddity: keep it whole
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "dtype":
            # Keras 2 writes "float32"; Keras 3 a DTypePolicy dict: neither matters to the C
            continue
        if key == "implementation":
            # Keras 2 RNNs write implementation=1|2 (a GPU/CPU kernel choice), Keras 3 does not
            continue
        if key == "time_major" and value is False:
            # Keras 2 RNNs always write time_major; Keras 3 has none. True stays: it is refused.
            continue
        if key == "batch_input_shape" and class_name != "InputLayer":
            # Keras 2 puts the model input on the first layer; read_model takes it from there
            continue
        if keras2 and key in KERAS2_FLOAT32_OPTIONS.get(class_name, ()):
            value = float32_decimal(value)
            key = KERAS2_RENAMED.get((class_name, key), key)
        if key in ACTIVATION_KEYS:
            value = activation_name(value)
            if keras2 and value == "hard_sigmoid":
                # Keras 2's hard_sigmoid is clip(0.2x + 0.5); Keras 3's is relu6(x + 3) / 6
                value = "hard_sigmoid_keras2"
        elif key in WRAPPED_KEYS and isinstance(value, dict) and "class_name" in value:
            value = wrapped_layer(value, keras2)
        elif key in WRAPPED_LIST_KEYS and isinstance(value, list):
            value = [
                wrapped_layer(v, keras2) if isinstance(v, dict) and "class_name" in v else v
                for v in value
            ]
        out[key] = value
    if class_name == "InputLayer" and "batch_input_shape" in out:
        # Keras 2 InputLayer: "batch_input_shape"; Keras 3 calls the same list "batch_shape"
        out.setdefault("batch_shape", out.pop("batch_input_shape"))
    return out


def wrapped_layer(entry: dict[str, Any], keras2: bool = False) -> dict[str, Any]:
    """A wrapper's inner serialized layer, with its class split and its config normalized."""
    class_name, module, registered = split_class_name(entry)
    return {
        "class_name": class_name,
        "module": module,
        "registered_name": registered,
        "config": layer_config(class_name, entry.get("config", {}), keras2),
    }


# Modules that hold Keras' own activation functions, in the versions that write dicts for them
_ACTIVATION_MODULES = ("keras.activations", "keras.src.activations", "tf_keras.src.activations")


def activation_name(value: Any) -> Any:
    """Built-in activations as plain names; anything else (custom functions, layers) unchanged.

    Keras 2 and Keras 3 write a built-in activation as a string ("tanh"); Keras 3's serializer
    can also write it as {"module": "keras.activations", "class_name": "function",
    "config": "tanh"}. A user function (module "builtins", "__main__", ...) keeps its dict so a
    user function that happens to be called "tanh" is never taken for Keras' tanh.
    """
    if not isinstance(value, dict) or value.get("class_name") != "function":
        return value
    module = str(value.get("module") or "")
    name = value.get("config")
    if isinstance(name, str) and module.startswith(_ACTIVATION_MODULES):
        return name
    return value


def _single(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def float32_decimal(value: Any) -> Any:
    """A float32 value as the shortest decimal with that float32 (0.30000001192092896 -> 0.3);
    anything else (a string, None, a float that is no float32) unchanged."""
    if not isinstance(value, float):
        return value
    try:
        if _single(value) != value:
            return value
        for digits in range(1, 10):  # 9 significant digits tell every float32 apart
            short = float(f"{value:.{digits}g}")
            if _single(short) == value:
                return short
    except OverflowError:  # beyond float32's range
        pass
    return value


def batch_shape(config: Any) -> list[Any] | None:
    """The batch input shape a layer config declares (InputLayer or Keras 2 first layer)."""
    if not isinstance(config, dict):
        return None
    for key in SHAPE_KEYS:
        if isinstance(config.get(key), list):
            return config[key]
    return None
