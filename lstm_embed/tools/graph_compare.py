"""compare on a graph's folder: the host C (run_f32) against Keras (or, without Keras, the
float graph) per output, and with ``report_dir`` the report folder of a chain's compare with
the graph's rows: per node (``node_errors``), per recurrent node and timestep, input clipping
per input, and the split of each output's error into weight rounding and integer arithmetic.
The quantized graph is read from ``qgraph.npz`` in the folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit.report import errors
from lstm_embed.emit.report import task_metrics as report_task_metrics
from lstm_embed.frontends.keras.graph import load_graph
from lstm_embed.ir.graph import Graph, Node
from lstm_embed.ir.graph_forward import forward
from lstm_embed.ir.model import leaf_traces, leaves
from lstm_embed.quantize.graph_quantizer import QGraph, check_inputs
from lstm_embed.quantize.qgraph_file import NEAREST_QGRAPH, QGRAPH_FILE, load_qgraph
from lstm_embed.reference import graph_run
from lstm_embed.reference import interpreter as reference
from lstm_embed.reference.trace import layer_steps
from lstm_embed.targets.graph_host import graph_report, run_graph_host
from lstm_embed.tools import keras_live
from lstm_embed.tools.compare import _same_weights, input_clipping, recurrent_row, same_floats
from lstm_embed.tools.compare_report import jsonable, write_report
from lstm_embed.tools.node_errors import graph_values, mark_outputs, node_rows


class GraphCompareError(ValueError):
    """Inputs or labels that do not fit the graph; the message says which."""


def compare_graph(
    model_path: str | Path,
    out_dir: Path,
    x: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
    report_dir: Path | None = None,
) -> dict[str, Any]:
    out_dir = Path(out_dir)
    report = graph_report(out_dir)
    graph = load_graph(model_path)
    names = [t.name for t in graph.inputs]
    if names != [i["name"] for i in report["graph"]["inputs"]]:
        raise GraphCompareError(f"{out_dir}: converted from {model_path}? (other inputs)")
    x32 = {k: v.astype(np.float32) for k, v in check_inputs(graph, x, "--input").items()}
    c_y = run_graph_host(out_dir, x32, "run_f32")
    expected, oracle = live_outputs(model_path, graph, x32)
    outputs = []
    for k, (want, got) in enumerate(zip(expected, c_y, strict=True)):
        tensor = report["graph"]["outputs"][k]["tensor"]
        outputs.append({"name": f"output_{k}", "tensor": tensor,
                        **errors(want, got.astype(np.float64))})  # fmt: skip
    numbers: dict[str, Any] = {
        "model": str(model_path),
        "oracle": oracle,
        "out_dir": str(out_dir),
        "samples": len(c_y[0]),
        "outputs": outputs,
        "input_clipping": {
            i["name"]: input_clipping(_as_sequence(x32[i["name"]]), np.asarray(i["scale"]))
            for i in report["graph"]["inputs"]
        },
        **task_metrics(graph, expected, c_y, labels),
    }
    if report_dir is not None:
        qgraph = load_qgraph(out_dir / QGRAPH_FILE)
        for k, ours in enumerate(graph_run.run_float(qgraph, x32)):
            outputs[k]["c_equals_reference"] = same_floats(ours, c_y[k])
        numbers["nodes"] = node_rows(graph_values(graph, qgraph, x32))
        mark_outputs(numbers["nodes"], outputs)
        numbers["layers"] = recurrent_rows(graph, qgraph, x32)
        numbers["error_budget"] = error_budget(graph, qgraph, x32, expected)
        numbers["rounding"] = rounding_section(graph, qgraph, out_dir, x32, report)
        numbers["report_dir"] = str(report_dir)
        flat = [np.concatenate([a.reshape(len(a), -1) for a in ys], axis=1)
                for ys in (expected, [y.astype(np.float64) for y in c_y])]  # fmt: skip
        write_report(Path(report_dir), numbers, *flat)
    return {"json": jsonable(numbers), "text": text(numbers, report)}


def _as_sequence(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 3 else x[:, None, :]


def live_outputs(model_path, graph: Graph, x: dict[str, np.ndarray]) -> tuple[list, str]:
    """Keras' predict of the file, one array per output; without Keras the float graph."""
    live = keras_live.load(model_path, graph.meta.get("file_format", "").startswith("keras2"))
    if live is None:
        y = forward(graph, x)[0]
        return y, "lstm-embed float graph (Keras not importable; tests hold it equal to Keras)"
    model, oracle = live
    arrays = [x[t.name] for t in graph.inputs]
    y = model.predict(arrays if len(arrays) > 1 else arrays[0], verbose=0)
    return [np.asarray(a, np.float64) for a in (y if isinstance(y, list) else [y])], oracle


def task_metrics(graph: Graph, expected: list, c_y: list, labels) -> dict[str, float]:
    """A chain's task metrics for a graph with one output (accuracy after a softmax head or
    for class ids given to a multi-output head, else RMSE)."""
    if labels is None:
        return {}
    if len(expected) != 1:
        raise GraphCompareError(
            f"--labels: the model has {len(expected)} outputs; labels apply to a model with one"
        )
    node, _ = graph.producer(graph.outputs[0])
    summary = node.layer.summary() if node is not None else {}
    labels = np.asarray(labels)
    keras_y, ours = expected[0], c_y[0].astype(np.float64)
    ids = labels.dtype.kind in "iu" and labels.ndim == keras_y.ndim - 1 and keras_y.shape[-1] > 1
    classifier = summary.get("activation") == "softmax" or ids
    if labels.shape[0] != keras_y.shape[0]:
        raise GraphCompareError(f"--labels: {labels.shape[0]} rows for {keras_y.shape[0]} inputs")
    return report_task_metrics(keras_y, ours, labels, classifier)


def recurrent_rows(graph: Graph, qgraph: QGraph, x: dict[str, np.ndarray]) -> list[dict]:
    """Per recurrent node (a Bidirectional's directions apart): |h| and |c| error per step."""
    traces: dict[str, list] = {}
    graph_run.run_tensors(qgraph, graph_run.quantize_inputs(qgraph, x), traces)
    _, float_traces, _ = forward(graph, {k: v.astype(np.float64) for k, v in x.items()})
    rows = []
    for node, qnode in zip(graph.nodes, qgraph.graph.nodes, strict=True):
        if not any(leaf.recurrent for leaf in leaves(qnode.layer)):
            continue
        trace = reference.Trace()
        trace.add_layer(traces.get(node.name, []))
        floats = leaf_traces([node.layer], [float_traces[node.name]])
        for qlayer, float_trace in zip(leaves(qnode.layer), floats, strict=True):
            row = recurrent_row(qlayer, float_trace, layer_steps(trace, qlayer.name))
            rows += [row] if row is not None else []
    return rows


def rounding_section(graph: Graph, qgraph: QGraph, out_dir: Path, x: dict, report: dict) -> dict:
    """Per node, its output error (integer reference vs float graph) with nearest rounding and
    with the rounding convert kept (``qgraph_nearest.npz`` beside qgraph.npz when they
    differ), and what convert measured on its held-out sequences."""
    record = report.get("rounding") or {"option": "nearest", "kept": "nearest"}
    nearest_path = out_dir / NEAREST_QGRAPH
    nearest = load_qgraph(nearest_path) if nearest_path.is_file() else qgraph
    variants = {"nearest": node_rows(graph_values(graph, nearest, x))}
    if nearest is not qgraph:
        variants["kept"] = node_rows(graph_values(graph, qgraph, x))
    layers = []
    for node, qnode, near in zip(graph.nodes, qgraph.graph.nodes, nearest.graph.nodes,
                                 strict=True):  # fmt: skip
        same = _same_weights(qnode.layer, near.layer)
        row: dict[str, Any] = {
            "layer": node.name,
            "rounding": "nearest" if same else record.get("kept", "nearest"),
        }
        for name, rows in variants.items():
            found = next(r for r in rows if r["tensor"] == node.outputs[0])
            row[f"{name}_max_abs_error"] = found["max_abs_error"]
            row[f"{name}_mean_abs_error"] = found["mean_abs_error"]
        layers.append(row)
    return {"convert": record, "layers": layers}


def dequantized_graph(graph: Graph, qgraph: QGraph) -> Graph:
    """The float graph with the rounded weights of ``qgraph`` (everything else float)."""
    nodes = tuple(
        Node(node.layer.dequantized(q.layer, qgraph.scales[node.inputs[0]]), node.inputs,
             node.outputs)
        for node, q in zip(graph.nodes, qgraph.graph.nodes, strict=True)
    )  # fmt: skip
    return replace(graph, nodes=nodes)


def error_budget(graph: Graph, qgraph: QGraph, x: dict, expected: list) -> list[dict]:
    """Per output, the max abs error each stage adds, as a chain's ``error_budget``."""
    x64 = {k: v.astype(np.float64) for k, v in x.items()}
    x_q = graph_run.quantize_inputs(qgraph, x)
    x_deq = {k: v * qgraph.scales[k] for k, v in x_q.items()}
    weights = dequantized_graph(graph, qgraph)
    stages = {
        "float_forward": forward(graph, x64)[0],
        "weights": forward(weights, x64)[0],
        "input": forward(weights, x_deq)[0],
        "reference": graph_run.run_float(qgraph, x),
    }
    rows = []
    for k, keras_y in enumerate(expected):
        y = {name: np.asarray(v[k], np.float64) for name, v in stages.items()}
        rows.append({
            "output": f"output_{k}",
            "float_forward_vs_keras": float(np.max(np.abs(y["float_forward"] - keras_y))),
            "int8_weights_vs_keras": float(np.max(np.abs(y["weights"] - keras_y))),
            "int16_input_vs_int8_weights": float(np.max(np.abs(y["input"] - y["weights"]))),
            "integer_arithmetic_vs_float_int8": float(np.max(np.abs(y["reference"] - y["input"]))),
        })  # fmt: skip
    return rows


def text(numbers: dict[str, Any], report: dict[str, Any]) -> str:
    lines = [f"{numbers['model']} vs {numbers['out_dir']} (host C, run_f32) on"
             f" {numbers['samples']} samples; {numbers['oracle']}"]  # fmt: skip
    for output in numbers["outputs"]:
        lines.append(
            f"{output['name']} ({output['tensor']}): max abs error {output['max_abs_error']:.3g}"
            f" ({output['max_abs_error_pct_of_range']:.2f}% of the range), mean"
            f" {output['mean_abs_error']:.3g}"
        )
    for key in ("keras_accuracy", "c_accuracy", "keras_rmse", "c_rmse"):
        if key in numbers:
            lines.append(f"  {key:28s} {numbers[key]:.4f}")
    for name, clip in numbers["input_clipping"].items():
        lines.append(f"  inputs beyond int16 range ({name}) {clip['count']}"
                     f" ({clip['fraction']:.2%})")  # fmt: skip
    if "report_dir" in numbers:
        lines.append(f"report: {numbers['report_dir']}/report.md")
    return "\n".join(lines)
