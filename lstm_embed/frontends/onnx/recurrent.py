"""ONNX LSTM, GRU and RNN nodes -> the recurrent kinds' float layers, gate orders converted here
once: ONNX stacks W [dirs, gates*H, I], R [dirs, gates*H, H] and B [dirs, 2*gates*H] (input
biases, then recurrent ones); the kinds take Keras' kernel (I, gates*H) layout.

LSTM: ONNX gates i, o, f, c -> the kind's i, f, c, o. GRU: z, r, h in both;
linear_before_reset=1 is the kind's reset_after=True (bias rows [Wb; Rb]), 0 is
reset_after=False (Wb + Rb). RNN: one gate, Tanh or Relu.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_embed.kinds.bidirectional import BidirectionalLayer
from lstm_embed.kinds.common import RecurrentOptions
from lstm_embed.kinds.gru import GRULayer
from lstm_embed.kinds.lstm import LSTMLayer
from lstm_embed.kinds.simple_rnn import SimpleRNNLayer

GATE_COUNT = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
RNN_ACTIVATIONS = {"Tanh": "tanh", "Relu": "relu"}
LSTM_TO_KIND = (0, 2, 3, 1)  # the kind's i, f, c, o blocks, as ONNX block indices (i, o, f, c)
DIRECTIONS = ("forward", "reverse", "bidirectional")


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_attributes(op: str, attrs: dict[str, Any], dirs: int) -> list[str]:
    """Every attribute value lstm-embed does not convert, with what it supports."""
    reasons = []
    direction = text(attrs.get("direction", "forward"))
    if direction not in DIRECTIONS:
        reasons.append(f"direction={direction!r} (supported: {', '.join(DIRECTIONS)})")
    acts = [text(a) for a in attrs.get("activations", [])]
    if op == "RNN":
        bad = [a for a in acts if a not in RNN_ACTIVATIONS]
        if bad or len(set(acts)) > 1:
            reasons.append(
                f"activations={acts} (supported: Tanh or Relu, the same in both directions)"
            )
    elif acts and acts != DEFAULT_ACTIVATIONS[op] * (len(acts) // len(DEFAULT_ACTIVATIONS[op])):
        default = ", ".join(DEFAULT_ACTIVATIONS[op])
        reasons.append(f"activations={acts} (supported: the default {default})")
    for name in ("activation_alpha", "activation_beta"):
        if attrs.get(name):
            reasons.append(f"{name} (supported: absent, for the default activations)")
    if attrs.get("clip") is not None:
        reasons.append(f"clip={attrs['clip']} (supported: absent, no clipping of the gates)")
    if op == "LSTM" and int(attrs.get("input_forget", 0)):
        reasons.append("input_forget=1 (supported: 0)")
    if op == "GRU" and int(attrs.get("linear_before_reset", 0)) not in (0, 1):
        reasons.append(f"linear_before_reset={attrs['linear_before_reset']} (supported: 0, 1)")
    if int(attrs.get("layout", 0)) not in (0, 1):
        reasons.append(f"layout={attrs['layout']} (supported: 0, 1)")
    return reasons


def direction_layer(
    op: str, name: str, attrs: dict[str, Any], d: int, w: np.ndarray, r: np.ndarray,
    b: np.ndarray | None,
) -> Any:  # fmt: skip
    """The float layer of direction ``d`` (return_sequences=True; the caller changes it)."""
    w, r = np.asarray(w[d], np.float64), np.asarray(r[d], np.float64)
    units, inputs = r.shape[1], w.shape[1]
    bw = br = None
    if b is not None:
        bw, br = np.split(np.asarray(b[d], np.float64), 2)
    if op == "LSTM":
        order = list(LSTM_TO_KIND)

        def blocks(a: np.ndarray) -> np.ndarray:
            parts = np.split(a, 4, axis=0)
            return np.concatenate([parts[k] for k in order], axis=0)

        bias = None if bw is None else blocks(bw + br)
        return LSTMLayer(name, inputs, units, blocks(w).T, blocks(r).T, bias, "sigmoid", True)
    if op == "GRU":
        reset_after = bool(int(attrs.get("linear_before_reset", 0)))
        bias = None
        if bw is not None:
            bias = np.stack([bw, br]) if reset_after else bw + br
        return GRULayer(name, inputs, units, w.T, r.T, bias, reset_after, "sigmoid", True)
    acts = [text(a) for a in attrs.get("activations", [])] or ["Tanh"]
    bias = None if bw is None else bw + br
    return SimpleRNNLayer(name, inputs, units, w.T, r.T, bias, RNN_ACTIVATIONS[acts[0]], True)


def build(
    op: str, name: str, attrs: dict[str, Any], w: np.ndarray, r: np.ndarray,
    b: np.ndarray | None,
) -> Any:  # fmt: skip
    """One ONNX recurrent node as a float layer: forward -> the kind's layer; reverse -> the
    layer reading from the last timestep (go_backwards); bidirectional -> Bidirectional with
    its outputs concatenated (ONNX's Y holds both, the backward in input order, as Keras')."""
    direction = text(attrs.get("direction", "forward"))
    if direction == "forward":
        return direction_layer(op, name, attrs, 0, w, r, b)
    if direction == "reverse":
        return RecurrentOptions(direction_layer(op, name, attrs, 0, w, r, b), go_backwards=True)
    forward = direction_layer(op, f"forward_{name}", attrs, 0, w, r, b)
    backward = direction_layer(op, f"backward_{name}", attrs, 1, w, r, b)
    return BidirectionalLayer(
        name, forward.input_size, forward, RecurrentOptions(backward, go_backwards=True)
    )


def with_sequences(layer: Any, sequences: bool) -> Any:
    """``layer`` (as ``build`` made it) with return_sequences set on its inner layers."""
    from dataclasses import replace

    if isinstance(layer, BidirectionalLayer):
        return replace(
            layer,
            forward_layer=with_sequences(layer.forward_layer, sequences),
            backward_layer=with_sequences(layer.backward_layer, sequences),
        )
    if isinstance(layer, RecurrentOptions):
        return RecurrentOptions(with_sequences(layer.layer, sequences), layer.go_backwards)
    return replace(layer, return_sequences=sequences)
