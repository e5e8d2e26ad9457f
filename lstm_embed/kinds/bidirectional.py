"""Bidirectional: a forward and a backward recurrent layer over the same window, merged.

Keras (3 and tf_keras, checked against both): the backward layer is the forward one's config
with go_backwards flipped (or the file's ``backward_layer``, which Keras requires to differ in
go_backwards and to agree in return_sequences); with return_sequences its outputs are flipped
back into input order before the merge: concat (default), sum, mul or ave. Any recurrent kind
can be inside (LSTM, GRU, SimpleRNN): the inner layers are read through the registry, their
go_backwards applied by ``common.RecurrentOptions``, so a kind needs no code for it.

The backward direction starts from the last timestep, so the layer needs the whole window: a
model holding one has run() only (``streaming = False``). Integer merge: both directions'
int16 outputs (each with one scale) are brought to one output scale with Q15 coefficients,
so that a head sees one format (``QBidirectionalLayer.merge``). Template:
templates/kinds/bidirectional/layer.c.j2, which includes the inner kinds' own templates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds.base import FloatLayer, IRError, LayerTrace, QLayer, QuantContext
from lstm_embed.kinds.common import (
    flags_of,
    run_window,
)
from lstm_embed.quantize import fixedpoint as fp

MERGE_MODES = ("concat", "sum", "mul", "ave")
WHOLE_WINDOW_REASON = "Bidirectional: its backward layer reads the window from its last timestep"
Q15_ONE = 1 << 15  # merge coefficients are Q15: 32768 keeps a value as it is


# ---------------------------------------------------------------------------------------------
# Float IR layer


@dataclass
class BidirectionalTrace(LayerTrace):
    """``output``: the merged outputs as Keras returns them; the inner layers' own traces."""

    forward: LayerTrace | None = None
    backward: LayerTrace | None = None


def merge_float(mode: str, forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    if mode == "concat":
        return np.concatenate([forward, backward], axis=-1)
    if mode == "sum":
        return forward + backward
    if mode == "mul":
        return forward * backward
    return (forward + backward) / 2


@dataclass(frozen=True, eq=False)
class BidirectionalLayer(FloatLayer):
    kind: ClassVar[str] = "bidirectional"
    type_name: ClassVar[str] = "Bidirectional"
    recurrent: ClassVar[bool] = True
    streaming: ClassVar[bool] = False
    whole_window_reason: ClassVar[str] = WHOLE_WINDOW_REASON
    name: str
    input_size: int
    forward_layer: FloatLayer
    backward_layer: FloatLayer
    merge_mode: str = "concat"

    def __post_init__(self) -> None:
        fw, bw = self.forward_layer, self.backward_layer
        if self.merge_mode not in MERGE_MODES:
            raise IRError(
                f"layer '{self.name}': merge_mode {self.merge_mode!r} is not supported"
                f" (supported: {', '.join(MERGE_MODES)})"
            )
        if fw.input_size != self.input_size or bw.input_size != self.input_size:
            raise IRError(f"layer '{self.name}': inner layers take another input size")
        if fw.return_sequences != bw.return_sequences:
            raise IRError(
                f"layer '{self.name}': forward and backward layers differ in return_sequences"
                " (Keras requires them equal)"
            )
        if flags_of(fw)["go_backwards"] == flags_of(bw)["go_backwards"]:
            raise IRError(
                f"layer '{self.name}': forward and backward layers have the same go_backwards"
                " (Keras requires them to differ)"
            )
        if self.merge_mode != "concat" and fw.output_size != bw.output_size:
            raise IRError(
                f"layer '{self.name}': merge_mode {self.merge_mode} needs equal units"
                f" (forward {fw.output_size}, backward {bw.output_size})"
            )

    @property
    def return_sequences(self) -> bool:
        return bool(self.forward_layer.return_sequences)

    @property
    def output_size(self) -> int:
        fw, bw = self.forward_layer.output_size, self.backward_layer.output_size
        return fw + bw if self.merge_mode == "concat" else fw

    @property
    def params(self) -> int:
        return self.forward_layer.params + self.backward_layer.params

    @property
    def keeps_timesteps(self) -> bool:
        return self.return_sequences

    def sublayers(self) -> tuple[FloatLayer, FloatLayer]:
        return self.forward_layer, self.backward_layer

    def subtraces(self, trace: LayerTrace) -> tuple[LayerTrace, LayerTrace]:
        assert isinstance(trace, BidirectionalTrace)
        return trace.forward, trace.backward

    def forward(self, x: np.ndarray) -> BidirectionalTrace:
        tf = self.forward_layer.forward(x)
        tb = self.backward_layer.forward(x)
        yf = self.forward_layer.chain_output(tf)
        yb = self.backward_layer.chain_output(tb)
        if self.return_sequences:  # Keras flips the backward outputs back into input order
            yb = yb[:, ::-1]
        return BidirectionalTrace(merge_float(self.merge_mode, yf, yb), forward=tf, backward=tb)

    def chain_output(self, trace: LayerTrace) -> np.ndarray:
        return trace.output

    def quantize(self, ctx: QuantContext) -> QBidirectionalLayer:
        trace = ctx.trace
        assert isinstance(trace, BidirectionalTrace)
        qf = self.forward_layer.quantize(replace(ctx, trace=trace.forward))
        qb = self.backward_layer.quantize(replace(ctx, trace=trace.backward))
        return quantize_merge(self, qf, qb)

    def summary(self) -> dict[str, Any]:
        fw, bw = self.forward_layer.summary(), self.backward_layer.summary()
        inner = (
            fw["type"]
            if fw["type"] == bw["type"].replace(" (go_backwards=True)", "")
            else (f"{fw['type']}, {bw['type']}")
        )
        units = fw["units"] if fw["units"] == bw["units"] else f"{fw['units']}+{bw['units']}"
        return {
            "type": f"Bidirectional({inner}, {self.merge_mode})",
            "activation": fw["activation"],
            "units": units,
            "params_formula": f"{fw['params_formula']} + {bw['params_formula']}",
        }

    def flash_bytes(self, bits: int) -> int:
        return self.forward_layer.flash_bytes(bits) + self.backward_layer.flash_bytes(bits)

    def dequantized(self, qlayer: QBidirectionalLayer, feature_scale: np.ndarray) -> Any:
        return replace(
            self,
            forward_layer=self.forward_layer.dequantized(qlayer.forward_layer, feature_scale),
            backward_layer=self.backward_layer.dequantized(qlayer.backward_layer, feature_scale),
        )


def _scale(qlayer: QLayer) -> float:
    scale = np.asarray(qlayer.output_feature_scale, np.float64)
    if not np.all(scale == scale[0]):  # every recurrent kind has one output scale
        raise ValueError(f"layer '{qlayer.name}': outputs with several scales")
    return float(scale[0])


def quantize_merge(layer: BidirectionalLayer, qf: QLayer, qb: QLayer) -> QBidirectionalLayer:
    """One output scale for the merged values: concat keeps the coarser of the two (the finer
    half scaled down), sum the sum of both, ave their mean, mul their product (times 2**15,
    since the product of two int16 is shifted right by 15); coefficients a, b in Q15."""
    sf, sb = _scale(qf), _scale(qb)
    mode = layer.merge_mode
    if mode == "concat":
        out = max(sf, sb)
        a, b = round(Q15_ONE * sf / out), round(Q15_ONE * sb / out)
    elif mode == "mul":
        out, a, b = sf * sb * Q15_ONE, Q15_ONE, Q15_ONE
    else:
        out = sf + sb if mode == "sum" else (sf + sb) / 2
        a = round(Q15_ONE * sf / (sf + sb))
        b = Q15_ONE - a  # a + b = 2**15: the merged value cannot leave int16
    return QBidirectionalLayer(
        name=layer.name,
        input_size=layer.input_size,
        forward_layer=qf,
        backward_layer=qb,
        merge_mode=mode,
        merge_forward=int(a),
        merge_backward=int(b),
        output_scale=float(out),
    )


# ---------------------------------------------------------------------------------------------
# Quantized layer and its integer reference


@dataclass
class BidirectionalState:
    forward: Any
    backward: Any


@dataclass(frozen=True, eq=False)
class QBidirectionalLayer(QLayer):
    """Output: int16 with one scale (``output_scale``), from each direction's int16 outputs
    by the Q15 coefficients ``merge_forward`` and ``merge_backward`` (``merge``)."""

    kind: ClassVar[str] = "bidirectional"
    recurrent: ClassVar[bool] = True
    streaming: ClassVar[bool] = False
    whole_window_reason: ClassVar[str] = WHOLE_WINDOW_REASON
    template: ClassVar[str] = "kinds/bidirectional/layer.c.j2"
    name: str
    input_size: int
    forward_layer: QLayer
    backward_layer: QLayer
    merge_mode: str
    merge_forward: int
    merge_backward: int
    output_scale: float

    @property
    def return_sequences(self) -> bool:
        return bool(self.forward_layer.return_sequences)

    @property
    def output_size(self) -> int:
        fw, bw = self.forward_layer.output_size, self.backward_layer.output_size
        return fw + bw if self.merge_mode == "concat" else fw

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.full(self.output_size, self.output_scale)

    @property
    def macs(self) -> int:
        return self.forward_layer.macs + self.backward_layer.macs

    @property
    def weight_bits(self) -> int:
        return max(self.forward_layer.weight_bits, self.backward_layer.weight_bits)

    def sublayers(self) -> tuple[QLayer, QLayer]:
        return self.forward_layer, self.backward_layer

    # -- integer reference (the C equals it bit for bit) --

    def initial_state(self, batch: int) -> BidirectionalState:
        return BidirectionalState(
            self.forward_layer.initial_state(batch), self.backward_layer.initial_state(batch)
        )

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        raise ValueError(f"layer '{self.name}' has no step ({WHOLE_WINDOW_REASON})")

    def window(
        self, x_q: np.ndarray, state: BidirectionalState, tables: dict, traces: list | None
    ) -> np.ndarray:
        """Both directions over the window, then the merge; each step's traces go to
        ``traces`` as a (forward, backward) pair of that processing step."""
        forward_traces: list = []
        backward_traces: list = []
        yf = run_window(self.forward_layer, x_q, state.forward, tables, forward_traces)
        yb = run_window(self.backward_layer, x_q, state.backward, tables, backward_traces)
        if self.return_sequences:
            yb = yb[:, ::-1]
        if traces is not None:
            traces.extend(zip(forward_traces, backward_traces, strict=True))
        return self.merge(yf, yb)

    def merge(self, forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
        """int16 outputs of both directions -> the merged int16 output."""
        f, b = np.asarray(forward, np.int64), np.asarray(backward, np.int64)
        a, c = self.merge_forward, self.merge_backward
        if self.merge_mode == "concat":
            return np.concatenate([_times(f, a), _times(b, c)], axis=-1)
        if self.merge_mode == "mul":
            return fp.saturate_s16(fp.rounding_shift_right(f * b, 15))
        return fp.saturate_s16(fp.rounding_shift_right(f * a + b * c, 15))

    def tables_needed(self) -> set[str]:
        return self.forward_layer.tables_needed() | self.backward_layer.tables_needed()

    # -- emitter --

    def uses(self) -> set[str]:
        return self.forward_layer.uses() | self.backward_layer.uses()

    def state_fields(self) -> list[dict[str, Any]]:
        """The inner layers' members, told apart by a suffix after the layer index."""
        return [
            {**field, "suffix": suffix}
            for suffix, layer in (("f", self.forward_layer), ("b", self.backward_layer))
            for field in layer.state_fields()
        ]

    def shared_scratch(self) -> list[dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for field in [*self.forward_layer.shared_scratch(), *self.backward_layer.shared_scratch()]:
            if field["name"] not in merged or field["size"] > merged[field["name"]]["size"]:
                merged[field["name"]] = field
        return list(merged.values())

    def scratch_width(self) -> int:
        return max(self.forward_layer.scratch_width(), self.backward_layer.scratch_width())

    @property
    def state_bytes(self) -> int:
        return self.forward_layer.state_bytes + self.backward_layer.state_bytes

    def context(self, index: Any) -> dict[str, Any]:
        inners = []
        for suffix, layer, flip in (
            ("f", self.forward_layer, False),
            ("b", self.backward_layer, True),
        ):
            inner_index = f"{index}{suffix}"
            output = layer.state_fields()[0]["name"]  # every recurrent kind's output state
            inners.append(
                {
                    **layer.context(inner_index),
                    "kind": layer.kind,
                    "template": layer.template,
                    "call_template": layer.template.replace(".c.j2", "_call.c.j2"),
                    "direction": "backward" if flip else "forward",
                    "reads_backwards": flags_of(layer)["go_backwards"],
                    "flip_output": flip,
                    "src": "src",
                    "dst": f"state->{output}_{inner_index}",
                    "tmp": "state->scratch_q[0]",
                    "output_size": layer.output_size,
                }
            )
        return {
            "index": index,
            "name": self.name,
            "input_size": self.input_size,
            "output_size": self.output_size,
            "return_sequences": self.return_sequences,
            "merge_mode": self.merge_mode,
            "merge_forward": self.merge_forward,
            "merge_backward": self.merge_backward,
            "output_format": f"int16 x {self.output_scale:.6g}",
            "inners": inners,
        }

    def format(self) -> str:
        return (
            f"forward {self.forward_layer.format()}; backward {self.backward_layer.format()};"
            f" {self.merge_mode} int16 x {self.output_scale:.3g}"
        )

    def flash_bytes(self) -> dict[str, int]:
        fw, bw = self.forward_layer.flash_bytes(), self.backward_layer.flash_bytes()
        return {key: fw.get(key, 0) + bw.get(key, 0) for key in fw.keys() | bw.keys()}


def _times(values: np.ndarray, coefficient: int) -> np.ndarray:
    """values * coefficient / 2**15, rounded (exact for coefficient 2**15)."""
    return fp.saturate_s16(fp.rounding_shift_right(values * coefficient, 15))
