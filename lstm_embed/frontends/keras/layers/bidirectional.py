"""Keras Bidirectional -> ``kinds.bidirectional.BidirectionalLayer``.

Keras (3 and tf_keras, checked against both): the backward layer is the forward one's config
with go_backwards flipped (or the file's ``backward_layer``, which Keras requires to differ in
go_backwards and to agree in return_sequences). Any recurrent layer can be inside (LSTM, GRU,
SimpleRNN): the inner layers are read through the registry, their go_backwards applied by
``kinds.common.RecurrentOptions``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lstm_embed.frontends.keras.layers.options import recurrent_flags, require_options
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import FloatLayer, IRError, Unsupported
from lstm_embed.kinds.bidirectional import MERGE_MODES, BidirectionalLayer
from lstm_embed.kinds.common import RecurrentOptions

InnerReader = Callable[[LayerSpec, int], FloatLayer | None]


def read(spec: LayerSpec, input_size: int, read_inner: InnerReader) -> BidirectionalLayer:
    """``read_inner``: the registry's reader of any layer (the two directions)."""
    config = spec.config
    reasons = require_options(config, {"merge_mode": (MERGE_MODES, "concat")})
    forward_entry = config.get("layer")
    if not isinstance(forward_entry, dict) or "class_name" not in forward_entry:
        raise IRError(f"layer '{spec.name}': Bidirectional without its inner layer config")
    backward_entry = config.get("backward_layer")
    if not isinstance(backward_entry, dict) or "class_name" not in backward_entry:
        # Keras 2 writes backward_layer only for a custom one; else the forward layer's config
        # with go_backwards flipped
        inner = dict(forward_entry.get("config", {}))
        inner["go_backwards"] = not bool(inner.get("go_backwards", False))
        inner["name"] = f"backward_{inner.get('name', spec.name)}"
        backward_entry = {**forward_entry, "config": inner}
    count = _weight_count(forward_entry)
    if count > len(spec.weights):
        raise IRError(
            f"layer '{spec.name}': {len(spec.weights)} weight arrays in the file; its forward"
            f" layer alone has {count}"
        )
    layers = []
    for direction, entry, weights in (
        ("forward", forward_entry, spec.weights[:count]),
        ("backward", backward_entry, spec.weights[count:]),
    ):
        try:
            layers.append(_inner(spec, direction, entry, tuple(weights), input_size, read_inner))
        except Unsupported as error:
            reasons += [f"{direction} layer: {reason}" for reason in error.reasons]
    if reasons:
        raise Unsupported(reasons)
    return BidirectionalLayer(
        name=spec.name,
        input_size=input_size,
        forward_layer=layers[0],
        backward_layer=layers[1],
        merge_mode=str(config.get("merge_mode", "concat")),
    )


def _weight_count(entry: dict[str, Any]) -> int:
    """Weight arrays of the forward layer: Keras' recurrent cells (LSTM, GRU, SimpleRNN) hold
    kernel, recurrent_kernel and, with use_bias, bias; Bidirectional lists forward's first."""
    return 2 + bool(entry.get("config", {}).get("use_bias", True))


def _inner(
    spec: LayerSpec,
    direction: str,
    entry: dict[str, Any],
    weights: tuple,
    input_size: int,
    read_inner: InnerReader,
) -> FloatLayer:
    config = dict(entry.get("config", {}))
    flags = recurrent_flags(config)
    if flags["stateful"]:
        raise Unsupported(["stateful=True inside Bidirectional is not supported"])
    config.update(go_backwards=False, stateful=False)  # applied here, whatever the kind reads
    name = str(config.get("name", spec.name))
    if not name.startswith(f"{direction}_"):
        name = f"{direction}_{name}"
    inner_spec = LayerSpec(
        name=name,
        class_name=str(entry["class_name"]),
        config=config,
        weights=weights,
        module=str(entry.get("module") or "keras.layers"),
        registered_name=entry.get("registered_name"),
    )
    layer = read_inner(inner_spec, input_size)
    if layer is None or not layer.recurrent or not layer.streaming:
        raise Unsupported(
            [f"{inner_spec.class_name} is not a recurrent layer (supported: LSTM, GRU, SimpleRNN)"]
        )
    return RecurrentOptions(layer, go_backwards=True) if flags["go_backwards"] else layer
