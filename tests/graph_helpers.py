"""Steps and checks the trained-graph modules (test_graph, test_graph_masking,
test_graph_time_concat) take alike: each keeps its models and its named bounds (in test_graph)
and passes them in, so one change to how a graph is converted or checked reaches all three."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.frontends.keras.graph import load_graph
from lstm_embed.graph_pipeline import GraphConversion, convert_graph
from lstm_embed.ir.graph import Graph
from lstm_embed.ir.graph_forward import forward
from lstm_embed.reference import graph_run
from lstm_embed.targets.graph_host import run_graph_host


@dataclass
class Converted:
    """A trained graph model converted once per module, with what its tests compare."""

    model: object
    graph: Graph
    conversion: GraphConversion
    x: dict[str, np.ndarray]
    keras_y: list[np.ndarray]


def predict(model: Any, graph: Graph, x: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Keras' outputs on ``x`` (inputs by name, in the graph's order), as a float64 list even
    for one output: the oracle the float and integer graphs are held to."""
    inputs = [x[t.name] for t in graph.inputs]
    y = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    return [np.asarray(a, np.float64) for a in (y if isinstance(y, list) else [y])]


def convert_built(built: tuple[Any, dict[str, np.ndarray]], folder: Path) -> Converted:
    """A builder's (keras model, inputs) saved to a .keras file in ``folder`` and converted
    from that file (as the CLI does), with Keras' predict: each module converts a model once."""
    model, x = built
    path = folder / "model.keras"
    model.save(path)
    graph = load_graph(path)
    conversion = convert_graph(path, x, folder / "out")
    return Converted(model, graph, conversion, x, predict(model, graph, x))


def span(y: np.ndarray) -> float:
    """The range of Keras' outputs: the bounds are fractions of it."""
    return float(y.max() - y.min())


def assert_forward_equals(
    graph: Graph, x: dict[str, np.ndarray], keras_y: list[np.ndarray], bound: float
) -> None:
    """The float64 graph's outputs (one per Keras output, same shapes) within ``bound`` of
    Keras' float32 predict ``keras_y``: the graph was read right."""
    y, _, _ = forward(graph, x)
    for ours, want in zip(y, keras_y, strict=True):
        assert ours.shape == want.shape
        assert np.max(np.abs(ours - want)) < bound


def assert_float_graph_equals_keras(converted: Converted, bound: float) -> None:
    """``assert_forward_equals`` on a converted model's inputs."""
    assert_forward_equals(converted.graph, converted.x, converted.keras_y, bound)


def assert_integer_graph_within_range(converted: Converted, fraction: float) -> None:
    """The integer reference (float in and out) within ``fraction`` of each Keras output's
    range: the quantization's error bound."""
    y = graph_run.run_float(converted.conversion.qgraph, converted.x)
    for ours, keras_y in zip(y, converted.keras_y, strict=True):
        assert np.max(np.abs(ours - keras_y)) <= fraction * span(keras_y)


def assert_host_bit_exact(converted: Converted) -> None:
    """run and run_f32, and step and step_f32 where every node streams, on the host under
    ASan/UBSan (48 samples): the integers equal the reference's; a vector output after the
    last step is run()'s."""
    qgraph, out = converted.conversion.qgraph, converted.conversion.out_dir
    x = {k: v[:48] for k, v in converted.x.items()}
    x_q = graph_run.quantize_inputs(qgraph, x)
    expected, expected_f = graph_run.run(qgraph, x_q), graph_run.run_float(qgraph, x)
    entries = ("run", "run_f32") + (("step", "step_f32") if qgraph.streaming else ())
    for entry in entries:
        floats = entry.endswith("_f32")
        got = run_graph_host(out, x if floats else x_q, entry, sanitize=True)
        for ours, want in zip(got, expected_f if floats else expected, strict=True):
            if entry.startswith("step") and want.ndim == 2:
                ours = ours[:, -1]
            np.testing.assert_array_equal(ours, want, err_msg=entry)


def assert_qemu_bit_exact(converted: Converted, board: str) -> None:
    """run(), and step() where the graph streams, of ``board``'s firmware in QEMU equal the
    reference on 3 samples (QEMU is slow; the host check above takes the many)."""
    from lstm_embed.targets.graph_firmware import run_graph_qemu

    qgraph = converted.conversion.qgraph
    x_q = {k: v[:3] for k, v in graph_run.quantize_inputs(qgraph, converted.x).items()}
    expected = graph_run.run(qgraph, x_q)
    got = run_graph_qemu(converted.conversion.out_dir, board, x_q)
    assert set(got) == ({"run", "step"} if qgraph.streaming else {"run"})
    for entry, outputs in got.items():
        for ours, want in zip(outputs, expected, strict=True):
            if entry == "step" and want.ndim == 2:
                ours = ours[:, -1]
            np.testing.assert_array_equal(ours, want, err_msg=f"{board} {entry}")
