"""Random graph models for the fuzzer (``python -m lstm_embed.tools.fuzz --graphs``).

A ``GraphSpec`` holds the shapes of a random Functional model (sequence and static inputs, T,
how many layers); its seed draws the rest: branches (a tensor read by several layers), merges
(Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, broadcast operands of one
feature), recurrent layers with return_state (h; h and c) whose states feed later layers or are
returned, Attention (query, value and an optional key from anywhere, causal, scaled; some
AdditiveAttention or score_mode="concat"), global poolings, Concatenate on the time axis (read by
one recurrent layer or pooling), Masking branches (a mask read by recurrent layers, a
self-Attention and GlobalAveragePooling1D), Dense layers on sequences and vectors, the
per-timestep layers around the core, and several outputs (the graph's unused tensors,
sometimes a used one or one returned twice). The graph is built as the IR's ``Graph``
directly, as the chain fuzzer builds ``Model``s.

Each graph is converted and its C built for the host with ASan/UBSan; run, run_f32 (on the
whole window and, unless its sequences differ in length, on a shorter one), and step,
step_f32 where the graph streams (each timestep's output of a vector against run() of the
window up to it), must equal the numpy
reference (``reference.graph_run``) bit for bit. ``check_qemu_graph`` does the same for run()
and step() in QEMU (``targets.graph_firmware``).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit.graph_render import fixed_windows
from lstm_embed.graph_pipeline import convert_graph
from lstm_embed.ir.graph import Graph, Node, TensorSpec, layer_output_shapes, output_names
from lstm_embed.ir.graph_forward import forward
from lstm_embed.kinds.attention import AttentionLayer
from lstm_embed.kinds.base import Diverges
from lstm_embed.kinds.bidirectional import MERGE_MODES, BidirectionalLayer
from lstm_embed.kinds.common import RecurrentOptions
from lstm_embed.kinds.dense import DenseLayer
from lstm_embed.kinds.masking import MaskingLayer
from lstm_embed.kinds.merge import OPS, TIME_CONCAT, MergeLayer
from lstm_embed.kinds.pooling import PoolingLayer
from lstm_embed.kinds.simple_rnn import ACTIVATIONS as RNN_ACTIVATIONS
from lstm_embed.quantize.graph_quantizer import QGraph
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import graph_run
from lstm_embed.targets.hostbuild import HostToolError
from lstm_embed.tools.fuzz_around import around_layers
from lstm_embed.tools.fuzz_layers import WEIGHT_KINDS, LSTMSpec, recurrent_layer, weights

GRAPH_STREAM = 0x6EA
TIMESTEPS = (1, 24)  # shorter than a chain's: the reference runs every prefix for step()
WIDTHS = (1, 24)  # feature sizes of the graph's tensors drawn from a small palette of these
NODES = (2, 10)  # layers drawn (merges may add a Dense projection each)
MAX_OUTPUTS = 3  # unused tensors beyond this are concatenated into one output
CALIBRATION_ROWS = 8
# per-timestep kinds of fuzz_around a graph may hold (T-changing ones are refused in graphs)
SEQUENCE_AROUND = ("relu", "leaky_relu", "sigmoid", "tanh", "batch_norm", "layer_norm",
                   "conv_causal", "affine", "conv_same", "avgpool_same")  # fmt: skip
VECTOR_AROUND = ("relu", "leaky_relu", "sigmoid", "tanh", "batch_norm", "layer_norm", "affine")
# draw weights of the layers (operation name, weight); merges and recurrent layers most often
OPERATIONS = (("recurrent", 4), ("dense", 3), ("around", 2), ("merge", 4), ("attention", 1.5),
              ("pool", 1))  # fmt: skip
# the kinds drawn from a stream of their own (NEW_GRAPH_STREAM), so that the seeds drawn before
# them keep their graphs: after each operation, in NEW_OPERATION_ODDS of them, a time-axis
# Concatenate (into a recurrent layer or a global pooling) or a Masking branch; and additive
# scores (AdditiveAttention, Attention(score_mode="concat")) in ADDITIVE_ODDS of the Attentions
NEW_GRAPH_STREAM = 0x6EB
NEW_OPERATION_ODDS = 0.12
ADDITIVE_ODDS = 0.4
# per-timestep kinds that pass a mask on (kinds.masking.MASK_PASSING_KINDS), for masked branches
MASK_PASSING_AROUND = ("relu", "sigmoid", "tanh", "batch_norm", "layer_norm")
# the bound for trained models (max abs error within 5% of the output range), reported
# for the random graphs as a count
FLOAT_RANGE_FRACTION = 0.05
# outcomes that are not bugs (as the chain fuzzer's ACCEPTED): the float model overflows; the
# image does not fit an emulated board
ACCEPTED = ("ok", "diverges", "too_big")


@dataclass(frozen=True)
class GraphSpec:
    """The shapes of a random graph; ``seed`` draws its layers and weights."""

    seed: int
    timesteps: int
    sequence_inputs: tuple[int, ...]  # feature sizes of the (T, m) inputs
    static_inputs: tuple[int, ...]  # feature sizes of the (m,) inputs
    layers: int  # layers drawn before the outputs are tied up
    calibration_scale: float = 1.0
    weight_bits: int = 8

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class GraphOutcome:
    """As the chain fuzzer's ``Outcome``: status "ok", "mismatch", "crash", "rejected" (the
    converter refused, saying why), "diverges"; ``error`` the integer model's largest error
    against the float graph on the calibration data, as a fraction of the float outputs'
    range (a figure, not a verdict: random weights are no trained model)."""

    spec: GraphSpec
    status: str
    detail: str = ""
    board: str = "host"
    error: float | None = None
    graph: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- drawing


def _log_uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    return int(min(high, math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1))))))


def random_graph_spec(seed: int) -> GraphSpec:
    rng = np.random.default_rng([seed, GRAPH_STREAM])
    sequences = tuple(_log_uniform_int(rng, 1, 16) for _ in range(1 + (rng.random() < 0.3)))
    statics = tuple(_log_uniform_int(rng, 1, 12) for _ in range(int(rng.choice([0, 0, 1, 2]))))
    scale = 0.0 if rng.random() < 0.03 else float(10 ** rng.uniform(-2, 2))
    return GraphSpec(
        seed=seed,
        timesteps=_log_uniform_int(rng, *TIMESTEPS),
        sequence_inputs=sequences,
        static_inputs=statics,
        layers=int(rng.integers(NODES[0], NODES[1] + 1)),
        calibration_scale=scale,
        weight_bits=16 if rng.random() < 0.2 else 8,
    )


class _Builder:
    """The graph being drawn: its tensors (name -> (features, is a sequence)), nodes, and
    which tensors a layer reads."""

    def __init__(self, spec: GraphSpec) -> None:
        self.spec = spec
        self.rng = np.random.default_rng([spec.seed, GRAPH_STREAM, 1])
        self.new_rng = np.random.default_rng([spec.seed, NEW_GRAPH_STREAM])
        self.inputs = [TensorSpec(f"seq_{k}", (spec.timesteps, m))
                       for k, m in enumerate(spec.sequence_inputs)]  # fmt: skip
        self.inputs += [TensorSpec(f"static_{k}", (m,)) for k, m in enumerate(spec.static_inputs)]
        self.tensors: dict[str, tuple[int, bool]] = {
            t.name: (t.features, t.sequence) for t in self.inputs
        }
        self.nodes: list[Node] = []
        self.used: set[str] = set()
        self.count = 0
        palette = {_log_uniform_int(self.rng, *WIDTHS) for _ in range(int(self.rng.integers(1, 4)))}
        self.palette = sorted(palette | set(spec.sequence_inputs))

    # -- helpers

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def width(self) -> int:
        return int(self.rng.choice(self.palette))

    def pick(self, sequence: bool | None = None, width: int | None = None) -> str | None:
        """A tensor (an unread one more often), of the given rank and width if asked."""
        names = [
            n
            for n, (w, s) in self.tensors.items()
            if (sequence is None or s == sequence) and (width is None or w == width)
        ]
        if not names:
            return None
        unread = [n for n in names if n not in self.used]
        pool = unread if unread and self.rng.random() < 0.6 else names
        return str(pool[int(self.rng.integers(len(pool)))])

    def add(
        self,
        layer: Any,
        inputs: tuple[str, ...],
        returns_state: bool = False,
        mask: str | None = None,
    ) -> list[str]:
        node = Node(layer, inputs, output_names(layer, returns_state), mask)
        steps = self.spec.timesteps
        shapes = [(steps, w) if s else (w,) for w, s in (self.tensors[t] for t in inputs)]
        for out, shape in zip(node.outputs, layer_output_shapes(node, shapes), strict=True):
            self.tensors[out] = (int(shape[-1]), len(shape) == 2)
        self.nodes.append(node)
        self.used.update(inputs)
        return list(node.outputs)

    def kind(self) -> str:
        return "normal" if self.rng.random() < 0.6 else str(self.rng.choice(WEIGHT_KINDS))

    def dense(self, src: str, units: int) -> str:
        size = self.tensors[src][0]
        bias = weights(self.rng, self.kind(), (units,)) if self.rng.random() < 0.8 else None
        activation = str(self.rng.choice(["linear", "relu", "tanh", "sigmoid", "softmax"]))
        kernel = weights(self.rng, self.kind(), (size, units))
        return self.add(DenseLayer(self.name("dense"), size, units, kernel, bias, activation),
                        (src,))[0]  # fmt: skip

    def projected(self, src: str, width: int) -> str:
        """``src`` if it has ``width`` features, else a Dense of it to that width."""
        return src if self.tensors[src][0] == width else self.dense(src, width)

    # -- operations

    def recurrent(self) -> None:
        src = self.pick(sequence=True)
        assert src is not None  # a sequence input always exists
        rng = self.rng
        kind = str(rng.choice(["lstm", "gru", "simple_rnn"], p=[0.45, 0.3, 0.25]))
        # an LSTM's cell is int32 with int16 weights: its states are not returned then
        wide_cell = kind == "lstm" and self.spec.weight_bits == 16
        returns_state = bool(rng.random() < 0.45) and not wide_cell
        bidirectional = (
            None if returns_state or rng.random() > 0.1 else str(rng.choice(MERGE_MODES))
        )
        go_backwards = not returns_state and bool(rng.random() < 0.1)
        la = LSTMSpec(
            units=self.width(),
            recurrent_activation=str(rng.choice(["sigmoid", "hard_sigmoid"])),
            weights=self.kind(),
            bias=None if rng.random() < 0.2 else self.kind(),
            kind=kind,
            activation=str(rng.choice(RNN_ACTIVATIONS)) if kind == "simple_rnn" else "tanh",
            go_backwards=go_backwards,
            reset_after=bool(rng.random() < 0.75),
            bidirectional=bidirectional,
        )
        sequences = bool(rng.random() < 0.5)
        size = self.tensors[src][0]
        name = self.name(kind)
        layer = recurrent_layer(rng, la, name, size, sequences)
        if bidirectional:
            backward = recurrent_layer(rng, la, f"backward_{name}", size, sequences)
            backward = RecurrentOptions(backward, go_backwards=not go_backwards)
            layer = BidirectionalLayer(f"bidirectional_{name}", size, layer, backward,
                                       bidirectional)  # fmt: skip
        self.add(layer, (src,), returns_state)

    def dense_op(self) -> None:
        src = self.pick()
        assert src is not None
        self.dense(src, self.width())

    def around(self) -> None:
        src = self.pick()
        assert src is not None
        size, sequence = self.tensors[src]
        kinds = SEQUENCE_AROUND if sequence else VECTOR_AROUND
        kind = str(self.rng.choice(kinds))
        for layer in around_layers(self.rng, kind, self.name(kind), size, self.spec.timesteps):
            src = self.add(layer, (src,))[0]

    def merge(self) -> None:
        rng = self.rng
        op = str(rng.choice(list(OPS.values())))
        first = self.pick()
        assert first is not None
        width, sequence = self.tensors[first]
        count = 2 if op in ("subtract", "multiply") else int(rng.integers(2, 4))
        operands = [first]
        for _ in range(count - 1):
            if op == "concatenate":
                other = self.pick(sequence)
            elif rng.random() < 0.15:  # Keras broadcasts an operand of one feature
                other = self.pick(sequence, 1) or self.dense(self.pick(sequence) or first, 1)
            else:
                other = self.pick(sequence, width)
                if other is None or (other in operands and rng.random() < 0.7):
                    other = self.projected(self.pick(sequence) or first, width)
            operands.append(other or first)
        sizes = tuple(self.tensors[t][0] for t in operands)
        widest = max(sizes)
        if op != "concatenate" and any(s not in (1, widest) for s in sizes):
            operands = [self.projected(t, widest) if self.tensors[t][0] != 1 else t
                        for t in operands]  # fmt: skip
            sizes = tuple(self.tensors[t][0] for t in operands)
        type_name = next(k for k, v in OPS.items() if v == op)
        self.add(MergeLayer(self.name(op), op, sizes, type_name=type_name), tuple(operands))

    def attention(self) -> None:
        rng = self.rng
        query = self.pick(sequence=True)
        value = self.pick(sequence=True)
        assert query is not None and value is not None
        width = self.tensors[query][0]
        if rng.random() < 0.4:
            key = self.projected(self.pick(sequence=True) or query, width)
            operands: tuple[str, ...] = (query, value, key)
        else:
            operands = (query, self.projected(value, width))
        sizes = tuple(self.tensors[t][0] for t in operands)
        use_scale = bool(rng.random() < 0.5)
        scale = float(rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(-2, 1)) if use_scale else 1.0
        causal = bool(rng.random() < 0.5)
        layer = self.additive(sizes, causal) or AttentionLayer(
            self.name("attention"), sizes, scale, use_scale, causal
        )
        self.add(layer, operands)

    def additive(self, sizes: tuple[int, ...], causal: bool) -> AttentionLayer | None:
        """AdditiveAttention or Attention(score_mode="concat") in ADDITIVE_ODDS of the
        Attentions (None: the dot form drawn as before), as the Keras frontend reads them."""
        rng = self.new_rng
        if rng.random() >= ADDITIVE_ODDS:
            return None
        use_scale = bool(rng.random() < 0.7)
        if rng.random() < 0.5:  # AdditiveAttention: a weight per feature (ones without)
            w = tuple(float(v) for v in rng.normal(size=sizes[0])) if use_scale else None
            return AttentionLayer(self.name("additive_attention"), sizes, 1.0, use_scale, causal,
                                  additive=True, score_weights=w or (1.0,) * sizes[0],
                                  title="AdditiveAttention",
                                  weight_count=sizes[0] if use_scale else 0)  # fmt: skip
        scale = float(10 ** rng.uniform(-1, 0.5)) if use_scale else 1.0
        w = float(rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(-1, 0.5))
        return AttentionLayer(self.name("attention_concat"), sizes, scale, use_scale, causal,
                              additive=True, score_weights=(w,) * sizes[0],
                              title="Attention (concat)",
                              weight_count=1 + int(use_scale))  # fmt: skip

    def new_operation(self) -> None:
        """One of the kinds of NEW_GRAPH_STREAM, in NEW_OPERATION_ODDS of the calls."""
        if self.new_rng.random() >= NEW_OPERATION_ODDS:
            return
        if self.new_rng.random() < 0.5:
            self.time_concat()
        else:
            self.masked_branch()

    def reader(self, src: str, sequences: bool, mask: str | None = None) -> str:
        """A streaming LSTM, GRU or SimpleRNN (not Bidirectional, not go_backwards: a mask
        reaches them) of ``src``, reading ``mask`` when given; its output."""
        rng = self.new_rng
        kind = str(rng.choice(["lstm", "gru", "simple_rnn"]))
        la = LSTMSpec(
            units=self.width(), recurrent_activation=str(rng.choice(["sigmoid", "hard_sigmoid"])),
            weights=self.kind(), bias=None if rng.random() < 0.2 else self.kind(), kind=kind,
            activation=str(rng.choice(RNN_ACTIVATIONS)) if kind == "simple_rnn" else "tanh",
            reset_after=bool(rng.random() < 0.75),
        )  # fmt: skip
        layer = recurrent_layer(rng, la, self.name(kind), self.tensors[src][0], sequences)
        return self.add(layer, (src,), mask=mask)[0]

    def time_concat(self) -> None:
        """Concatenate(axis=1) of two or three sequences of one width (a Dense projecting any
        other) into a recurrent layer returning one vector, or a global pooling: the joined
        sequence (a longer T than every other tensor's) is read by that layer alone."""
        rng = self.new_rng
        first = self.pick(sequence=True)
        assert first is not None
        width = self.tensors[first][0]
        operands = [first]
        for _ in range(int(rng.integers(1, 3))):
            operands.append(self.projected(self.pick(sequence=True) or first, width))
        steps = self.spec.timesteps
        joined = self.add(MergeLayer(self.name("concatenate_time"), TIME_CONCAT,
                                     (width,) * len(operands), type_name="Concatenate",
                                     part_steps=(steps,) * len(operands)),
                          tuple(operands))[0]  # fmt: skip
        if rng.random() < 0.6:
            self.reader(joined, sequences=False)
        else:
            mode = str(rng.choice(["average", "max"]))
            type_name = "GlobalAveragePooling1D" if mode == "average" else "GlobalMaxPooling1D"
            self.add(PoolingLayer(self.name(f"global_{mode}"), width, mode, type_name,
                                  whole=True), (joined,))  # fmt: skip
        del self.tensors[joined]  # T differs from the window's: no other layer reads it

    def masked_branch(self) -> None:
        """Masking of a sequence, per-timestep layers that pass the mask on, a recurrent layer
        reading it, and (when that returns sequences) a layer reading its mask again: another
        recurrent layer, GlobalAveragePooling1D, or a dot Attention of the sequence with
        itself (one mask on query and value) pooled. Only the branch's last tensor, one
        vector without a mask, is left for other layers (Keras would pass the mask on to
        them); the mask itself is never an output (the converter refuses that)."""
        rng = self.new_rng
        src = self.pick(sequence=True)
        assert src is not None
        size = self.tensors[src][0]
        value = float(rng.choice([0.0, 0.0, -1.0]))
        masked, mask = self.add(MaskingLayer(self.name("masking"), size, value), (src,))
        branch = [masked, mask]
        x = masked
        for _ in range(int(rng.integers(0, 3))):
            if rng.random() < 0.5:
                x = self.dense(x, self.width())
            else:
                kind = str(rng.choice(MASK_PASSING_AROUND))
                for layer in around_layers(rng, kind, self.name(kind), self.tensors[x][0],
                                           self.spec.timesteps):  # fmt: skip
                    x = self.add(layer, (x,))[0]
            branch.append(x)
        sequences = bool(rng.random() < 0.6)
        x = self.reader(x, sequences, mask)
        if sequences:
            branch.append(x)
            then = str(rng.choice(["recurrent", "pool", "attention"]))
            if then == "recurrent":
                x = self.reader(x, False, mask)
            else:
                if then == "attention":
                    width = self.tensors[x][0]
                    layer = AttentionLayer(self.name("attention"), (width, width), 1.0, False,
                                           bool(rng.random() < 0.5))  # fmt: skip
                    x = self.add(layer, (x, x), mask=mask)[0]
                    branch.append(x)
                width = self.tensors[x][0]
                x = self.add(PoolingLayer(self.name("global_average"), width, "average",
                                          "GlobalAveragePooling1D", whole=True), (x,),
                             mask=mask)[0]  # fmt: skip
        for name in branch:
            self.tensors.pop(name, None)

    def pool(self) -> None:
        src = self.pick(sequence=True)
        assert src is not None
        mode = str(self.rng.choice(["average", "max"]))
        type_name = "GlobalAveragePooling1D" if mode == "average" else "GlobalMaxPooling1D"
        size = self.tensors[src][0]
        self.add(PoolingLayer(self.name(f"global_{mode}"), size, mode, type_name, whole=True),
                 (src,))  # fmt: skip

    def outputs(self) -> list[str]:
        """The unread tensors (every input read first), at most MAX_OUTPUTS: the others of
        one rank concatenated; sometimes a read tensor returned too, or one twice."""
        for t in self.inputs:
            if t.name not in self.used:
                self.dense(t.name, self.width())
        leaves = [n for n in self.tensors if n not in self.used]
        while len(leaves) > MAX_OUTPUTS:
            by_rank = [[n for n in leaves if self.tensors[n][1] == s] for s in (True, False)]
            group = max(by_rank, key=len)[-2:]
            sizes = tuple(self.tensors[n][0] for n in group)
            merged = self.add(MergeLayer(self.name("concatenate"), "concatenate", sizes,
                                         type_name="Concatenate"), tuple(group))[0]  # fmt: skip
            leaves = [n for n in leaves if n not in group] + [merged]
        inputs = {t.name for t in self.inputs}
        read = [n for n in self.used if n not in inputs]
        if read and self.rng.random() < 0.25:
            leaves.append(str(self.rng.choice(sorted(read))))
        if self.rng.random() < 0.1:
            leaves.append(leaves[0])
        return leaves


def build_graph(spec: GraphSpec) -> Graph:
    builder = _Builder(spec)
    operations = {"recurrent": builder.recurrent, "dense": builder.dense_op,
                  "around": builder.around, "merge": builder.merge,
                  "attention": builder.attention, "pool": builder.pool}  # fmt: skip
    names, odds = zip(*OPERATIONS, strict=True)
    p = np.array(odds) / np.sum(odds)
    for _ in range(spec.layers):
        operations[str(builder.rng.choice(names, p=p))]()
        builder.new_operation()
    outputs = builder.outputs()
    source = f"fuzz graph spec {spec.to_json()}"
    return Graph.build("net", builder.inputs, builder.nodes, outputs, source)


# ---------------------------------------------------------------------------------- inputs


@dataclass
class GraphCase:
    spec: GraphSpec
    graph: Graph
    calibration: dict[str, np.ndarray]  # float, CALIBRATION_ROWS per input
    x: dict[str, np.ndarray]  # float32 test inputs, extreme values included
    x_q: dict[str, np.ndarray]  # int16 test inputs, extremes included


def _float_rows(rng: np.random.Generator, calibration: np.ndarray, scale: float) -> np.ndarray:
    """calibration-like, zeros, +/-1e6, 100x calibration, NaN/Inf and 1e30 (one input's rows)."""
    shape = calibration.shape[1:]
    far = rng.normal(size=shape) * max(scale, 1e-3) * 100
    nonfinite = rng.choice([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30], shape)
    return np.stack([calibration[0], np.zeros(shape), rng.choice([-1e6, 1e6], shape), far,
                     nonfinite]).astype(np.float32)  # fmt: skip


def _int_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    extremes = np.array([-32768, 32767], np.int64)
    alternating = extremes[np.indices(shape).sum(axis=0) % 2]
    return np.stack([rng.integers(-32768, 32768, shape), rng.integers(-300, 300, shape),
                     np.full(shape, -32768), np.full(shape, 32767),
                     alternating]).astype(np.int16)  # fmt: skip


def build_graph_case(spec: GraphSpec) -> GraphCase:
    graph = build_graph(spec)
    rng = np.random.default_rng([spec.seed, GRAPH_STREAM, 2])
    calibration, x, x_q = {}, {}, {}
    for t in graph.inputs:
        shape = (spec.timesteps, t.features) if t.sequence else (t.features,)
        calibration[t.name] = rng.normal(size=(CALIBRATION_ROWS, *shape)) * spec.calibration_scale
        x[t.name] = _float_rows(rng, calibration[t.name], spec.calibration_scale)
        x_q[t.name] = _int_rows(rng, shape)
    return GraphCase(spec, graph, calibration, x, x_q)


# ---------------------------------------------------------------------------------- checking


def _prefix(graph: Graph, inputs: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
    """The inputs cut to their first ``steps`` timesteps (vectors kept)."""
    return {t.name: inputs[t.name][:, :steps] if t.sequence else inputs[t.name]
            for t in graph.inputs}  # fmt: skip


def expected_graph_output(qgraph: QGraph, entry: str, x: dict[str, np.ndarray]) -> list:
    """What ``entry`` must return on x by the reference alone, shaped as ``run_graph_host``'s:
    run/run_f32 the outputs of the window; step/step_f32 a row per timestep of every output
    (a sequence output's row t; a vector output's value after timestep t, i.e. run() of the
    window up to t)."""
    graph = qgraph.graph
    floats = entry.endswith("_f32")
    with np.errstate(over="ignore", invalid="ignore"):
        if floats:
            x = graph_run.quantize_inputs(qgraph, x)

        def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            y = graph_run.run(qgraph, inputs)
            return graph_run.dequantize(qgraph, y) if floats else y

        whole = run(x)
        if not entry.startswith("step"):
            return whole
        steps = next(x[t.name].shape[1] for t in graph.inputs if t.sequence)
        prefixes = [run(_prefix(graph, x, s)) for s in range(1, steps + 1)]
    return [
        y if graph.tensors[name].sequence else np.stack([p[k] for p in prefixes], axis=1)
        for k, (name, y) in enumerate(zip(graph.outputs, whole, strict=True))
    ]


def compare_graph_output(entry: str, want: list, got: list) -> str | None:
    """None when every output is equal bit for bit (floats as bit patterns), else where the
    first difference is."""
    for k, (w, g) in enumerate(zip(want, got, strict=True)):
        w = np.asarray(w, np.float32 if entry.endswith("_f32") else np.int16)
        if g.shape != w.shape:
            return f"{entry} output {k}: shape {g.shape}, want {w.shape}"
        bits = np.int32 if w.dtype == np.float32 else np.int16
        if not np.array_equal(g.view(bits), w.view(bits)):
            index = tuple(int(i) for i in np.argwhere(g.view(bits) != w.view(bits))[0])
            return (
                f"{entry} output {k}: first difference at {index}: C {g[index]!r}, reference"
                f" {w[index]!r}; {int(np.sum(g.view(bits) != w.view(bits)))} values differ"
            )
    return None


def float_error(graph: Graph, qgraph: QGraph, calibration: dict[str, np.ndarray]) -> float:
    """The integer graph's largest error against the float graph on the calibration data, as
    a fraction of the range of the float outputs (the worst output; a constant output's range
    taken from zero)."""
    with np.errstate(all="ignore"):
        want, _, _ = forward(graph, calibration)
        x32 = {k: v.astype(np.float32) for k, v in calibration.items()}
        got = graph_run.run_float(qgraph, x32)
    worst = 0.0
    for w, g in zip(want, got, strict=True):
        span = float(np.ptp(w) or np.max(np.abs(w))) if w.size else 0.0
        err = float(np.max(np.abs(g - w))) if w.size else 0.0
        worst = max(worst, err / span if span > 0 else (0.0 if err == 0 else math.inf))
    return worst


def _convert(case: GraphCase, folder: Path, core: str = "all"):
    """(qgraph, folder) or a GraphOutcome when the converter refuses."""
    try:
        options = QuantizeOptions(weight_bits=(case.spec.weight_bits,))
        with np.errstate(all="ignore"):
            conversion = convert_graph(case.graph, case.calibration, folder, name="net",
                                       options=options, force=True, core=core)  # fmt: skip
    except Diverges as error:
        return GraphOutcome(case.spec, "diverges", str(error))
    except (ValueError, RuntimeError) as error:
        return GraphOutcome(case.spec, "rejected", f"{type(error).__name__}: {error}")
    return conversion.qgraph


def host_entries(qgraph: QGraph) -> tuple[str, ...]:
    return ("run", "run_f32") + (("step", "step_f32") if qgraph.streaming else ())


def check_graph(
    case: GraphCase, folder: Path, extra_flags: tuple[str, ...] = (), core: str = "all"
) -> GraphOutcome:
    """Convert a case, build its host C with ASan/UBSan (and ``extra_flags``) and compare every
    entry point with the reference: the whole window, and run() on a shorter one too."""
    from lstm_embed.targets.graph_host import run_graph_host

    lines = case.graph.describe()
    qgraph = _convert(case, folder / "net", core)
    if isinstance(qgraph, GraphOutcome):
        qgraph.graph = lines
        return qgraph
    error = float_error(case.graph, qgraph, case.calibration)
    steps = case.spec.timesteps
    shorter = int(np.random.default_rng(case.spec.seed).integers(1, steps)) if steps > 1 else 1
    checks = [(e, steps) for e in host_entries(qgraph)]
    if not fixed_windows(qgraph):  # sequences of different lengths: whole windows only
        checks += [("run", shorter), ("run_f32", shorter)]
    for entry, length in checks:
        x = case.x if entry.endswith("_f32") else case.x_q
        x = _prefix(case.graph, x, length)
        want = expected_graph_output(qgraph, entry, x)
        try:
            got = run_graph_host(folder / "net", x, entry, sanitize=True, extra_flags=extra_flags)
        except (HostToolError, RuntimeError) as failure:
            return GraphOutcome(case.spec, "crash", f"{entry} ({length} steps): {failure}"[:4000],
                                error=error, graph=lines)  # fmt: skip
        found = compare_graph_output(entry, want, got)
        if found:
            return GraphOutcome(case.spec, "mismatch", f"{found} ({length} timesteps)",
                                error=error, graph=lines)  # fmt: skip
    return GraphOutcome(case.spec, "ok", error=error, graph=lines)


def check_qemu_graph(case: GraphCase, folder: Path, boards: tuple[str, ...]) -> list:
    """run() and step() (where the graph streams) of the int16 inputs in QEMU on each board
    against the reference; one outcome per board."""
    from lstm_embed.targets import firmware
    from lstm_embed.targets.graph_firmware import run_graph_qemu

    lines = case.graph.describe()
    qgraph = _convert(case, folder / "net")
    if isinstance(qgraph, GraphOutcome):
        return [GraphOutcome(case.spec, qgraph.status, qgraph.detail, b, graph=lines)
                for b in boards]  # fmt: skip
    outcomes = []
    for board in boards:
        try:
            got = run_graph_qemu(folder / "net", board, case.x_q)
        except firmware.FitError as error:
            outcomes.append(GraphOutcome(case.spec, "too_big", str(error), board, graph=lines))
            continue
        except firmware.FirmwareError as error:
            outcomes.append(GraphOutcome(case.spec, "crash", str(error)[:4000], board,
                                         graph=lines))  # fmt: skip
            continue
        found = [compare_graph_output(e, expected_graph_output(qgraph, e, case.x_q), got[e])
                 for e in got]  # fmt: skip
        bad = "; ".join(f for f in found if f)
        outcomes.append(GraphOutcome(case.spec, "mismatch" if bad else "ok", bad, board,
                                     graph=lines))  # fmt: skip
    return outcomes


def check_graph_specs(
    specs: list[GraphSpec],
    jobs: int = 2,
    keep: Path | None = None,
    boards: tuple[str, ...] = (),
    variants: tuple[tuple[str, str], ...] = (("-O1", "reference"),),
    sanitize: tuple[str, ...] = (),
) -> list[GraphOutcome]:
    """check_graph (or check_qemu_graph on ``boards``) of many specs, ``jobs`` at a time; the
    host builds rotate through ``variants`` (optimization, kernel) as the chain fuzzer's, with
    ``sanitize`` (more sanitizer flags) beside ASan/UBSan."""
    root = Path(tempfile.mkdtemp(prefix="lstm-embed-fuzz-graph-", dir=keep))

    def work(k: int) -> list[GraphOutcome]:
        folder = root / f"graph{specs[k].seed}"
        folder.mkdir()
        optimize, kernel = variants[k % len(variants)]
        with np.errstate(all="ignore"):
            case = build_graph_case(specs[k])
            if boards:
                outcomes = check_qemu_graph(case, folder, boards)
            else:
                flags = (*sanitize, optimize, *_kernel_flags(kernel))
                core = "m4" if kernel == "dsp" else "all"
                outcomes = [check_graph(case, folder, flags, core)]
        if all(o.status in ACCEPTED for o in outcomes):
            shutil.rmtree(folder, ignore_errors=True)
        return outcomes

    try:
        with ThreadPoolExecutor(jobs) as pool:
            return [o for outcomes in pool.map(work, range(len(specs))) for o in outcomes]
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _kernel_flags(kernel: str) -> tuple[str, ...]:
    if kernel in ("reference", "dsp"):  # the host's default; the only kernel of an m4 file
        return ()
    return (f"-DNET_USE_{kernel.upper()}_KERNEL",)


def error_summary(errors: list[float]) -> str:
    """One line on the integer graphs' errors against their float graphs (``float_error``)."""
    if not errors:
        return "no graph converted"
    values = np.array(errors)
    within = int(np.sum(values <= FLOAT_RANGE_FRACTION))
    return (
        f"integer vs float graph on the calibration data, largest error / output range:"
        f" median {np.median(values):.2g},"
        f" 90th percentile {np.percentile(values, 90, method='nearest'):.2g};"
        f" {within} of {len(values)} within {FLOAT_RANGE_FRACTION:.0%} (random weights, extreme"
        " ones included: a figure, not a verdict)"
    )
