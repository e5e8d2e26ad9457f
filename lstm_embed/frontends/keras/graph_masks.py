"""Keras' mask propagation in a graph: which mask tensor each tensor carries, which node reads
one. The graph IR holds the result as edges (``Node.mask``, Masking's mask output), so the
stages below follow no Keras rule.

Keras' rules (``compute_mask`` of each class in Keras 3.15 and tf_keras 2.21, and the
``_keras_mask`` Keras 3.15 attaches; the trained models of tests/test_graph_masking.py hold the
result to Keras' predict):
- ``Masking`` makes a new mask from its input (an earlier mask is not combined in);
- the per-timestep layers that support masking pass it on (``MASK_PASSING_KINDS``: Dense,
  TimeDistributed(Dense), Activation, BatchNormalization, LayerNormalization; Dropout is the
  identity here); every other layer drops it (Conv1D, pooling, Reshape...);
- LSTM, GRU and SimpleRNN read it (a masked timestep keeps the state, the output repeats) and
  pass it on with ``return_sequences=True``; their last output and returned states carry none;
- GlobalAveragePooling1D reads it (the mean of the unmasked timesteps) and drops it;
- Attention reads its value's mask (padded keys weigh nothing) and its query's (padded rows
  are 0), and its output carries the query's;
- merges (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate): Keras 3 gives no
  mask when an operand has none, else the OR of the operands' "keep" flags; Keras 2 the AND of
  the operands that have one. Both are the one mask when every masked operand carries the
  same one (the case supported here; differing masks would need a node combining them).

Refused with the layer named: a mask reaching a layer that would read it and is not supported
(Bidirectional, stateful recurrent layers, AdditiveAttention), Attention whose query and value
carry different masks, and a merge of differing masks.
"""

from __future__ import annotations

from dataclasses import dataclass

from lstm_embed.frontends.keras.chain import _keras3_tensors
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.ir.graph import Node
from lstm_embed.kinds import Unsupported
from lstm_embed.kinds.masking import MASK_PASSING_KINDS
from lstm_embed.kinds.merge import OPS

# Keras classes that read a mask and that a graph cannot run under one yet
READS_MASK_UNSUPPORTED = (
    "Bidirectional",
    "AdditiveAttention",
    "MultiHeadAttention",
)


def flow(
    spec: LayerSpec, node: Node, masks_in: list[str | None], keras2: bool
) -> tuple[Node, list[str | None]]:
    """The node with the mask it reads, and the mask each of its outputs carries."""
    layer = node.layer
    if layer.computes_mask:  # its output carries its own mask
        return node, [node.mask_output, None]
    if layer.reads_mask and layer.arity is None:  # Attention: the query's and value's masks
        return _attention(node, masks_in)
    if spec.class_name in OPS:
        if layer.joins_timesteps and any(masks_in):
            raise Unsupported(["a mask into Concatenate on the time axis is not supported yet"])
        return node, [_merged(masks_in, keras2)]
    mask = masks_in[0] if masks_in else None
    if mask is None:
        return node, [None] * len(node.outputs)
    if spec.class_name in READS_MASK_UNSUPPORTED or (layer.recurrent and not layer.streaming):
        raise Unsupported(
            [
                f"the mask of a Masking layer reaches it; a mask is supported into LSTM, GRU,"
                f" SimpleRNN and GlobalAveragePooling1D (not {spec.class_name} yet)"
            ]
        )
    if layer.reads_mask:  # GlobalAveragePooling1D: averages the unmasked steps, drops it
        return Node(layer, node.inputs, node.outputs, mask), [None] * len(node.outputs)
    if layer.recurrent:
        out = mask if layer.return_sequences else None
        return Node(layer, node.inputs, node.outputs, mask), [out] + [None] * (
            len(node.outputs) - 1
        )
    passes = layer.kind in MASK_PASSING_KINDS
    return node, [mask if passes else None] * len(node.outputs)


def _attention(node: Node, masks: list[str | None]) -> tuple[Node, list[str | None]]:
    """Keras: the value's mask leaves padded keys out, the query's zeroes padded rows and is
    the output's mask. Supported: both carry the same mask (self-attention), or neither."""
    query, value = masks[0], masks[1]
    if query is None and value is None:
        return node, [None]
    if query != value or (len(masks) == 3 and masks[2] not in (None, query)):
        raise Unsupported(
            ["its query and value carry different masks (supported: one mask on both, as in"
             " self-attention)"]
        )  # fmt: skip
    return Node(node.layer, node.inputs, node.outputs, query), [query]


def _merged(masks: list[str | None], keras2: bool) -> str | None:
    present = {m for m in masks if m is not None}
    if not present or (not keras2 and None in masks):
        return None
    if len(present) > 1:
        raise Unsupported(
            [
                "its operands carry different masks (from different Masking layers);"
                " supported: one mask, or none"
            ]
        )
    return present.pop()


# ---------------------------------------------------------------------------------------------
# Keras 3 files write the mask a layer reads as a tensor: op layers (NotEqual, Any, LogicalOr,
# LogicalAnd; ConvertToTensor after Attention) computing it from Masking's input, passed as the
# call's ``mask=``. They hold no
# weights; the graph reads them as the Masking node's mask and checks they agree with the rules.

MASK_OPS = ("NotEqual", "Any", "LogicalOr", "LogicalAnd", "ConvertToTensor")


@dataclass(frozen=True)
class MaskSource:
    """any(x != value, axis=-1): Masking's mask of tensor ``x`` (a Keras (layer, index))."""

    tensor: tuple[str, int]
    value: float


class KerasMaskOps:
    """The mask op layers of a Keras 3 config, by name."""

    def __init__(self, entries: list[dict]) -> None:
        self.entries = {e["config"]["name"]: e for e in entries}

    def resolve(self, ref: tuple[str, int, int], user: str) -> MaskSource:
        entry = self.entries.get(ref[0])
        where = f"layer {user!r}: its mask="
        if entry is None:
            raise Unsupported([f"{where} comes from {ref[0]!r} (supported: a Masking layer's)"])
        cls, args = entry["class_name"], _args(entry)
        if cls == "Any":
            config = entry.get("config") or {}
            inner = self.entries.get(args[0][0]) if len(args) == 1 else None
            if config.get("axis") not in (-1, 2) or config.get("keepdims") or inner is None:
                raise Unsupported([f"{where} is not any(x != value) over the features"])
            return _not_equal(inner, where)
        if cls == "ConvertToTensor" and len(args) == 1:  # Attention's mask passed on
            return self.resolve(args[0], user)
        if cls in ("LogicalOr", "LogicalAnd") and len(args) == 2:
            first, second = (self.resolve(a, user) for a in args)
            if first != second:
                raise Unsupported([f"{where} combines different masks (supported: one mask)"])
            return first
        raise Unsupported([f"{where} comes from {cls} (supported: a Masking layer's)"])


def _args(entry: dict) -> list[tuple[str, int, int]]:
    node = (entry.get("inbound_nodes") or [{}])[0]
    found: list = []
    _keras3_tensors(node.get("args") if isinstance(node, dict) else None, found, 0)
    return found


def _not_equal(entry: dict, where: str) -> MaskSource:
    node = (entry.get("inbound_nodes") or [{}])[0]
    args = node.get("args") if isinstance(node, dict) else None
    tensors = _args(entry)
    if entry["class_name"] != "NotEqual" or not args or len(args) != 2 or len(tensors) != 1:
        raise Unsupported([f"{where} is not any(x != value) over the features"])
    value = args[1]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise Unsupported([f"{where} compares with {value!r}, not a number"])
    return MaskSource((tensors[0][0], tensors[0][2]), float(value))


def check_keras3_mask(node: Node, source: MaskSource, tensor: str, masking: dict) -> None:
    """The mask= Keras 3 wrote for ``node`` (``source`` on graph tensor ``tensor``) is the
    mask the rules found: that of a Masking node on the same tensor with the same value."""
    found = masking.get(node.mask) if node.mask else None
    if found != (tensor, source.value):
        raise Unsupported(
            [
                "its mask= (in the file) is not the mask Keras' propagation gives here"
                " (supported: the mask of a Masking layer, passed on by Keras' rules)"
            ]
        )
