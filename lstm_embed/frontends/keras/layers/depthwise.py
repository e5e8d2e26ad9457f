"""Keras' DepthwiseConv1D and SeparableConv1D, read as the Conv1D they compute (``kinds.conv1d``:
its quantization, streaming when causal, run-only otherwise, and its C).

- DepthwiseConv1D(kernel_size, depth_multiplier=dm): output channel c * dm + d is input channel
  c through its own kernel[:, c, d]. As a Conv1D: a kernel (K, m, m * dm) that is zero off the
  block diagonal (exact; the zeros cost MACs and flash: a dedicated depthwise kernel would
  spend K * m * dm of them instead of K * m * m * dm).
- SeparableConv1D(filters, kernel_size, depth_multiplier=dm): that depthwise step without bias
  or activation, then a pointwise (1x1) convolution with bias and activation. Both linear, so
  they compose into one Conv1D kernel[k, c, f] = sum_d depthwise[k, c, d] * pointwise[c*dm+d, f]
  (exact in float; K * m * filters weights, fewer than the two steps' when filters is small).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_embed.frontends.keras.layers.conv1d import read as read_conv1d
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import FloatLayer, IRError, Unsupported

# Options the Conv1D reader checks as they are
CONV_OPTIONS = ("kernel_size", "strides", "padding", "dilation_rate", "activation",
                "data_format", "use_bias")  # fmt: skip


def _depth_multiplier(config: dict[str, Any]) -> int:
    dm = config.get("depth_multiplier", 1)
    if not isinstance(dm, int) or dm < 1:
        raise Unsupported([f"depth_multiplier={dm!r} is not supported (supported: >= 1)"])
    return dm


def _weights(spec: LayerSpec, count: int, kind: str) -> list[np.ndarray]:
    use_bias = bool(spec.config.get("use_bias", True))
    weights = [np.asarray(w, np.float64) for w in spec.weights]
    if len(weights) != count + use_bias:
        raise IRError(
            f"layer '{spec.name}': {len(weights)} weight arrays in the file; a {kind} with"
            f" use_bias={use_bias} has {count + use_bias}"
        )
    return weights


def _as_conv1d(spec: LayerSpec, input_size: int, kernel: np.ndarray, bias: Any) -> FloatLayer:
    config = {key: spec.config[key] for key in CONV_OPTIONS if key in spec.config}
    config |= {"filters": int(kernel.shape[2]), "name": spec.name}
    weights = (kernel,) if bias is None else (kernel, bias)
    conv = LayerSpec(spec.name, "Conv1D", config, weights)
    return read_conv1d(conv, input_size)


def read_depthwise(spec: LayerSpec, input_size: int) -> FloatLayer:
    dm = _depth_multiplier(spec.config)
    weights = _weights(spec, 1, "DepthwiseConv1D")
    depthwise = weights[0]
    if depthwise.ndim != 3 or depthwise.shape[1:] != (input_size, dm):
        raise IRError(
            f"layer '{spec.name}': depthwise kernel shape {depthwise.shape} !="
            f" (kernel_size, {input_size}, {dm})"
        )
    k = depthwise.shape[0]
    kernel = np.zeros((k, input_size, input_size * dm))
    for c in range(input_size):
        kernel[:, c, c * dm : (c + 1) * dm] = depthwise[:, c, :]
    return _as_conv1d(spec, input_size, kernel, weights[1] if len(weights) > 1 else None)


def read_separable(spec: LayerSpec, input_size: int) -> FloatLayer:
    dm = _depth_multiplier(spec.config)
    weights = _weights(spec, 2, "SeparableConv1D")
    depthwise, pointwise = weights[0], weights[1]
    if depthwise.ndim != 3 or depthwise.shape[1:] != (input_size, dm):
        raise IRError(
            f"layer '{spec.name}': depthwise kernel shape {depthwise.shape} !="
            f" (kernel_size, {input_size}, {dm})"
        )
    if pointwise.ndim != 3 or pointwise.shape[:2] != (1, input_size * dm):
        raise IRError(
            f"layer '{spec.name}': pointwise kernel shape {pointwise.shape} !="
            f" (1, {input_size * dm}, filters)"
        )
    filters = pointwise.shape[2]
    per_channel = pointwise[0].reshape(input_size, dm, filters)
    kernel = np.einsum("kcd,cdf->kcf", depthwise, per_channel)
    return _as_conv1d(spec, input_size, kernel, weights[2] if len(weights) > 2 else None)
