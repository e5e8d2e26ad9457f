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

import pytest

from tests import graph_mask_models
from tests.graph_helpers import (
    Converted,
    assert_float_graph_equals_keras,
    assert_host_bit_exact,
    assert_integer_graph_within_range,
    assert_qemu_bit_exact,
    convert_built,
)
from tests.test_graph import FLOAT_MATCH, GRAPH_RANGE_FRACTION

MODELS = ("two_inputs", "processed")


@pytest.fixture(scope="module", params=MODELS)
def converted(request, tmp_path_factory) -> Converted:
    built = graph_mask_models.build_time_concat(request.param)
    return convert_built(built, tmp_path_factory.mktemp(request.param))


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
    assert_float_graph_equals_keras(converted, FLOAT_MATCH)


@pytest.mark.slow
def test_time_concat_integer_graph_within_keras_range(converted: Converted) -> None:
    assert_integer_graph_within_range(converted, GRAPH_RANGE_FRACTION)


@pytest.mark.slow
def test_time_concat_host_c_is_bit_exact(converted: Converted) -> None:
    """run and run_f32 only: the graph is run-only (its sequences differ in length)."""
    assert not converted.conversion.qgraph.streaming
    assert_host_bit_exact(converted)


@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-m0", "qemu-m4", "qemu-m55"])
def test_time_concat_cortex_m_is_bit_exact(converted: Converted, board, toolchain) -> None:
    """run() only (the helper checks that no step() was built)."""
    assert_qemu_bit_exact(converted, board)
