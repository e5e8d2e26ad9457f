"""ONNX files lstm-embed cannot convert: one line naming the node, the operator and what is
supported, exit 2, no output folder; hostile files (not protobuf, truncated, huge dimensions,
external data outside the folder, a cycle) the same, in bounded time and memory; and no ML
framework imported by inspect or convert of an .onnx file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lstm_embed import cli

from .test_cli_errors import assert_error, assert_nothing_written, run_cli

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "onnx"
T, M, H = 4, 2, 3


def lstm_graph(extra_nodes=(), lstm_attrs=None, output="last", opset=17, initializers=(), time=T):
    """x (N, T, M) batch first -> Transpose -> LSTM -> Squeeze -> Transpose -> Gather(-1) ->
    (extra nodes, each reading 'last' and writing 'last' + index) -> output."""
    rng = np.random.default_rng(0)
    attrs = lstm_attrs or {}
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 4 * H, M)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 4 * H, H)).astype(np.float32), "R"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array(-1, np.int64), "minus_one"),
        *initializers,
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="to_time_major", perm=[1, 0, 2]),
        helper.make_node(
            "LSTM", ["xt", "W", "R"], ["y", "y_h"], name="lstm", hidden_size=H, **attrs
        ),
        helper.make_node("Squeeze", ["y", "one"], ["ys"], name="squeeze"),
        helper.make_node("Transpose", ["ys"], ["yb"], name="to_batch_first", perm=[1, 0, 2]),
        helper.make_node("Gather", ["yb", "minus_one"], ["last"], name="last_step", axis=1),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", time, M])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(1).normal(size=(16, T, M)).astype(np.float32))
    return path


def convert_fails(tmp_path: Path, model_path: Path, calibration: Path, capsys, *needles) -> None:
    out = tmp_path / "out"
    status, _, err = run_cli(["convert", model_path, "-c", calibration, "-o", out], capsys)
    assert_error(status, err, *needles)
    assert_nothing_written(tmp_path)


def save(tmp_path: Path, model, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("opset", [14, onnx.defs.onnx_opset_version()])
def test_small_graph_converts(tmp_path: Path, calibration: Path, capsys, opset: int) -> None:
    """The graph the refusals below start from is itself supported, at the oldest and the
    newest opset."""
    path = save(tmp_path, lstm_graph(opset=opset))
    status, out, _ = run_cli(["convert", path, "-c", calibration, "-o", tmp_path / "c"], capsys)
    assert status == 0 and "wrote" in out


def test_unsupported_operator_and_attribute(tmp_path: Path, calibration: Path, capsys) -> None:
    erf = helper.make_node("Erf", ["last"], ["last1"], name="my_erf")
    model = lstm_graph([erf], {"clip": 3.0}, output="last1")
    path = save(tmp_path, model)
    convert_fails(tmp_path, path, calibration, capsys, "node 'lstm' (LSTM)", "clip=3.0",
                  "supported: absent")  # fmt: skip
    status, out, err = run_cli(["inspect", path], capsys)
    assert status == 2 and "lstm" in out and "my_erf" in out  # inspect lists both nodes
    assert "operator Erf is not supported (supported: LSTM, GRU, RNN" in err


@pytest.mark.parametrize(
    ("attrs", "needle"),
    [
        ({"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations="),
        ({"input_forget": 1}, "input_forget=1"),
        ({"direction": "sideways"}, "direction='sideways'"),
    ],
)
def test_recurrent_attributes_refused(tmp_path, calibration, capsys, attrs, needle) -> None:
    path = save(tmp_path, lstm_graph(lstm_attrs=attrs))
    convert_fails(tmp_path, path, calibration, capsys, "node 'lstm' (LSTM)", needle)


def test_dynamic_time_axis(tmp_path: Path, capsys) -> None:
    """A symbolic time axis: any number of timesteps, step() kept; a layer that needs the
    whole window is refused, saying to export with fixed timesteps."""
    from lstm_embed.frontends.onnx import load_model

    model = load_model(save(tmp_path, lstm_graph(time="time"), "dynamic.onnx"))
    assert model.timesteps is None and model.streaming
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(
            "LSTM",
            ["xt", "W", "R"],
            ["y", "y_h"],
            name="bi",
            hidden_size=H,
            direction="bidirectional",
        ),
        helper.make_node("Transpose", ["y_h"], ["bh"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["bh", "flat"], ["out"]),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (2, 4 * H, M)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0, 0.5, (2, 4 * H, H)).astype(np.float32), "R"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "time", M])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    status, _, err = run_cli(["inspect", save(tmp_path, proto)], capsys)
    assert status == 2 and "the file's time axis is dynamic" in err
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = T  # fixed: converts
    model = load_model(save(tmp_path, proto))
    assert model.timesteps == T and not model.streaming


def test_reverse_sequence_output_refused(tmp_path, calibration, capsys) -> None:
    path = save(tmp_path, lstm_graph(lstm_attrs={"direction": "reverse"}))
    convert_fails(tmp_path, path, calibration, capsys, "direction='reverse'", "Y_h")


def test_merge_refused(tmp_path: Path, calibration: Path, capsys) -> None:
    """A residual connection (the data added to itself through another path)."""
    relu = helper.make_node("Relu", ["last"], ["r"], name="relu")
    add = helper.make_node("Add", ["last", "r"], ["sum"], name="residual")
    path = save(tmp_path, lstm_graph([relu, add], output="sum"))
    convert_fails(tmp_path, path, calibration, capsys, "node 'residual' (Add)", "merge")


def test_old_opset_refused(tmp_path: Path, calibration: Path, capsys) -> None:
    path = save(tmp_path, lstm_graph(opset=9))
    convert_fails(tmp_path, path, calibration, capsys, "opset 9", "supported: 14")


# ---------------------------------------------------------------------------------------------
# hostile files


def test_not_protobuf(tmp_path: Path, calibration: Path, capsys) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(range(256)) * 64)
    convert_fails(tmp_path, path, calibration, capsys, "not an onnx model")


def test_truncated(tmp_path: Path, calibration: Path, capsys) -> None:
    data = (FIXTURES / "lstm1.ts.onnx").read_bytes()
    path = tmp_path / "model.onnx"
    path.write_bytes(data[: len(data) // 2])
    convert_fails(tmp_path, path, calibration, capsys, "model.onnx")


def test_huge_dimensions(tmp_path: Path, calibration: Path, capsys) -> None:
    huge = TensorProto()
    huge.name, huge.data_type = "B", TensorProto.FLOAT
    huge.dims.extend([1, 1 << 40])  # no data: the size is refused before anything is read
    model = lstm_graph(initializers=[huge])
    model.graph.node[1].input.append("B")
    convert_fails(tmp_path, save(tmp_path, model), calibration, capsys, "tensor 'B'", "values")


def test_external_data_outside_the_folder(tmp_path: Path, calibration: Path, capsys) -> None:
    model = lstm_graph()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    folder = tmp_path / "m"
    folder.mkdir()
    path = save(folder, model)
    convert_fails(tmp_path, path, calibration, capsys, "outside the model's folder")


def test_external_data_beside_the_model_converts(tmp_path: Path, calibration, capsys) -> None:
    """Weights in a .data file beside the model (what torch writes for large models)."""
    model = lstm_graph()
    onnx.save_model(
        model, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.onnx.data",
        all_tensors_to_one_file=True, size_threshold=0,
    )  # fmt: skip
    assert (tmp_path / "ext.onnx.data").is_file()
    status, out, _ = run_cli(
        ["convert", tmp_path / "ext.onnx", "-c", calibration, "-o", tmp_path / "c"], capsys
    )
    assert status == 0, out


def test_cycle(tmp_path: Path, calibration: Path, capsys) -> None:
    model = lstm_graph()
    nodes = list(model.graph.node)
    nodes[0].input[0] = "last"  # the input Transpose reads the output: a cycle
    convert_fails(tmp_path, save(tmp_path, model), calibration, capsys, "cycle")


def test_commands_import_no_ml_framework(tmp_path: Path, calibration: Path) -> None:
    """Fresh interpreter: inspect and convert of an .onnx file load no torch, onnxruntime,
    tensorflow, keras or jax module."""
    out = str(tmp_path / "out")
    x = np.load(FIXTURES / "gru_bidirectional.npz")["calibration"]
    np.save(tmp_path / "cal.npy", x)
    model = str(FIXTURES / "gru_bidirectional.dynamo.onnx")
    commands = [["inspect", model], ["convert", model, "-c", str(tmp_path / "cal.npy"), "-o", out]]
    script = f"""
import sys
from lstm_embed import cli
for argv in {commands!r}:
    assert cli.main(argv) == 0, argv
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "onnxruntime",
                "tensorflow", "keras", "tf_keras", "jax"}})
print("LOADED", loaded)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout
    assert cli.EXIT_ERROR == 2
