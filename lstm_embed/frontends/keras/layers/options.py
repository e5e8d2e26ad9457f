"""Keras config helpers shared by the layer readers: option checks, weight arrays, and the
go_backwards / stateful options of every recurrent layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import IRError, Unsupported
from lstm_embed.kinds.common import RECURRENT_FLAGS, RecurrentOptions

# options every recurrent layer refuses the same way
RECURRENT_RULES: dict[str, tuple[tuple, Any]] = {
    "return_state": ((False,), False),
    "time_major": ((False,), False),
}


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


def single(value: Any) -> Any:
    """Keras writes kernel_size, strides, pool_size and dilation_rate as 1-lists."""
    return value[0] if isinstance(value, list | tuple) and len(value) == 1 else value


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


def recurrent_flags(config: dict[str, Any]) -> dict[str, bool]:
    """Keras' go_backwards and stateful options of a recurrent layer config (default False)."""
    return {flag: bool(config.get(flag, False)) for flag in RECURRENT_FLAGS}


def with_recurrent_options(config: dict[str, Any], layer: Any) -> Any:
    """``layer`` as the config's go_backwards and stateful options make it (every recurrent
    reader returns through this); unchanged when neither is set."""
    flags = recurrent_flags(config)
    return RecurrentOptions(layer, **flags) if any(flags.values()) else layer


def read_recurrent(
    spec: LayerSpec,
    input_size: int,
    layer_class: type,
    rules: dict[str, tuple[tuple, Any]],
    **options: Any,
) -> Any:
    """A recurrent Keras layer: its own ``rules`` and RECURRENT_RULES checked, kernel,
    recurrent kernel and bias read (Keras' layout and gate order, which the kinds keep), the
    float layer built with ``options`` (its kind's config values), go_backwards and stateful
    applied."""
    config = spec.config
    reasons = require_options(config, {**rules, **RECURRENT_RULES})
    if reasons:
        raise Unsupported(reasons)
    article = "an" if spec.class_name == "LSTM" else "a"
    (kernel, recurrent_kernel), bias = layer_weights(spec, f"{article} {spec.class_name}", 2)
    layer = layer_class(
        name=spec.name,
        input_size=input_size,
        units=int(config["units"]),
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        return_sequences=bool(config.get("return_sequences", False)),
        **options,
    )
    return with_recurrent_options(config, layer)
