"""Graphs (issue 19): Functional models that are not one chain, read, quantized and compiled.

The trained models (tests/graph_models.py, fixed seeds) are the graphs the issue names: the
residual LSTM, two Conv1D branches concatenated into an LSTM, a sequence and a static input,
the return_state encoders (h into a Dense; [h, c] as the outputs), and an LSTM +
self-attention classifier. Each is held to Keras
(float graph within float32 rounding; the integer model within GRAPH_RANGE_FRACTION of the
Keras output range) and its host C (ASan/UBSan) to the integer reference bit for bit, through
every entry point it has.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lstm_embed
from lstm_embed.emit.buffers import Interval, plan
from lstm_embed.frontends.keras.frontend import FrontendError
from lstm_embed.frontends.keras.graph import load_graph
from lstm_embed.graph_pipeline import convert_graph
from lstm_embed.ir.graph import Graph, Node, TensorSpec
from lstm_embed.ir.graph_forward import forward
from lstm_embed.kinds import IRError
from lstm_embed.reference import graph_run
from lstm_embed.targets.graph_host import run_graph_host
from tests import graph_models
from tests.graph_helpers import (
    Converted,
    assert_float_graph_equals_keras,
    assert_forward_equals,
    assert_host_bit_exact,
    assert_integer_graph_within_range,
    assert_qemu_bit_exact,
    convert_built,
    predict,
)
from tests.helpers import random_model

# The "done when": max abs error within 5% of the range of the Keras outputs.
GRAPH_RANGE_FRACTION = 0.05
# float64 graph vs Keras' float32 predict: float32 rounding through a few layers
FLOAT_MATCH = 1e-4

MODELS = (
    "residual",
    "conv_branches",
    "seq_static",
    "encoder_h",
    "encoder_hc",
    "attention",  # LSTM + self-attention classifier
    "attention_causal",  # the same with use_causal_mask=True and use_scale=True
    "attention_additive",  # AdditiveAttention, a Dense of the LSTM's sequence as the query
    "attention_concat",  # Attention(score_mode="concat", use_scale=True), causal
)


@pytest.fixture(scope="module", params=MODELS)
def converted(request, tmp_path_factory) -> Converted:
    built = graph_models.build(request.param)
    return convert_built(built, tmp_path_factory.mktemp(request.param))


@pytest.mark.slow
def test_float_graph_equals_keras(converted: Converted) -> None:
    assert_float_graph_equals_keras(converted, FLOAT_MATCH)


@pytest.mark.slow
def test_integer_graph_within_keras_range(converted: Converted) -> None:
    assert_integer_graph_within_range(converted, GRAPH_RANGE_FRACTION)


@pytest.mark.slow
def test_host_c_is_bit_exact_with_the_reference(converted: Converted) -> None:
    """run and run_f32, and step and step_f32 where every node streams, on the host under
    ASan/UBSan: the integers equal the reference's; a vector output after the last step is
    run()'s."""
    assert_host_bit_exact(converted)


@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-m0", "qemu-m4", "qemu-m55"])
def test_cortex_m_is_bit_exact_with_the_reference(converted: Converted, board, toolchain) -> None:
    """run(), and step() where the graph streams, in QEMU on M0, M4 and M55 (each core's own
    kernels: plain, DSP, MVE) equal the reference on a few samples."""
    assert_qemu_bit_exact(converted, board)


@pytest.mark.slow
def test_report_states_the_graph_and_its_buffers(converted: Converted) -> None:
    report = json.loads((converted.conversion.out_dir / "report.json").read_text())
    graph = converted.graph
    assert [i["name"] for i in report["graph"]["inputs"]] == [t.name for t in graph.inputs]
    assert [o["tensor"] for o in report["graph"]["outputs"]] == list(graph.outputs)
    assert [o["name"] for o in report["graph"]["outputs"]] == [
        f"output_{k}" for k in range(len(graph.outputs))
    ]
    buffers = report["buffers"]
    assert buffers["peak_live_bytes"] <= buffers["arena_bytes"] <= sum(buffers["tensors"].values())
    header = (converted.conversion.out_dir / f"{report['name']}.h").read_text()
    for item in report["graph"]["inputs"]:
        assert f"const int16_t *x_{item['c']}" in header


def test_residual_graph_reads_as_the_keras_layers_connect(tmp_path) -> None:
    """Names, edges and shapes of the residual model, as Keras built it (untrained)."""
    import keras

    inp = keras.Input((7, 3), name="frames")
    a = keras.layers.LSTM(5, return_sequences=True, name="rec")(inp)
    b = keras.layers.Dense(5, name="skip")(inp)
    s = keras.layers.Add(name="sum")([a, b])
    model = keras.Model(inp, keras.layers.LSTM(4, name="top")(s))
    model.save(tmp_path / "m.keras")
    graph = load_graph(tmp_path / "m.keras")
    assert [(n.name, n.inputs) for n in graph.nodes] == [
        ("rec", ("frames",)),
        ("skip", ("frames",)),
        ("sum", ("rec", "skip")),
        ("top", ("sum",)),
    ]
    assert graph.tensors["sum"].shape == (7, 5) and graph.tensors["top"].shape == (4,)


def _keras2_file(tmp_path: Path, which: str, suffix: str) -> tuple[Path, object, dict]:
    import tf_keras

    model, x = graph_models.build(which, keras=tf_keras)
    path = tmp_path / f"{which}{suffix}"
    model.save(path)
    return path, model, x


@pytest.mark.slow
@pytest.mark.parametrize("which", ["seq_static", "encoder_hc", "attention_concat"])
def test_keras2_graph_files(tmp_path, which: str) -> None:
    """tf_keras' inbound_nodes format (lists, not dicts): several inputs, return_state
    outputs taken by index, and its Attention's two weights (scale, concat_score_weight)."""
    path, model, x = _keras2_file(tmp_path, which, ".h5")
    graph = load_graph(path)
    assert_forward_equals(graph, x, predict(model, graph, x), FLOAT_MATCH)


def test_refusals_name_the_layer_and_what_is_supported(tmp_path) -> None:
    import keras

    inp = keras.Input((6, 3), name="x")
    shared = keras.layers.Dense(3, name="shared")
    twice = keras.Model(inp, keras.layers.LSTM(2)(shared(shared(inp))))
    twice.save(tmp_path / "shared.keras")
    with pytest.raises(FrontendError, match="'shared' is called 2 times; shared layers"):
        load_graph(tmp_path / "shared.keras")

    a = keras.layers.LSTM(3, return_sequences=True, name="a")(inp)
    b = keras.layers.LSTM(3, return_sequences=True, name="b")(inp)
    any_length = keras.Input((None, 3), name="any_length")
    time_cat = keras.layers.Concatenate(axis=1, name="cat")([a, any_length])
    keras.Model([inp, any_length], keras.layers.LSTM(2)(time_cat)).save(tmp_path / "time.keras")
    with pytest.raises(
        FrontendError, match=r"layer 'cat' \(Concatenate\): axis=1: an operand has no declared"
    ):
        load_graph(tmp_path / "time.keras")

    _, scores = keras.layers.AdditiveAttention(name="add_att")([a, b], return_attention_scores=True)
    keras.Model(inp, scores).save(tmp_path / "scores.keras")
    with pytest.raises(
        FrontendError,
        match=r"'add_att' \(AdditiveAttention\): return_attention_scores=True is not supported",
    ):
        load_graph(tmp_path / "scores.keras")


def test_chain_is_the_one_path_graph() -> None:
    model = random_model(3, 4, [6, 5], 8, dense=[(2, "linear")])
    graph = Graph.from_chain(model)
    assert graph.is_chain and graph.layers == model.layers
    x = np.random.default_rng(0).normal(size=(5, 8, 4))
    from lstm_embed.ir.float_model import forward as chain_forward

    np.testing.assert_array_equal(forward(graph, {"input": x})[0][0], chain_forward(model, x)[0])


def test_nodes_are_sorted_topologically_and_cycles_refused() -> None:
    model = random_model(1, 3, [4], 5, dense=[(2, "linear")])
    lstm, dense = model.layers
    spec = TensorSpec("in", (5, 3))
    nodes = [Node(dense, (lstm.name,), (dense.name,)), Node(lstm, ("in",), (lstm.name,))]
    graph = Graph.build("g", [spec], nodes, [dense.name])
    assert [n.name for n in graph.nodes] == [lstm.name, dense.name] and graph.is_chain
    with pytest.raises(IRError, match="wait on inputs nothing produces"):
        Graph.build("g", [spec], [Node(lstm, ("later",), ("later",))], ["later"])
    with pytest.raises(IRError, match="output 'nope' is not produced"):
        Graph.build("g", [spec], nodes, ["nope"])


def test_buffer_plan_never_overlaps_live_tensors_and_reaches_the_peak() -> None:
    """A residual block's live sets: x and the branch's outputs alive together."""
    chain = [Interval("a", 10, 0, 1), Interval("b", 10, 1, 2), Interval("c", 10, 2, 3)]
    assert plan(chain).arena == plan(chain).peak == 20
    rng = np.random.default_rng(7)
    for _ in range(200):
        items = []
        for k in range(int(rng.integers(1, 9))):
            first = int(rng.integers(0, 8))
            items.append(Interval(f"t{k}", int(rng.integers(1, 50)), first,
                                  first + int(rng.integers(0, 4))))  # fmt: skip
        layout = plan(items)
        assert layout.arena >= layout.peak
        for i in items:
            for j in items:
                if i.name < j.name and i.overlaps(j):
                    a, b = layout.offsets[i.name], layout.offsets[j.name]
                    assert a + i.size <= b or b + j.size <= a


def test_command_line_speaks_graphs(tmp_path, capsys) -> None:
    """inspect prints each node with its inputs; convert -c takes a .npz keyed by the input
    names; run -i/-o take and write .npz (output_0, output_1), equal to the reference's float
    path; a .npy for a model with two inputs is refused in one line."""
    import keras

    from lstm_embed import cli

    keras.utils.set_random_seed(1)
    seq = keras.Input((5, 3), name="seq")
    side = keras.Input((2,), name="side")
    _, h, c = keras.layers.LSTM(4, return_state=True, name="enc")(seq)
    joined = keras.layers.Concatenate(name="cat")([h, keras.layers.Dense(3, name="dn")(side)])
    model = keras.Model([seq, side], [keras.layers.Dense(2, name="head")(joined), c])
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    x = {"seq": rng.normal(size=(40, 5, 3)).astype(np.float32),
         "side": rng.normal(size=(40, 2)).astype(np.float32)}  # fmt: skip
    np.savez(tmp_path / "x.npz", **x)
    np.save(tmp_path / "x.npy", x["seq"])

    assert cli.main(["inspect", str(tmp_path / "m.keras")]) == 0
    shown = capsys.readouterr().out
    assert "cat (Concatenate) <- enc_h, dn" in shown and "outputs: head, enc_c" in shown
    out = tmp_path / "out"
    assert cli.main(["convert", str(tmp_path / "m.keras"), "-c", str(tmp_path / "x.npz"),
                     "-o", str(out)]) == 0  # fmt: skip
    assert cli.main(["run", str(out), "-i", str(tmp_path / "x.npz"), "-o",
                     str(tmp_path / "y.npz")]) == 0  # fmt: skip
    y = np.load(tmp_path / "y.npz")
    assert y.files == ["output_0", "output_1"]
    conversion = lstm_embed.convert(tmp_path / "m.keras", x, tmp_path / "again")
    for key, want in zip(y.files, graph_run.run_float(conversion.qgraph, x), strict=True):
        np.testing.assert_array_equal(y[key], want)
    loaded = lstm_embed.load(out)
    for got in (loaded.predict(x), loaded.predict([x["seq"], x["side"]])):
        for key, array in zip(y.files, got, strict=True):
            np.testing.assert_array_equal(array, y[key])
    capsys.readouterr()
    assert cli.main(["compare", str(tmp_path / "m.keras"), str(out), "-i",
                     str(tmp_path / "x.npz")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("output_0 (head): max abs error")
    assert lines[2].startswith("output_1 (enc_c): max abs error")
    assert cli.main(["convert", str(tmp_path / "m.keras"), "-c", str(tmp_path / "x.npy"),
                     "-o", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "the model has 2 inputs (seq, side)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_every_merge_follows_keras_and_its_c_is_bit_exact(tmp_path) -> None:
    """Subtract, Multiply, Average, Maximum, Minimum (and Add, Concatenate) on sequences and
    vectors, one operand broadcast from one feature: the float graph equals Keras, the integer
    one stays within GRAPH_RANGE_FRACTION of it, and the host C (ASan/UBSan) equals the
    reference through run and step."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(5)
    seq = keras.Input((6, 3), name="seq")
    a = layers.LSTM(4, return_sequences=True, name="a")(seq)
    b = layers.Dense(4, activation="tanh", name="b")(seq)
    one = layers.Dense(1, name="one")(seq)  # broadcast over the 4 features
    merged = [
        layers.Subtract(name="sub")([a, b]),
        layers.Multiply(name="mul")([a, one]),
        layers.Average(name="avg")([a, b, one]),
        layers.Maximum(name="max")([a, b]),
        layers.Minimum(name="min")([b, one, a]),
    ]
    both = layers.Concatenate(name="cat")(merged)
    h = layers.LSTM(5, name="top")(both)
    v = layers.Add(name="vec_add")([h, layers.Dense(5, name="hd")(h)])
    model = keras.Model(seq, [layers.Multiply(name="vec_mul")([v, h]), both])
    model.save(tmp_path / "m.keras")
    x = {"seq": np.random.default_rng(2).normal(size=(64, 6, 3)).astype(np.float32)}
    graph = load_graph(tmp_path / "m.keras")
    keras_y = predict(model, graph, x)
    assert_forward_equals(graph, x, keras_y, FLOAT_MATCH)
    conversion = convert_graph(tmp_path / "m.keras", x, tmp_path / "out")
    qgraph = conversion.qgraph
    for ours, want in zip(graph_run.run_float(qgraph, x), keras_y, strict=True):
        assert np.max(np.abs(ours - want)) <= GRAPH_RANGE_FRACTION * float(np.ptp(want))
    x_q = graph_run.quantize_inputs(qgraph, x)
    expected = graph_run.run(qgraph, x_q)
    for entry in ("run", "step"):
        got = run_graph_host(conversion.out_dir, x_q, entry, sanitize=True)
        for ours, want in zip(got, expected, strict=True):
            if entry == "step" and want.ndim == 2:
                ours = ours[:, -1]
            np.testing.assert_array_equal(ours, want, err_msg=entry)


def test_int16_encoder_returns_h_and_refuses_its_int32_cell(tmp_path) -> None:
    """An int16-weight LSTM keeps an int32 cell: a graph may use its returned h (the encoder
    h -> Dense converts, its C equal to the reference on every entry point under ASan/UBSan),
    and one that reads or returns its c is refused in one line naming the layer."""
    import keras

    from lstm_embed.quantize.quantizer import QuantizeOptions
    from lstm_embed.targets.graph_host import run_graph_host

    keras.utils.set_random_seed(4)
    seq = keras.Input((6, 3), name="seq")
    _, h, c = keras.layers.LSTM(5, return_state=True, name="enc")(seq)
    x = {"seq": np.random.default_rng(0).normal(size=(48, 6, 3)).astype(np.float32)}
    options = QuantizeOptions(weight_bits=(16,))
    keras.Model(seq, keras.layers.Dense(2, name="head")(h)).save(tmp_path / "h.keras")
    conversion = lstm_embed.convert(tmp_path / "h.keras", x, tmp_path / "h", options=options)
    qgraph = conversion.qgraph
    assert qgraph.graph.nodes[0].layer.wide_cell
    x_q = graph_run.quantize_inputs(qgraph, x)
    for entry, inputs, want in (("run", x_q, graph_run.run(qgraph, x_q)),
                                ("run_f32", x, graph_run.run_float(qgraph, x))):  # fmt: skip
        got = run_graph_host(conversion.out_dir, inputs, entry, sanitize=True)
        np.testing.assert_array_equal(got[0], want[0], err_msg=entry)
    keras.Model(seq, [keras.layers.Dense(2, name="head")(h), c]).save(tmp_path / "c.keras")
    with pytest.raises(Exception, match="layer 'enc': its cell state is int32") as refused:
        lstm_embed.convert(tmp_path / "c.keras", x, tmp_path / "c", options=options)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "c").exists()
