"""Graph IR: nodes over named tensors, several inputs and outputs; a chain is the one-path case.

A tensor has a shape after the batch axis of any rank and a dtype; the stages below the
frontends support the ranks the kinds run: (timesteps, features) sequences and (features,)
vectors. A node applies one layer (a float IR layer, or its quantized form) to its input
tensors and names its output tensors: the layer's output, then, for a recurrent layer with
Keras' return_state=True, its final states (``state_names``: h; h and c); for a layer that
computes a mask (Masking), the mask.

A mask is a tensor like any other (as Keras' mask and ONNX's sequence_lens are): dtype "bool",
shape (timesteps, 1), True at a padded timestep. A node that reads one (``Node.mask``: a
recurrent layer skipping the padded timesteps, an average over the unmasked ones) names it;
which mask reaches which node is the frontend's rule (Keras' mask propagation), so the stages
below see only these edges.

``Graph`` is frozen and validated when built: unique names, every input of a node produced
before it (the nodes are in topological order; ``Graph.build`` sorts them), every declared
output produced, the shapes each layer accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lstm_embed.ir.model import Model, sequence_out, timesteps_after
from lstm_embed.kinds.base import IRError

FLOAT = "float32"
MASK = "bool"
DTYPES = (FLOAT, "int32", MASK)  # int32: integer ids (an Embedding's input); bool: a mask


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: ``shape`` after the batch axis (None: any length), ``dtype``."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = FLOAT

    def __post_init__(self) -> None:
        if not self.name:
            raise IRError("a tensor has no name")
        if self.dtype not in DTYPES:
            raise IRError(f"tensor '{self.name}': dtype {self.dtype} (supported: {DTYPES})")
        if not self.shape or self.shape[-1] is None:
            raise IRError(f"tensor '{self.name}': shape {self.shape} has no feature size")

    @property
    def features(self) -> int:
        return int(self.shape[-1])  # type: ignore[arg-type]

    @property
    def sequence(self) -> bool:
        """Has a timestep axis: (timesteps, features)."""
        return len(self.shape) == 2

    @property
    def timesteps(self) -> int | None:
        return self.shape[0] if self.sequence else 1

    def values(self, timesteps: int | None = None) -> int:
        """int16 values the tensor holds for one sequence (``timesteps``: the window's)."""
        steps = timesteps if timesteps is not None else self.timesteps
        return (steps or 1) * self.features if self.sequence else self.features


@dataclass(frozen=True)
class Node:
    """One layer applied to named tensors."""

    layer: Any  # FloatLayer, or QLayer in a quantized graph
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    mask: str | None = None  # the mask tensor the node reads (padded timesteps), if any

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def mask_output(self) -> str | None:
        """The mask tensor the node writes (a layer that computes a mask: its 2nd output)."""
        return self.outputs[1] if self.layer.computes_mask and len(self.outputs) > 1 else None

    @property
    def returns_state(self) -> bool:
        return len(self.outputs) > 1 and not self.layer.computes_mask

    @property
    def reads(self) -> tuple[str, ...]:
        """Every tensor the node reads: its inputs, then its mask."""
        return (*self.inputs, self.mask) if self.mask else self.inputs


def output_names(layer: Any, returns_state: bool) -> tuple[str, ...]:
    """A node's tensors: the layer's name, then ``<name>_<state>`` per returned state, or
    ``<name>_mask`` for a layer that computes a mask."""
    if layer.computes_mask:
        return (layer.name, f"{layer.name}_mask")
    states = tuple(f"{layer.name}_{s}" for s in layer.state_names) if returns_state else ()
    return (layer.name, *states)


def layer_output_shapes(node: Node, shapes: list[tuple[int | None, ...]]) -> list[tuple]:
    """The shapes of a node's outputs given its inputs' shapes (the rules of the kinds)."""
    layer = node.layer
    if layer.arity is not None and len(shapes) != layer.arity:
        raise IRError(f"layer '{layer.name}' takes {layer.arity} input(s), given {len(shapes)}")
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1 or ranks.pop() not in (1, 2):
        raise IRError(
            f"layer '{layer.name}': input shapes {shapes} (supported: all (timesteps,"
            " features) or all (features,))"
        )
    sequence = len(shapes[0]) == 2
    if layer.arity is None and layer.joins_timesteps and sequence:  # time-axis Concatenate
        if any(s[0] is None for s in shapes):
            raise IRError(f"layer '{layer.name}': an operand has no declared timestep count")
        return [(sum(s[0] for s in shapes), layer.output_size)]
    if layer.arity is None:  # a merge: sequences of one length
        steps = {s[0] for s in shapes if sequence}
        if len(steps) > 1:
            raise IRError(f"layer '{layer.name}': its inputs have different timesteps {steps}")
        out = (shapes[0][0], layer.output_size) if sequence else (layer.output_size,)
        return [out]
    if shapes[0][-1] != layer.input_size:
        raise IRError(f"layer '{layer.name}': input size {shapes[0][-1]} != {layer.input_size}")
    if layer.recurrent and not sequence:
        raise IRError(f"layer '{layer.name}': its input has no timesteps")
    if layer.needs_vector and sequence:
        raise IRError(f"layer '{layer.name}': its input must be one vector per sequence")
    steps = shapes[0][0] if sequence else 1
    keeps = sequence_out(layer, sequence)
    after = timesteps_after((layer,), steps)[0] if sequence else steps
    out = [(after, layer.output_size) if keeps else (layer.output_size,)]
    if node.mask_output:
        if not sequence:
            raise IRError(f"layer '{layer.name}': a mask needs timesteps")
        out.append((after, 1))
    if node.returns_state:
        if len(node.outputs) != 1 + len(layer.state_names):
            raise IRError(f"layer '{layer.name}': return_state=True is not supported here")
        out += [(layer.output_size,)] * len(layer.state_names)
    return out


@dataclass(frozen=True)
class Graph:
    """Inputs -> nodes (topological order) -> outputs; ``tensors``: every tensor's spec."""

    name: str
    inputs: tuple[TensorSpec, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    source: str = "<in-memory model>"
    meta: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, TensorSpec] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        tensors = {t.name: t for t in self.inputs}
        if len(tensors) != len(self.inputs):
            raise IRError(f"{self.source}: two inputs share a name")
        if not self.inputs or not self.outputs:
            raise IRError(f"{self.source}: a graph needs at least one input and one output")
        for node in self.nodes:
            missing = [t for t in node.reads if t not in tensors]
            if missing:
                raise IRError(
                    f"layer '{node.name}': input {missing[0]!r} is not produced before it"
                )
            if node.mask:
                _check_mask(node, tensors[node.mask], tensors[node.inputs[0]], self.source)
            try:
                shapes = layer_output_shapes(node, [tensors[t].shape for t in node.inputs])
            except IRError as error:
                raise IRError(f"{self.source}: {error}") from error
            for name, shape in zip(node.outputs, shapes, strict=True):
                if name in tensors:
                    raise IRError(f"{self.source}: two tensors are named {name!r}")
                dtype = MASK if name == node.mask_output else FLOAT
                tensors[name] = TensorSpec(name, tuple(shape), dtype)
        for name in self.outputs:
            if name not in tensors:
                raise IRError(f"{self.source}: output {name!r} is not produced by any layer")
        object.__setattr__(self, "tensors", tensors)

    @classmethod
    def build(cls, name: str, inputs, nodes, outputs, source="<in-memory model>", meta=None):
        """A graph from nodes in any order (sorted topologically; a cycle is refused)."""
        return cls(name, tuple(inputs), topological(inputs, nodes, source), tuple(outputs),
                   source, dict(meta or {}))  # fmt: skip

    @classmethod
    def from_chain(cls, model: Model) -> Graph:
        """A chain model as its one-path graph: input 'input', each layer's output named after
        the layer, the last one the output."""
        spec = TensorSpec("input", (model.timesteps, model.input_size))
        nodes, src = [], spec.name
        for layer in model.layers:
            nodes.append(Node(layer, (src,), (layer.name,)))
            src = layer.name
        return cls(model.name, (spec,), tuple(nodes), (src,), model.source, dict(model.meta))

    @property
    def is_chain(self) -> bool:
        """One input, one output, every node one input and one output used once."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            return False
        src = self.inputs[0].name
        for node in self.nodes:
            if node.inputs != (src,) or len(node.outputs) != 1:
                return False
            src = node.outputs[0]
        return src == self.outputs[0]

    @property
    def layers(self) -> tuple:
        return tuple(node.layer for node in self.nodes)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def producer(self, tensor: str) -> tuple[Node | None, int]:
        """The node writing ``tensor`` and which of its outputs it is (None for an input)."""
        for node in self.nodes:
            if tensor in node.outputs:
                return node, node.outputs.index(tensor)
        return None, 0

    def consumers(self, tensor: str) -> list[Node]:
        return [node for node in self.nodes if tensor in node.inputs]

    def describe(self) -> list[str]:
        """One line per node with its inputs (``inspect``)."""
        lines = [f"input {t.name}: {_shape(t.shape)}" for t in self.inputs]
        for node in self.nodes:
            outs = ", ".join(f"{o} {_shape(self.tensors[o].shape)}" for o in node.outputs)
            kind = node.layer.summary()["type"]
            ins = ", ".join(node.inputs) + (f" (mask {node.mask})" if node.mask else "")
            lines.append(f"{node.name} ({kind}) <- {ins} -> {outs}")
        lines.append(f"outputs: {', '.join(self.outputs)}")
        return lines


def _check_mask(node: Node, mask: TensorSpec, x: TensorSpec, source: str) -> None:
    """A node's mask is a bool tensor with its input's timesteps, read by a layer that steps."""
    if mask.dtype != MASK or not x.sequence or mask.shape[0] != x.shape[0]:
        raise IRError(
            f"{source}: layer '{node.name}': mask {mask.name!r} is not a mask of its input's"
            " timesteps"
        )
    if not (node.layer.recurrent or node.layer.reads_mask):
        raise IRError(
            f"{source}: layer '{node.name}': only recurrent layers and GlobalAveragePooling1D"
            " read a mask here"
        )


def _shape(shape: tuple) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def topological(inputs, nodes, source: str = "") -> tuple[Node, ...]:
    """``nodes`` ordered so that every node comes after the producers of its inputs (stable:
    among ready nodes, the given order)."""
    known = {t.name for t in inputs}
    pending, ordered = list(nodes), []
    while pending:
        ready = next((n for n in pending if all(t in known for t in n.reads)), None)
        if ready is None:
            names = ", ".join(n.name for n in pending)
            raise IRError(f"{source}: layers {names} wait on inputs nothing produces (a cycle?)")
        pending.remove(ready)
        ordered.append(ready)
        known.update(ready.outputs)
    return tuple(ordered)
