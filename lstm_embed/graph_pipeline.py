"""The conversion pipeline of a graph (a Functional model that is not one chain): frontend ->
quantizer -> emitter, written atomically to a folder as a chain's is (``pipeline``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.graph_render import emit_graph, graph_context
from lstm_embed.emit.render import core_kernels
from lstm_embed.emit.report import errors
from lstm_embed.ir.graph import Graph
from lstm_embed.ir.graph_forward import forward
from lstm_embed.pipeline import check_output_folder, write_atomically
from lstm_embed.quantize.graph_quantizer import QGraph, check_inputs, quantize_graph, with_layers
from lstm_embed.quantize.qgraph_file import NEAREST_QGRAPH, QGRAPH_FILE, save_qgraph
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.quantize.rounding import NEAREST
from lstm_embed.reference.graph_run import run_float
from lstm_embed.targets.hostbuild import REPORT_FORMAT
from lstm_embed.version import __version__


@dataclass
class GraphConversion:
    graph: Graph
    qgraph: QGraph
    report: dict[str, Any]
    out_dir: Path


def load(path: str | Path) -> Graph:
    from lstm_embed.frontends.keras.graph import load_graph

    return load_graph(path)


def as_inputs(graph: Graph, data: Any) -> dict[str, np.ndarray]:
    """A dict by input name, a list in the inputs' order, or one array for one input."""
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, list | tuple):
        if len(data) != len(graph.inputs):
            raise ValueError(f"{len(data)} arrays for {len(graph.inputs)} inputs")
        return {t.name: x for t, x in zip(graph.inputs, data, strict=True)}
    if len(graph.inputs) != 1:
        names = ", ".join(t.name for t in graph.inputs)
        raise ValueError(f"the model has {len(graph.inputs)} inputs ({names}): give one per name")
    return {graph.inputs[0].name: data}


def graph_report(graph: Graph, qgraph: QGraph, context: dict, x: dict, keras_y=None) -> dict:
    tensors = graph.tensors
    report: dict[str, Any] = {
        "tool": f"lstm-embed {__version__}",
        "format": REPORT_FORMAT,
        "name": context["name"],
        "source": graph.source,
        "keras_version": graph.meta.get("keras_version", ""),
        "file_format": graph.meta.get("file_format", ""),
        "timesteps": context["timesteps"],
        "params": graph.params,
        "macs_per_step": qgraph.macs_per_step,
        "run_only": context["run_only_reason"],
        "fixed_windows": context["fixed_windows"],
        "graph": {
            "inputs": [
                {**{k: i[k] for k in ("name", "c", "size", "sequence")}, "timesteps": i["steps"],
                 "scale": [float(s) for s in qgraph.scales[i["name"]]]}
                for i in context["graph_inputs"]
            ],
            "outputs": [
                {"name": f"output_{k}", "tensor": o["tensor"], "c_name": o["c_name"],
                 "size": o["size"], "sequence": o["sequence"], "timesteps": o["steps"],
                 "scale": [float(s) for s in qgraph.scales[o["tensor"]]]}
                for k, o in enumerate(context["graph_outputs"])
            ],
            "nodes": [
                {"name": n.name, "type": n.layer.summary()["type"], "inputs": list(n.inputs),
                 "outputs": list(n.outputs), "format": q.layer.format()}
                for n, q in zip(graph.nodes, qgraph.graph.nodes, strict=True)
            ],
            "tensors": {name: list(t.shape) for name, t in tensors.items()},
        },
        # the intermediate tensors' RAM: placed by liveness in one arena
        "buffers": context["buffers"],
        "rounding": qgraph.rounding,
    }  # fmt: skip
    y_q = run_float(qgraph, x)
    if keras_y is not None:
        report["calibration_error_vs_keras"] = [errors(a, b) for a, b in
                                                  zip(keras_y, y_q, strict=True)]  # fmt: skip
    else:
        float_y, _, _ = forward(graph, x)
        report["calibration_error_vs_float_model"] = [errors(a, b) for a, b in
                                                      zip(float_y, y_q, strict=True)]  # fmt: skip
    return report


def validation_report(graph: Graph, qgraph: QGraph, x: dict[str, np.ndarray]) -> dict:
    """The integer graph against the float graph on held-out inputs (by input name): per
    output the errors; how many input values saturate int16 at the calibrated scales."""
    x32 = {k: v.astype(np.float32) for k, v in x.items()}
    float_y, _, _ = forward(graph, x32)
    y_q = run_float(qgraph, x32)
    clipped = sum(
        int(np.sum(np.abs(x32[t.name] * qgraph.inv_scale(t.name).astype(np.float32)) > 32767))
        for t in graph.inputs
    )
    return {
        "samples": len(next(iter(x32.values()))),
        "oracle": "the float model",
        "outputs": [errors(a, b) for a, b in zip(float_y, y_q, strict=True)],
        "inputs_clipped": clipped,
        "input_values": sum(int(v.size) for v in x32.values()),
    }


def convert_graph(
    model: Any,
    calibration: Any,
    out_dir: str | Path,
    name: str | None = None,
    options: QuantizeOptions | None = None,
    force: bool = False,
    core: str = "all",
    validation: Any = None,
) -> GraphConversion:
    """A graph (a Graph, or a .keras/.h5 path) + calibration inputs (dict by input name, list,
    or one array) -> C in out_dir. ``validation`` (inputs as calibration's): the error of the
    integer graph against the float graph on them, in report.json "validation"."""
    graph = model if isinstance(model, Graph) else load(model)
    name = cformat.c_identifier(graph.name if name is None else name)
    out_dir = Path(out_dir)
    check_output_folder(out_dir, force)
    core_kernels(core)
    x = check_inputs(graph, as_inputs(graph, calibration), "calibration data")
    held_out = None
    if validation is not None:
        held_out = check_inputs(graph, as_inputs(graph, validation), "validation data")
    record: list = []
    qgraph = quantize_graph(graph, x, options or QuantizeOptions(), record)
    context = graph_context(qgraph, name, core)
    x32 = {k: v.astype(np.float32) for k, v in x.items()}
    report = graph_report(graph, qgraph, context, x32)
    report["core"] = core
    if held_out is not None:
        report["validation"] = validation_report(graph, qgraph, held_out)

    def write(folder: Path) -> None:
        emit_graph(qgraph, folder, name, core)
        save_qgraph(qgraph, folder / QGRAPH_FILE)  # for trace and compare --report
        if record[0].kept != NEAREST:  # for compare --report: nearest vs kept per node
            save_qgraph(with_layers(qgraph, record[0].nearest_layers), folder / NEAREST_QGRAPH)
        (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")

    write_atomically(out_dir, write)
    return GraphConversion(graph, qgraph, report, out_dir)
