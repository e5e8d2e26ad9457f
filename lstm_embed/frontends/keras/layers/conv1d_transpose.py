"""Keras Conv1DTranspose -> zeros between and around the timesteps (``kinds.time_axis``, mode
"dilate") and a valid Conv1D with the kernel reversed in time (``kinds.conv1d``), held as one
layer (``kinds.stack.ComposedLayers``: one row in inspect) and converted as those two.

A transposed convolution with stride s scatters each input timestep through the kernel onto s
output steps apart. The same sums come from a plain convolution over the input with s - 1 zero
timesteps between every two, kernel_size - 1 zeros before and after, and the kernel reversed
in time with its input and output axes swapped: Keras' kernel is (kernel_size, filters, inputs),
the Conv1D's (kernel_size, inputs, filters). Keras' output length is T * s + max(k - s, 0)
("valid") or T * s ("same", whose full output is cropped by max(k - s, 0), the smaller half
before); where k < s the full output is s - k steps short of it, and those are zero padding
(bias and activation only).
"""

from __future__ import annotations

import numpy as np

from lstm_embed.frontends.keras.layers.options import layer_weights, require_options, single
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import IRError, Unsupported
from lstm_embed.kinds.conv1d import CONV_ACTIVATIONS, Conv1DLayer
from lstm_embed.kinds.stack import ComposedLayers
from lstm_embed.kinds.time_axis import TimeAxisLayer

TYPE_NAME = "Conv1DTranspose"
MAX_STRIDES = 64  # a window grows by this factor: beyond any MCU's RAM long before


def read(spec: LayerSpec, input_size: int) -> ComposedLayers:
    config = dict(spec.config)
    for key in ("kernel_size", "strides", "dilation_rate"):
        if key in config:
            config[key] = single(config[key])
    reasons = require_options(
        config,
        {
            "activation": (CONV_ACTIVATIONS, "linear"),
            "data_format": (("channels_last",), "channels_last"),
            "padding": (("valid", "same"), "valid"),
            "dilation_rate": ((1,), 1),
            "output_padding": ((None,), None),
        },
    )
    kernel_size, strides = config.get("kernel_size"), config.get("strides", 1)
    if not isinstance(kernel_size, int) or kernel_size < 1:
        reasons.append(f"kernel_size={kernel_size!r} is not supported (supported: >= 1)")
    if not isinstance(strides, int) or not 1 <= strides <= MAX_STRIDES:
        reasons.append(f"strides={strides!r} is not supported (supported: 1 to {MAX_STRIDES})")
    if reasons:
        raise Unsupported(reasons)
    (kernel,), bias = layer_weights(spec, "a Conv1DTranspose", 1)
    filters = int(config["filters"])
    if kernel.shape != (kernel_size, filters, input_size):
        raise IRError(
            f"layer '{spec.name}': kernel shape {kernel.shape} != ({kernel_size}, {filters},"
            f" {input_size}) (kernel_size, filters, inputs)"
        )
    overlap = max(kernel_size - strides, 0)  # the full output's steps beyond T * strides
    crop_before = overlap // 2 if config.get("padding", "valid") == "same" else 0
    crop_after = overlap - crop_before if config.get("padding", "valid") == "same" else 0
    short = max(strides - kernel_size, 0)
    zeros = TimeAxisLayer(
        f"{spec.name}/zeros", input_size, "dilate", TYPE_NAME, size=strides,
        before=kernel_size - 1 - crop_before, after=kernel_size - 1 - crop_after + short,
    )  # fmt: skip
    conv = Conv1DLayer(
        name=spec.name,
        input_size=input_size,
        filters=filters,
        kernel_size=kernel_size,
        dilation=1,
        kernel=np.ascontiguousarray(kernel[::-1].transpose(0, 2, 1)),
        bias=bias,
        activation=config.get("activation", "linear"),
        padding="valid",
        strides=1,
    )
    return ComposedLayers(spec.name, input_size, (zeros, conv), TYPE_NAME)
