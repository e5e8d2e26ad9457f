"""The layers `lstm-embed bench` puts before a benchmarked model's recurrent layers: Conv1D,
DepthwiseConv1D (as the reader builds it: a Conv1D whose kernel is zero off the block diagonal)
and Dense, with random weights of Keras' default scales. A row that times one of them alone
(``Shape.timed_layer``) counts that layer's MACs: kernel_size * inputs * filters for a Conv1D,
kernel_size * inputs * depth_multiplier for a depthwise one (its real products, not the zeros of
the block-diagonal form), inputs * units for a Dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lstm_embed.ir.model import DenseLayer
from lstm_embed.kinds.base import FloatLayer
from lstm_embed.kinds.conv1d import Conv1DLayer

FRONT_KINDS = ("conv1d", "depthwise", "dense")


@dataclass(frozen=True)
class FrontLayer:
    """kind "conv1d" (size = filters), "depthwise" (size = depth_multiplier) or "dense"
    (size = units); causal padding, stride 1 (the streaming form, which has a step())."""

    kind: str
    size: int
    kernel_size: int = 1
    activation: str = "relu"

    def output_size(self, width: int) -> int:
        return width * self.size if self.kind == "depthwise" else self.size

    def macs(self, width: int) -> int:
        """kernel_size * inputs * (filters, depth_multiplier or units)."""
        return self.kernel_size * width * self.size

    def layer(self, rng: np.random.Generator, index: int, width: int) -> FloatLayer:
        name = f"{self.kind}{index}"
        out = self.output_size(width)
        limit = np.sqrt(6.0 / (self.kernel_size * width + out))  # Glorot uniform
        bias = rng.uniform(-0.1, 0.1, out)
        if self.kind == "dense":
            kernel = rng.uniform(-limit, limit, (width, out))
            return DenseLayer(name, width, out, kernel, bias, self.activation)
        if self.kind == "depthwise":
            depthwise = rng.uniform(-limit, limit, (self.kernel_size, width, self.size))
            kernel = np.zeros((self.kernel_size, width, out))
            for c in range(width):
                kernel[:, c, c * self.size : (c + 1) * self.size] = depthwise[:, c, :]
        else:
            kernel = rng.uniform(-limit, limit, (self.kernel_size, width, out))
        return Conv1DLayer(
            name, width, out, self.kernel_size, 1, kernel, bias, self.activation, "causal"
        )


def timed_macs(front: Sequence[FrontLayer], input_size: int, index: int) -> int:
    """The MACs of front layer ``index`` of a model with ``input_size`` inputs."""
    width = input_size
    for layer in front[:index]:
        width = layer.output_size(width)
    return front[index].macs(width)
