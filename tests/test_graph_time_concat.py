"""Concatenate on the time axis in graphs (issue 19): two sequences joined along time feeding an
LSTM (tests/graph_mask_models.py ``build_time_concat``: a (16, 4) and an (8, 4) input; a
sequence and its per-timestep Dense version), trained with fixed seeds.

Each is held to Keras (float graph within float32 rounding, the integer model within
GRAPH_RANGE_FRACTION of the Keras output range) and its C to the integer reference bit for bit:
host (ASan/UBSan) through run and run_f32, QEMU M0, M4 and M55 through run. Such a graph's
sequences have different lengths, so it is run-only and run() takes whole windows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lstm_embed.frontends.keras.graph import load_graph
from lstm_embed.graph_pipeline import convert_graph
from lstm_embed.ir.graph_forward import forward
from lstm_embed.reference import graph_run
from lstm_embed.targets.graph_host import run_graph_host
from tests import graph_mask_models
from tests.test_graph import FLOAT_MATCH, GRAPH_RANGE_FRACTION, Converted, _predict

MODELS = ("two_inputs", "processed")


@pytest.fixture(scope="module", params=MODELS)
def converted(request, tmp_path_factory) -> Converted:
    model, x = graph_mask_models.build_time_concat(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    path = folder / "model.keras"
    model.save(path)
    graph = load_graph(path)
    conversion = convert_graph(path, x, folder / "out")
    return Converted(model, graph, conversion, x, _predict(model, graph, x))


@pytest.mark.slow
def test_time_concat_joins_the_timesteps(converted: Converted) -> None:
    graph = converted.graph
    node = next(n for n in graph.nodes if n.layer.joins_timesteps)
    steps = [graph.tensors[t].shape[0] for t in node.inputs]
    assert graph.tensors[node.outputs[0]].shape[0] == sum(steps)
    report = json.loads((converted.conversion.out_dir / "report.json").read_text())
    assert report["fixed_windows"] and report["run_only"]


@pytest.mark.slow
def test_time_concat_float_graph_equals_keras(converted: Converted) -> None:
    y, _, _ = forward(converted.graph, converted.x)
    for ours, keras_y in zip(y, converted.keras_y, strict=True):
        assert np.max(np.abs(ours - keras_y)) < FLOAT_MATCH


@pytest.mark.slow
def test_time_concat_integer_graph_within_keras_range(converted: Converted) -> None:
    y = graph_run.run_float(converted.conversion.qgraph, converted.x)
    for ours, keras_y in zip(y, converted.keras_y, strict=True):
        span = float(keras_y.max() - keras_y.min())
        assert np.max(np.abs(ours - keras_y)) <= GRAPH_RANGE_FRACTION * span


@pytest.mark.slow
def test_time_concat_host_c_is_bit_exact(converted: Converted) -> None:
    qgraph, out = converted.conversion.qgraph, converted.conversion.out_dir
    assert not qgraph.streaming
    x = {k: v[:48] for k, v in converted.x.items()}
    x_q = graph_run.quantize_inputs(qgraph, x)
    expected, expected_f = graph_run.run(qgraph, x_q), graph_run.run_float(qgraph, x)
    for entry, inputs, want in (("run", x_q, expected), ("run_f32", x, expected_f)):
        got = run_graph_host(out, inputs, entry, sanitize=True)
        for ours, theirs in zip(got, want, strict=True):
            np.testing.assert_array_equal(ours, theirs, err_msg=entry)


@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-m0", "qemu-m4", "qemu-m55"])
def test_time_concat_cortex_m_is_bit_exact(converted: Converted, board, toolchain) -> None:
    from lstm_embed.targets.graph_firmware import run_graph_qemu

    qgraph = converted.conversion.qgraph
    x_q = {k: v[:3] for k, v in graph_run.quantize_inputs(qgraph, converted.x).items()}
    expected = graph_run.run(qgraph, x_q)
    got = run_graph_qemu(converted.conversion.out_dir, board, x_q)
    assert set(got) == {"run"}
    for ours, want in zip(got["run"], expected, strict=True):
        np.testing.assert_array_equal(ours, want, err_msg=board)
