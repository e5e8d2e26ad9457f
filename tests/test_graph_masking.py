"""Masking inside graphs (issue 19): a Masking layer's mask is a tensor of the graph that the
recurrent layers it reaches read (tests/graph_mask_models.py: trained on sequences padded with
zeros, fixed seeds).

Each model is held to Keras on the padded inputs (float graph within float32 rounding, the
integer model within GRAPH_RANGE_FRACTION of the Keras output range), its host C (ASan/UBSan)
and its Cortex-M builds (QEMU M0, M4, M55) to the integer reference bit for bit through every
entry point, and the mask is shown to matter: the same graph with the masks dropped is off by
more than the bound.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.frontends.keras.frontend import FrontendError
from lstm_embed.frontends.keras.graph import load_graph
from lstm_embed.ir.graph import Graph, Node
from lstm_embed.ir.graph_forward import forward
from tests import graph_mask_models
from tests.graph_helpers import (
    Converted,
    assert_float_graph_equals_keras,
    assert_forward_equals,
    assert_host_bit_exact,
    assert_integer_graph_within_range,
    assert_qemu_bit_exact,
    convert_built,
    predict,
    span,
)
from tests.test_graph import FLOAT_MATCH, GRAPH_RANGE_FRACTION

MODELS = (
    "masked_seq_static",
    "masked_add",
    "masked_gap",
    "masked_attention",
    "masked_attention_causal",
)


@pytest.fixture(scope="module", params=MODELS)
def converted(request, tmp_path_factory) -> Converted:
    built = graph_mask_models.build(request.param)
    return convert_built(built, tmp_path_factory.mktemp(request.param))


@pytest.mark.slow
def test_the_mask_reaches_the_recurrent_layers(converted: Converted) -> None:
    """Every LSTM under the Masking (and the average pooling, the attention) reads its mask;
    the layers past the last output drop it."""
    graph = converted.graph
    masking = next(n for n in graph.nodes if n.layer.computes_mask)
    assert graph.tensors[masking.mask_output].dtype == "bool"
    readers = {n.name for n in graph.nodes if n.mask == masking.mask_output}
    assert readers == {n.name for n in graph.nodes if n.layer.recurrent or n.layer.reads_mask}


@pytest.mark.slow
def test_masked_float_graph_equals_keras(converted: Converted) -> None:
    assert_float_graph_equals_keras(converted, FLOAT_MATCH)


@pytest.mark.slow
def test_masked_integer_graph_within_keras_range(converted: Converted) -> None:
    assert_integer_graph_within_range(converted, GRAPH_RANGE_FRACTION)


@pytest.mark.slow
def test_the_mask_matters(converted: Converted) -> None:
    """Without its masks (the recurrent layers running through the padding) the same graph is
    off Keras by more than the bound on the padded inputs: the tests above measure masking."""
    graph = converted.graph
    nodes = tuple(Node(n.layer, n.inputs, n.outputs) for n in graph.nodes)
    unmasked = replace(graph, nodes=nodes)
    y, _, _ = forward(unmasked, converted.x)
    for ours, keras_y in zip(y, converted.keras_y, strict=True):
        assert np.max(np.abs(ours - keras_y)) > GRAPH_RANGE_FRACTION * span(keras_y)


@pytest.mark.slow
def test_masked_host_c_is_bit_exact_with_the_reference(converted: Converted) -> None:
    """run, run_f32, and step, step_f32 where the graph streams (not with the pooling), on
    the host under ASan/UBSan equal the reference."""
    assert_host_bit_exact(converted)


@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-m0", "qemu-m4", "qemu-m55"])
def test_masked_cortex_m_is_bit_exact(converted: Converted, board, toolchain) -> None:
    assert_qemu_bit_exact(converted, board)


@pytest.mark.slow
def test_keras2_file_carries_the_mask_by_the_rules(tmp_path: Path) -> None:
    """tf_keras writes no mask tensors: the frontend's propagation rules find the same mask."""
    import tf_keras

    model, x = graph_mask_models.build("masked_add", keras=tf_keras)
    path = tmp_path / "masked_add.h5"
    model.save(path)
    graph = load_graph(path)
    assert [n.mask for n in graph.nodes if n.layer.recurrent] == ["masking_mask"]
    assert_forward_equals(graph, x, predict(model, graph, x), FLOAT_MATCH)


def _save(model, path: Path) -> Path:
    model.save(path)
    return path


def test_masks_refused_where_not_supported(tmp_path: Path) -> None:
    """A mask reaching a layer that would read it and cannot yet, or a merge of two masks."""
    import keras

    layers = keras.layers
    inp = keras.Input((6, 3), name="x")
    masked = layers.Masking(name="pad")(inp)
    seq = layers.LSTM(4, return_sequences=True, name="rec")(masked)
    both_ways = layers.Bidirectional(layers.LSTM(2), name="bidir")(seq)
    side = layers.Dense(2, name="side")(inp)
    path = _save(keras.Model(inp, [both_ways, side]), tmp_path / "bidir.keras")
    with pytest.raises(FrontendError, match=r"'bidir' \(Bidirectional\): the mask of a"):
        load_graph(path)

    other = layers.Masking(mask_value=1.0, name="pad1")(inp)
    both = layers.Add(name="sum")([masked, other])
    path = _save(keras.Model(inp, [layers.LSTM(2)(both), side]), tmp_path / "two.keras")
    with pytest.raises(FrontendError, match=r"'sum' \(Add\): its operands carry different masks"):
        load_graph(path)


def test_a_mask_is_a_tensor_the_graph_checks() -> None:
    """A node's mask must be a bool tensor of its input's timesteps, read by a recurrent layer."""
    from lstm_embed.ir.graph import TensorSpec
    from lstm_embed.kinds import IRError
    from tests.helpers import random_model

    model = random_model(3, 3, [4], 5)
    layer = model.layers[0]
    spec = TensorSpec("x", (5, 3))
    with pytest.raises(IRError, match="is not a mask"):
        Graph("g", (spec,), (Node(layer, ("x",), ("rec",), "x"),), ("rec",))
