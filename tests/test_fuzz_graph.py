"""The graph fuzzer (lstm_embed/tools/fuzz_graph.py; ``make fuzz`` runs it at length): its draws
cover what issue 19 lists (branches, every merge, broadcast operands, sequence and static
inputs, several outputs, return_state consumed and returned, Attention) and the kinds added
since (AdditiveAttention, Attention(score_mode="concat"), Concatenate on the time axis, Masking
branches whose mask recurrent layers, Attention and GlobalAveragePooling1D read), and a sample
of its graphs covering all of that converts to host C (ASan/UBSan) equal to the numpy graph
reference bit for bit through every entry point (``fuzz_graph.check_graph``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from lstm_embed.ir.graph import Graph
from lstm_embed.kinds.merge import OPS
from lstm_embed.tools import fuzz_graph


def _state_tensors(graph: Graph) -> set[str]:
    return {t for node in graph.nodes for t in node.outputs[1:]}


def _merges(graph: Graph) -> list:
    return [n for n in graph.nodes if n.layer.kind == "merge"]


def _title(node) -> str:
    return getattr(node.layer, "title", "")


STATELESS = ("dense", "merge", "activation", "feature_affine", "batch_norm", "layer_norm")
# what the issue asks the fuzzer to draw, as properties of a drawn graph
FEATURES: dict[str, Callable[[Graph], bool]] = {
    "several inputs": lambda g: len(g.inputs) > 1,
    "static input": lambda g: any(not t.sequence for t in g.inputs),
    "several outputs": lambda g: len(g.outputs) > 1,
    "branch": lambda g: any(len(g.consumers(t)) > 1 for t in g.tensors),
    "state consumed": lambda g: any(g.consumers(t) for t in _state_tensors(g)),
    "state returned": lambda g: bool(_state_tensors(g) & set(g.outputs)),
    "LSTM h and c": lambda g: any(n.returns_state and n.layer.kind == "lstm" for n in g.nodes),
    "broadcast operand": lambda g: any(
        n.layer.op != "concatenate" and 1 in n.layer.input_sizes and n.layer.output_size > 1
        for n in _merges(g)
    ),
    "merge of vectors": lambda g: any(not g.tensors[n.outputs[0]].sequence for n in _merges(g)),
    "attention": lambda g: any(n.layer.kind == "attention" for n in g.nodes),
    "attention with a key": lambda g: any(
        n.layer.kind == "attention" and len(n.inputs) == 3 for n in g.nodes
    ),
    "causal attention": lambda g: any(
        n.layer.kind == "attention" and n.layer.causal for n in g.nodes
    ),
    "bidirectional": lambda g: any(n.layer.kind == "bidirectional" for n in g.nodes),
    "go_backwards": lambda g: any(n.layer.go_backwards for n in g.nodes),
    "streaming": lambda g: all(n.layer.streaming for n in g.nodes),
    # step() then touches no state: every tensor is an input or an output
    "stateless, no intermediate tensor": lambda g: all(
        n.layer.kind in STATELESS and set(n.outputs) <= set(g.outputs) for n in g.nodes
    ),
    "int16 weights": lambda g: '"weight_bits": 16' in g.source,
    # the kinds of fuzz_graph's NEW_GRAPH_STREAM
    "AdditiveAttention": lambda g: any(_title(n) == "AdditiveAttention" for n in g.nodes),
    "Attention concat": lambda g: any(_title(n) == "Attention (concat)" for n in g.nodes),
    "time-axis Concatenate": lambda g: any(n.layer.joins_timesteps for n in g.nodes),
    "Masking branch": lambda g: any(n.layer.computes_mask for n in g.nodes),
    "masked recurrent layer": lambda g: any(n.mask and n.layer.recurrent for n in g.nodes),
    "masked attention": lambda g: any(n.mask and n.layer.kind == "attention" for n in g.nodes),
    "masked average": lambda g: any(n.mask and n.layer.kind == "pooling" for n in g.nodes),
    **{
        f"merge {op}": (lambda g, op=op: any(n.layer.op == op for n in _merges(g)))
        for op in OPS.values()
    },
}
DRAWN_SEEDS = range(200)
MAX_SAMPLE = 10  # graphs the suite converts and compiles (about 2 s each on 2 busy cores)


def _features(seed: int) -> set[str]:
    graph = fuzz_graph.build_graph(fuzz_graph.random_graph_spec(seed))
    return {name for name, has in FEATURES.items() if has(graph)}


@pytest.fixture(scope="module")
def drawn() -> dict[int, set[str]]:
    return {seed: _features(seed) for seed in DRAWN_SEEDS}


def test_the_draws_cover_what_the_issue_lists(drawn) -> None:
    covered = set().union(*drawn.values())
    assert covered == set(FEATURES), set(FEATURES) - covered


def _sample(drawn: dict[int, set[str]]) -> list[int]:
    """Seeds that together cover every feature, picked greedily (most new features first)."""
    missing, picked = set(FEATURES), []
    while missing:
        seed = max(drawn, key=lambda s: (len(drawn[s] & missing), -s))
        picked.append(seed)
        missing -= drawn[seed]
    return picked


def test_a_sample_covering_every_feature_equals_the_reference(drawn) -> None:
    seeds = _sample(drawn)
    assert len(seeds) <= MAX_SAMPLE, seeds
    specs = [fuzz_graph.random_graph_spec(s) for s in seeds]
    outcomes = fuzz_graph.check_graph_specs(specs, jobs=2)
    bad = [(o.spec.seed, o.status, o.detail[:600], o.graph) for o in outcomes if o.status != "ok"]
    assert not bad


def test_a_difference_from_the_reference_is_reported(tmp_path, monkeypatch) -> None:
    """One LSB off in the reference's first output makes check_graph report a mismatch (the
    C is really compared), and compare_graph_output tells -0.0 from 0.0."""
    real = fuzz_graph.graph_run.run

    def off_by_one(qgraph, inputs):
        outputs = real(qgraph, inputs)
        outputs[0].flat[0] ^= 1
        return outputs

    monkeypatch.setattr(fuzz_graph.graph_run, "run", off_by_one)
    case = fuzz_graph.build_graph_case(fuzz_graph.random_graph_spec(2))
    outcome = fuzz_graph.check_graph(case, tmp_path)
    assert outcome.status == "mismatch" and "first difference at (0" in outcome.detail
    zeros = [np.zeros((1, 2), np.float32)]
    assert fuzz_graph.compare_graph_output("run_f32", zeros, [zeros[0].copy()]) is None
    assert "2 values differ" in fuzz_graph.compare_graph_output("run_f32", zeros, [-zeros[0]])


@pytest.mark.firmware
def test_a_time_concat_graph_with_a_static_input_runs_in_qemu(toolchain, tmp_path) -> None:
    """Regression (the graph fuzzer in QEMU): graph_firmware asked a static input for its
    timesteps (null in the report) when the graph's sequences differ in length (a time-axis
    Concatenate), a TypeError before any build; seed 108 holds both and equals the reference
    on qemu-m0."""
    spec = fuzz_graph.random_graph_spec(108)
    case = fuzz_graph.build_graph_case(spec)
    assert spec.static_inputs and any(n.layer.joins_timesteps for n in case.graph.nodes)
    outcomes = fuzz_graph.check_qemu_graph(case, tmp_path, ("qemu-m0",))
    assert [(o.status, o.detail) for o in outcomes] == [("ok", "")]
