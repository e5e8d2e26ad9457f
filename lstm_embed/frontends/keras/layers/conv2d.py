"""Keras Conv2D -> ``kinds.conv2d.Conv2DLayer``; MaxPooling2D, AveragePooling2D and their
Global forms -> ``kinds.pooling2d.Pooling2DLayer``. Both take the (rows, channels) frame of
their (T, F, C) input (``read``'s fourth argument; None when the input has no frames)."""

from __future__ import annotations

from typing import Any

from lstm_embed.frontends.keras.layers import reshape
from lstm_embed.frontends.keras.layers.options import layer_weights, require_options
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import FloatLayer, Unsupported
from lstm_embed.kinds.conv1d import CONV_ACTIVATIONS
from lstm_embed.kinds.conv2d import Conv2DLayer, Pair
from lstm_embed.kinds.pooling import MAX_POOL
from lstm_embed.kinds.pooling2d import Pooling2DLayer

POOL_MODES = {
    "MaxPooling2D": "max",
    "AveragePooling2D": "average",
    "GlobalMaxPooling2D": "max",
    "GlobalAveragePooling2D": "average",
}
CLASSES = ("Conv2D", *POOL_MODES)
PADDINGS = ("valid", "same")


def _pair(config: dict[str, Any], key: str, default: Any, reasons: list[str]) -> Pair:
    """A Keras 2-tuple option (an int means both axes) with values >= 1."""
    value = config.get(key, default)
    value = default if value is None else value
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        reasons.append(f"{key}={value!r} is not supported (supported: two integers >= 1)")
        return (1, 1)
    if min(pair) < 1:
        reasons.append(f"{key}={value!r} is not supported (supported: >= 1)")
    return (int(pair[0]), int(pair[1]))


def read(spec: LayerSpec, input_size: int, timesteps: int | None, frame: Pair | None) -> FloatLayer:
    if frame is None:
        raise Unsupported(
            [f"{spec.class_name} needs a (timesteps, rows, channels) input (Input((T, F, C)))"]
        )
    if spec.class_name == "Conv2D":
        return _conv(spec, input_size, frame)
    if spec.class_name.startswith("Global") and (timesteps or 0) * frame[0] > MAX_POOL:
        raise Unsupported(  # its int16 sums must fit int32
            [f"{spec.class_name} over {timesteps} x {frame[0]} values is not supported"
             f" (supported: up to {MAX_POOL})"]
        )  # fmt: skip
    return _pooling(spec, input_size, frame)


def _conv(spec: LayerSpec, input_size: int, frame: Pair) -> Conv2DLayer:
    config = spec.config
    reasons = require_options(
        config,
        {
            "activation": (CONV_ACTIVATIONS, "linear"),
            "data_format": (("channels_last",), "channels_last"),
            "groups": ((1,), 1),
            "padding": (PADDINGS, "valid"),
        },
    )
    kernel_hw = _pair(config, "kernel_size", None, reasons)
    strides = _pair(config, "strides", 1, reasons)
    dilation = _pair(config, "dilation_rate", 1, reasons)
    if max(strides) > 1 and max(dilation) > 1:  # Keras refuses it too
        reasons.append("strides and dilation_rate both above 1 are not supported")
    if reasons:
        raise Unsupported(reasons)
    (kernel,), bias = layer_weights(spec, "a Conv2D", 1)
    return Conv2DLayer(
        name=spec.name,
        input_size=input_size,
        frame=frame,
        filters=int(config["filters"]),
        kernel_hw=kernel_hw,
        kernel=kernel,
        bias=bias,
        activation=config.get("activation", "linear"),
        padding=config.get("padding", "valid"),
        strides=strides,
        dilation=dilation,
    )


def _pooling(spec: LayerSpec, input_size: int, frame: Pair) -> Pooling2DLayer:
    config, cls = spec.config, spec.class_name
    rules: dict[str, tuple[tuple, Any]] = {"data_format": (("channels_last",), "channels_last")}
    mode = POOL_MODES[cls]
    if cls.startswith("Global"):
        rules["keepdims"] = ((False,), False)
        reasons = require_options(config, rules)
        if reasons:
            raise Unsupported(reasons)
        return Pooling2DLayer(spec.name, input_size, frame, mode, cls, whole=True)
    rules["padding"] = (PADDINGS, "valid")
    reasons = require_options(config, rules)
    pool = _pair(config, "pool_size", 2, reasons)
    strides = _pair(config, "strides", pool, reasons)  # Keras: None means pool_size
    if pool[0] * pool[1] > MAX_POOL:
        reasons.append(f"pool_size={pool!r} is not supported (supported: up to {MAX_POOL} values)")
    if reasons:
        raise Unsupported(reasons)
    padding = config.get("padding", "valid")
    return Pooling2DLayer(spec.name, input_size, frame, mode, cls, pool, strides, padding)


def _regroup(spec: LayerSpec, input_size: int, timesteps: int | None) -> Pair | bool | None:
    """A Reshape that keeps the timesteps and regroups only each timestep's values: its new
    frame (a (T, F', C') target), None (a (T, F' * C') target), False (any other)."""
    target = list(spec.config.get("target_shape") or [])
    if timesteps is None or len(target) not in (2, 3) or target.count(-1) > 1:
        return False
    known = 1
    for size in target:
        known *= size if size != -1 else 1
    if known < 1 or (timesteps * input_size) % known:
        return False
    target = [timesteps * input_size // known if d == -1 else d for d in target]
    if target[0] != timesteps:
        return False
    per_step = target[1] * (target[2] if len(target) == 3 else 1)
    if per_step != input_size:
        return False
    return (int(target[1]), int(target[2])) if len(target) == 3 else None


def read_reshape(
    spec: LayerSpec, input_size: int, timesteps: int | None, frame: Pair | None
) -> FloatLayer | None:
    """Reshape to (T, F', C') or, from frames, to (T, F' * C'): the same values in the same
    order with the same timesteps, so nothing at inference (the frame changes:
    ``frame_after``); any other Reshape is the timestep-regrouping one."""
    regroup = _regroup(spec, input_size, timesteps)
    if regroup is not False and (frame is not None or regroup is not None):
        return None
    if len(spec.config.get("target_shape") or []) == 3:
        raise Unsupported([
            f"target_shape={spec.config.get('target_shape')!r} is not supported (supported:"
            f" (T, F, C) keeping the {timesteps} timesteps, with F * C = {input_size})"
        ])  # fmt: skip
    return reshape.read(spec, input_size, timesteps)


def frame_after(spec: LayerSpec, input_size: int, timesteps: int | None, frame: Pair | None):
    """The frame after a layer read as nothing (an identity keeps it; a Reshape sets it)."""
    if spec.class_name != "Reshape":
        return frame
    regroup = _regroup(spec, input_size, timesteps)
    return None if regroup is False else regroup
