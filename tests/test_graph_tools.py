"""trace and compare --report on graphs (issue 19), and their per-node rows on chains of every
layer kind (issue 20).

Graphs: a trained two-input graph (sequence + static features) and a trained LSTM +
self-attention classifier (tests/graph_models.py, fixed seeds). The oracles: Keras itself (its
model outputs, and sub-models ending at an intermediate layer for a node's row), the host C
(ASan/UBSan off; bit for bit against the trace), and the rows' own definitions recomputed here
from the trace. Chains: random-weight Keras models holding every kind lstm-embed reads, each
node's row against Keras' output of that layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.frontends.keras.graph import load_graph
from lstm_embed.graph_pipeline import GraphConversion, convert_graph
from lstm_embed.ir.graph_forward import forward
from lstm_embed.quantize.graph_quantizer import quantize_graph
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import graph_run
from lstm_embed.targets.graph_host import run_graph_host
from tests import graph_models

# float64 graph vs Keras' float32 predict: float32 rounding through a few layers (as
# tests/test_graph.py's FLOAT_MATCH)
FLOAT_MATCH = 1e-4
ROWS = 48  # inputs traced and compared


@dataclass
class Case:
    model: object
    conversion: GraphConversion
    path: Path
    x_path: Path
    x: dict[str, np.ndarray]
    target: np.ndarray
    calibration: dict[str, np.ndarray]


@pytest.fixture(scope="module", params=["seq_static", "attention"])
def case(request, tmp_path_factory) -> Case:
    model, x = graph_models.build(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    path = folder / "model.keras"
    model.save(path)
    conversion = convert_graph(path, x, folder / "out")
    calibration = x
    x = {k: v[:ROWS] for k, v in x.items()}
    np.savez(folder / "x.npz", **x)
    _, _, target = graph_models._data(0)
    return Case(model, conversion, path, folder / "x.npz", x, target[:ROWS], calibration)


def _keras_layer_output(model, name: str, x: dict[str, np.ndarray]) -> np.ndarray:
    """Keras' own output of layer ``name`` (a sub-model ending there)."""
    import keras

    sub = keras.Model(model.inputs, model.get_layer(name).output)
    return np.asarray(sub.predict(_keras_inputs(model, x), verbose=0))


def _keras_inputs(model, x: dict[str, np.ndarray]):
    inputs = [x[t.name] for t in model.inputs]
    return inputs if len(inputs) > 1 else inputs[0]


@pytest.mark.slow
def test_trace_of_a_graph_equals_the_host_c_and_names_every_tensor(case: Case, tmp_path) -> None:
    """trace -i x.npz: one array per tensor of the graph (inputs, every node's outputs) and the
    recurrent node's gates; the output tensors equal the host C's run() bit for bit, and the
    LSTM's traced h at each step is its output tensor."""
    qgraph, out = case.conversion.qgraph, case.conversion.out_dir
    assert cli.main(["trace", str(out), "-i", str(case.x_path), "-o", str(tmp_path / "t.npz")]) == 0
    with np.load(tmp_path / "t.npz") as data:
        arrays = {k: data[k] for k in data.files}
    tensors = {k.removeprefix("tensor."): v for k, v in arrays.items() if k.startswith("tensor.")}
    assert set(tensors) == set(qgraph.graph.tensors)
    x_q = graph_run.quantize_inputs(qgraph, case.x)
    for name, c_y in zip(qgraph.graph.outputs, run_graph_host(out, x_q, "run"), strict=True):
        np.testing.assert_array_equal(tensors[name], c_y, err_msg=name)
    lstm = next(n for n in qgraph.graph.nodes if n.layer.recurrent)
    h = arrays[f"0_{lstm.name}.h_q15"]
    traced = h if tensors[lstm.outputs[0]].ndim == 3 else h[:, -1]
    np.testing.assert_array_equal(traced, tensors[lstm.outputs[0]])


@pytest.mark.slow
def test_compare_report_rows_per_node(case: Case, tmp_path) -> None:
    """compare --report on a graph: a row per tensor with the node's inputs as Keras connects
    them; each row's error is the trace's tensor (real units) against Keras' own output of
    that layer (within float rounding); the output row gives compare's output error exactly
    and the C equal to the reference; --labels gives the task metric of the C's outputs."""
    qgraph = case.conversion.qgraph
    classifier = case.model.layers[-1].get_config().get("activation") == "softmax"
    labels = np.argmax(case.target, axis=1) if classifier else case.target[:, :3]
    np.save(tmp_path / "labels.npy", labels)
    argv = ["compare", str(case.path), str(case.conversion.out_dir), "-i", str(case.x_path),
            "--report", str(tmp_path / "r"), "--json", str(tmp_path / "c.json"),
            "--labels", str(tmp_path / "labels.npy")]  # fmt: skip
    assert cli.main(argv) == 0
    numbers = json.loads((tmp_path / "r" / "report.json").read_text())
    assert numbers == json.loads((tmp_path / "c.json").read_text())
    rows = {row["tensor"]: row for row in numbers["nodes"]}
    assert set(rows) == set(qgraph.graph.tensors)
    for node in qgraph.graph.nodes:
        keras_inputs = case.model.get_layer(node.name).input
        keras_inputs = keras_inputs if isinstance(keras_inputs, list) else [keras_inputs]
        assert len(rows[node.outputs[0]]["inputs"]) == len(keras_inputs), node.name
        assert rows[node.outputs[0]]["inputs"] == list(node.inputs)
    trace = tmp_path / "t.npz"
    assert cli.main(["trace", str(case.conversion.out_dir), "-i", str(case.x_path), "-o",
                     str(trace)]) == 0  # fmt: skip
    with np.load(trace) as arrays:
        for node in qgraph.graph.nodes:
            name = node.outputs[0]
            ours = arrays[f"tensor.{name}"] * qgraph.scales[name]
            keras_y = _keras_layer_output(case.model, node.name, case.x)
            keras_error = float(np.max(np.abs(ours - keras_y)))
            assert abs(rows[name]["max_abs_error"] - keras_error) < FLOAT_MATCH, name
    output = numbers["outputs"][0]
    last = rows[qgraph.graph.outputs[0]]
    assert last["output"] == "output_0" and last["c_equals_reference"] is True
    assert last["c_vs_oracle_max_abs_error"] == output["max_abs_error"]
    keras_y = np.asarray(case.model.predict(_keras_inputs(case.model, case.x), verbose=0))
    c_y = run_graph_host(case.conversion.out_dir, case.x, "run_f32")[0]
    assert output["max_abs_error"] == pytest.approx(float(np.max(np.abs(c_y - keras_y))), 1e-6)
    assert abs(last["max_abs_error"] - output["max_abs_error"]) < FLOAT_MATCH
    if classifier:
        assert numbers["c_accuracy"] == pytest.approx(np.mean(np.argmax(c_y, 1) == labels))
    else:
        assert numbers["c_rmse"] == pytest.approx(np.sqrt(np.mean((c_y - labels) ** 2)), 1e-5)
    lstm = next(n for n in qgraph.graph.nodes if n.layer.recurrent)
    assert [la["layer"] for la in numbers["layers"]] == [lstm.name]
    assert len(numbers["layers"][0]["h_error"]["max"]) == graph_models.TIMESTEPS
    budget = numbers["error_budget"][0]
    assert budget["float_forward_vs_keras"] < FLOAT_MATCH
    # the weight rounding per node: nearest is what --rounding nearest converts; what auto kept
    # is the rows' reference (the graph converted with the default --rounding auto)
    record = case.conversion.report["rounding"]
    assert numbers["rounding"]["convert"] == record and record["option"] == "auto"
    graph = load_graph(case.path)
    nearest = quantize_graph(graph, case.calibration, QuantizeOptions(rounding="nearest"))
    float_y = forward(graph, {k: v.astype(np.float64) for k, v in case.x.items()})[0][0]
    nearest_y = graph_run.run_float(nearest, case.x)[0]
    head = numbers["rounding"]["layers"][-1]
    assert head["layer"] == qgraph.graph.nodes[-1].name
    # (the rows dequantize in float64, run_float in float32 as the C: 1e-6 apart)
    assert head["nearest_max_abs_error"] == pytest.approx(
        np.max(np.abs(nearest_y - float_y)), abs=1e-6
    )
    kept_nearest = record["kept"] == "nearest"
    assert (case.conversion.out_dir / "qgraph_nearest.npz").is_file() != kept_nearest
    if not kept_nearest:
        assert head["kept_max_abs_error"] == last["max_abs_error"]
    text = (tmp_path / "r" / "report.md").read_text()
    assert "## Per node" in text and all(f"| {n.name} |" in text for n in qgraph.graph.nodes)
    assert {"error_histogram.png", "layer_error_per_step.png"} <= {
        p.name for p in (tmp_path / "r").iterdir()
    }


# ---------------------------------------------------------------------------------------------
# Chains: every kind lstm-embed reads has its row in trace and compare --report


def _chain_layers(which: str) -> list:
    import keras

    layers = keras.layers
    if which == "convolutions":  # Normalization, Conv1D, depthwise, separable, time axis, cells
        return [keras.Input((16, 4)),
                layers.Normalization(mean=[0.1, 0.2, 0.0, -0.1], variance=[1.0, 2.0, 0.5, 1.0]),
                layers.Conv1D(8, 3, padding="same", activation="relu"),
                layers.DepthwiseConv1D(3, padding="same"),
                layers.SeparableConv1D(8, 3, padding="same"),
                layers.UpSampling1D(2), layers.ZeroPadding1D(1), layers.Cropping1D(1),
                layers.MaxPooling1D(2), layers.GRU(8, return_sequences=True),
                layers.RNN(layers.LSTMCell(8), return_sequences=True), layers.SimpleRNN(6),
                layers.Dense(3, activation="softmax")]  # fmt: skip
    if which == "channels_first":  # Permute, Rescaling, LayerNormalization, Bidirectional, stack
        return [keras.Input((4, 16)), layers.Permute((2, 1)), layers.Rescaling(0.5, offset=-0.1),
                layers.LayerNormalization(),
                layers.Bidirectional(layers.LSTM(6, return_sequences=True)),
                layers.RNN(layers.StackedRNNCells([layers.LSTMCell(5), layers.LSTMCell(5)])),
                layers.BatchNormalization(), layers.Dense(2)]  # fmt: skip
    if which == "issue20":  # Conv1DTranspose, relu and linear recurrent layers
        return [keras.Input((16, 4)), layers.Conv1D(8, 3, strides=2, padding="same"),
                layers.Conv1DTranspose(8, 3, strides=2, padding="same", activation="relu"),
                layers.LSTM(8, activation="relu", return_sequences=True),
                layers.GRU(6, activation="linear"), layers.Dense(2)]  # fmt: skip
    if which == "frames":  # Conv2D and 2-D pooling on (T, F, C) frames into a recurrent layer
        return [keras.Input((12, 10, 1)), layers.Conv2D(4, (3, 3), activation="relu"),
                layers.MaxPooling2D((1, 2)), layers.Reshape((10, 16)), layers.GRU(6),
                layers.Dense(2)]  # fmt: skip
    if which == "ids":  # Embedding over integer token ids
        return [keras.Input((12,), dtype="int32"), layers.Embedding(20, 6), layers.LSTM(8),
                layers.Dense(2)]  # fmt: skip
    return [keras.Input((16, 4)), layers.Masking(0.0), layers.LSTM(8, return_sequences=True),
            layers.TimeDistributed(layers.Dense(4)), layers.Activation("tanh"), layers.LSTM(4),
            layers.Dense(1)]  # fmt: skip


@pytest.mark.parametrize(
    "which", ["convolutions", "channels_first", "masking", "issue20", "frames", "ids"]
)
def test_chain_rows_for_every_kind(which: str, tmp_path) -> None:
    """Random-weight chains of every kind: compare --report gives a row per layer whose error
    is the trace's tensor against Keras' output of that layer, and trace's last tensor is the
    host C's run() bit for bit."""
    import keras

    from lstm_embed.pipeline import convert
    from lstm_embed.quantize import fixedpoint as fp
    from lstm_embed.reference.trace import trace_to_arrays
    from lstm_embed.targets.hostbuild import run_host
    from lstm_embed.tools.compare import compare
    from lstm_embed.tools.node_errors import without_padding

    keras.utils.set_random_seed(3)
    model = keras.Sequential(_chain_layers(which))
    rng = np.random.default_rng(0)
    if which == "ids":
        x = rng.integers(0, 20, (64, 12)).astype(np.int32)
    else:
        x = rng.normal(size=(64, *model.inputs[0].shape[1:])).astype(np.float32)
    x[:8, -3:] = 0  # padding for the Masking model
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.warns(UserWarning):  # few calibration sequences
        conversion = convert(path, x, tmp_path / "out", options=QuantizeOptions(rounding="nearest"))
    qmodel, x = conversion.qmodel, x[:32]
    numbers = compare(path, tmp_path / "out", x, report_dir=tmp_path / "r")["json"]
    rows = {row["tensor"]: row for row in numbers["nodes"]}
    assert list(rows) == ["input", *(la.name for la in qmodel.layers)]
    arrays = trace_to_arrays(tmp_path / "out", x)
    keras_names = {la.name for la in model.layers}
    # an Activation layer folds into the layer before it, which then ends at its output
    folded_end = {}
    for k, layer in enumerate(model.layers):
        if not isinstance(layer, keras.layers.Activation):
            folded_end[layer.name] = layer.name
        elif layer.name not in {q.name for q in qmodel.layers}:
            folded_end[model.layers[k - 1].name] = layer.name
    checked = 0
    for qlayer in qmodel.layers:
        assert np.isfinite(rows[qlayer.name]["max_abs_error"]), qlayer.name
        if qlayer.name not in keras_names:  # a stacked cell's layers, expanded
            continue
        ours = arrays[f"tensor.{qlayer.name}"] * np.asarray(qlayer.output_feature_scale)
        keras_y = _keras_layer_output(model, folded_end[qlayer.name], {model.inputs[0].name: x})
        keras_y = keras_y.reshape(ours.shape)  # (T, F, C) frames: the C's (T, F * C)
        if which == "masking":  # padding steps are left out of the rows (nothing reads them)
            keras_y, ours = (without_padding(v, np.all(x == 0, axis=-1)) for v in (keras_y, ours))
        keras_error = float(np.max(np.abs(ours - keras_y)))
        assert abs(rows[qlayer.name]["max_abs_error"] - keras_error) < FLOAT_MATCH, qlayer.name
        checked += 1
    assert checked >= len(qmodel.layers) - 2
    last = rows[qmodel.layers[-1].name]
    assert last["c_equals_reference"] is True
    assert last["c_vs_oracle_max_abs_error"] == numbers["max_abs_error"]
    x_q = fp.quantize_input(x.reshape(*x.shape[:2], -1), qmodel.input_inv_scale)
    np.testing.assert_array_equal(
        arrays[f"tensor.{qmodel.layers[-1].name}"], run_host(tmp_path / "out", x_q)
    )
