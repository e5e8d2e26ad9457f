"""Keras TimeDistributed(layer): the wrapped layer applied to every timestep.

A per-timestep layer (Dense) already does exactly that on a sequence, so the wrapper reads as
its inner layer under the wrapper's name.
"""

from __future__ import annotations

from collections.abc import Callable

from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import FloatLayer, Unsupported


def read(
    spec: LayerSpec, input_size: int, read_inner: Callable[[LayerSpec, int], FloatLayer | None]
) -> FloatLayer | None:
    """``read_inner``: the registry's reader of any layer (the wrapped one)."""
    inner = spec.config.get("layer")
    if not isinstance(inner, dict) or "class_name" not in inner:
        raise Unsupported(["the wrapped layer's config is missing"])
    inner_spec = LayerSpec(
        name=spec.name,
        class_name=inner["class_name"],
        config=inner.get("config") or {},
        weights=spec.weights,
        module=inner.get("module") or "keras.layers",
        registered_name=inner.get("registered_name"),
    )
    try:
        layer = read_inner(inner_spec, input_size)
    except Unsupported as error:
        raise Unsupported([f"wrapped {inner['class_name']}: {r}" for r in error.reasons]) from None
    if layer is not None and layer.recurrent:
        reason = (
            f"TimeDistributed({inner['class_name']}) is not supported (supported: per-timestep"
            " layers such as Dense)"
        )
        raise Unsupported([reason])
    return layer
