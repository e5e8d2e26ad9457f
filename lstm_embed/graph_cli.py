"""The command line's graph paths: inspect, convert, run and compare on a Functional model that
is not one chain (or on its output folder). ``cli`` hands a command here when ``graph_of``
finds a graph; a chain takes the chain's path unchanged.

Inputs: a .npz with one array per model input, keyed by the model's input names (.npy for a
model with one input). Outputs of ``run``: a .npz with one array per output, ``output_0``,
``output_1``, ... in the model's order (report.json names each one's tensor); .npy when the
model has one output.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.ir.graph import Graph


class GraphInputError(ValueError):
    """Input arrays that do not match the model's inputs; the message says which."""


def graph_of(model_path: str) -> Graph | None:
    """The graph of a model file that is not one chain; None for a chain (or a file the
    chain reader refuses for another reason: its own error is the one to show)."""
    from lstm_embed.frontends import onnx
    from lstm_embed.frontends.keras.chain import CHAIN_ONLY
    from lstm_embed.frontends.keras.frontend import FrontendError, read_spec

    if onnx.is_onnx(model_path):  # the ONNX frontend reads chains only, and refuses branches
        return None
    try:
        read_spec(model_path)
        return None
    except FrontendError as error:
        if CHAIN_ONLY not in str(error):
            raise
    from lstm_embed.frontends.keras.graph import load_graph

    return load_graph(model_path)


def is_graph_folder(out_dir: str | Path) -> bool:
    from lstm_embed.targets.graph_host import is_graph_folder as written_by_graph

    return written_by_graph(out_dir)


def load_inputs(path: str, names: list[str], what: str) -> dict[str, np.ndarray]:
    """.npz keyed by input names, or .npy for one input."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as error:
        raise GraphInputError(f"{what} {path}: not a .npy/.npz file ({error})") from error
    if isinstance(data, np.lib.npyio.NpzFile):
        missing = [n for n in names if n not in data.files]
        if missing:
            raise GraphInputError(
                f"{what} {path}: no array {missing[0]!r}; a .npz holds one array per model"
                f" input, keyed by its name ({', '.join(names)}); it has {data.files}"
            )
        return {n: data[n] for n in names}
    if len(names) != 1:
        raise GraphInputError(
            f"{what} {path}: the model has {len(names)} inputs ({', '.join(names)}); give a"
            " .npz with one array per input, keyed by its name"
        )
    return {names[0]: data}


def folder_inputs(out_dir: str | Path, path: str) -> dict[str, np.ndarray]:
    """The float inputs of a converted graph's folder, keyed by its input names."""
    from lstm_embed.targets.graph_host import graph_report

    names = [x["name"] for x in graph_report(Path(out_dir))["graph"]["inputs"]]
    return {k: v.astype(np.float32) for k, v in load_inputs(path, names, "--input").items()}


def save_outputs(path: str, outputs: list[np.ndarray]) -> str:
    if path.endswith(".npz") or len(outputs) > 1:
        if not path.endswith(".npz"):
            raise GraphInputError(
                f"-o {path}: the model has {len(outputs)} outputs; write them to a .npz"
                " (output_0, output_1, ...)"
            )
        np.savez(path, **{f"output_{k}": y for k, y in enumerate(outputs)})
    else:
        np.save(path, outputs[0])
    shapes = ", ".join(f"output_{k} {y.shape}" for k, y in enumerate(outputs))
    return f"wrote {path}: {shapes} float32"


def inspect(args: argparse.Namespace, graph: Graph) -> int:
    print(f"{args.model}: a graph ({graph.meta.get('file_format', '')} file), "
          f"{len(graph.inputs)} input(s), {len(graph.outputs)} output(s)")  # fmt: skip
    for line in graph.describe():
        print(f"  {line}")
    print(f"total params: {graph.params}")
    return 0


def convert(
    args: argparse.Namespace,
    graph: Graph,
    options: Any,
    core: str,
    print_rounding: Callable[[dict], None],
) -> int:
    """``print_rounding``: the chain's line saying which weight rounding was kept."""
    from lstm_embed.emit.render import model_file_names
    from lstm_embed.graph_pipeline import convert_graph

    names = [t.name for t in graph.inputs]
    x = load_inputs(args.calibration, names, "--calibration")
    held_out = load_inputs(args.validation, names, "--validation") if args.validation else None
    result = convert_graph(graph, x, args.output, args.name, options, args.force, core, held_out)
    report = result.report
    for node in report["graph"]["nodes"]:
        print(f"  {node['name']} ({node['type']}) <- {', '.join(node['inputs'])}: {node['format']}")
    buffers = report["buffers"]
    print(
        f"params {report['params']}; {report['macs_per_step']} MACs/step; intermediate tensors"
        f" {buffers['arena_bytes']} B (largest set alive at once {buffers['peak_live_bytes']} B)"
    )
    for k, error in enumerate(report["calibration_error_vs_float_model"]):
        print(f"output_{k} vs the float model on the calibration data: max abs error"
              f" {error['max_abs_error']:.3g}")  # fmt: skip
    validation = report.get("validation")
    if validation:
        for k, error in enumerate(validation["outputs"]):
            print(f"output_{k} vs {validation['oracle']} on {validation['samples']} validation"
                  f" samples: max abs error {error['max_abs_error']:.3g}"
                  f" ({error['max_abs_error_pct_of_range']:.2f}% of the range), mean"
                  f" {error['mean_abs_error']:.3g}")  # fmt: skip
        print(f"validation inputs clipped: {validation['inputs_clipped']} of"
              f" {validation['input_values']}")  # fmt: skip
    print_rounding({"rounding": report.get("rounding")})  # the graph's validation is above
    files = ", ".join(model_file_names(report["name"]))
    print(f"wrote {result.out_dir}/: {files} and report.json")
    return 0


def run(args: argparse.Namespace) -> int:
    """run_f32() on the host, on an emulated board or on a real board (--port: flashed, its
    UART read); a board's outputs are checked against the host's bits."""
    from lstm_embed.targets.boards import get_board
    from lstm_embed.targets.graph_host import graph_report, run_graph_host

    board = None if args.board in (None, "host") else get_board(args.board)
    if board is not None and not board.emulated:
        from lstm_embed.targets import serial_port

        if not args.port:
            raise GraphInputError(serial_port.port_hint(board))
        serial_port.require_pyserial()  # before any build
    report = graph_report(Path(args.out_dir))
    names = [x["name"] for x in report["graph"]["inputs"]]
    x = {k: v.astype(np.float32) for k, v in load_inputs(args.input, names, "--input").items()}
    y_host = run_graph_host(Path(args.out_dir), x, "run_f32")
    if board is None:
        print(save_outputs(args.output, y_host))
        return 0
    from lstm_embed.targets.graph_firmware import run_graph_on_board, run_graph_qemu

    if board.emulated:
        y = run_graph_qemu(Path(args.out_dir), board.name, x, floats=True)["run_f32"]
    else:
        y = run_graph_on_board(Path(args.out_dir), board.name, x, args.port)["run_f32"]
    print(save_outputs(args.output, y))
    differ = [
        f"output_{k}" for k, (a, b) in enumerate(zip(y, y_host, strict=True))
        if a.shape != b.shape or not np.array_equal(a.view(np.uint32), b.view(np.uint32))
    ]  # fmt: skip
    if differ:
        raise GraphInputError(f"{board.name} differs from the host build in {', '.join(differ)}")
    values = sum(a.size for a in y)
    print(f"{board.name} equals the host build bit for bit ({values} float32 values)")
    return 0


def compare(args: argparse.Namespace) -> int:
    """The graph's host C (run_f32) vs Keras (or, without Keras, the float graph) on the
    inputs, per output; --labels (one output) and --report as for a chain
    (``tools.graph_compare``)."""
    from lstm_embed.pipeline import load_calibration
    from lstm_embed.tools.graph_compare import compare_graph

    x = folder_inputs(args.out_dir, args.input)
    try:
        labels = load_calibration(args.labels) if args.labels else None
    except ValueError as error:
        raise GraphInputError(f"--labels: {error}") from error
    report_dir = Path(args.report) if args.report else None
    if report_dir:  # before any work, so that a missing matplotlib leaves no folder behind
        from lstm_embed.tools.compare_report import _pyplot

        _pyplot()
    result = compare_graph(args.model, Path(args.out_dir), x, labels, report_dir)
    print(result["text"])
    if report_dir:
        print(f"wrote {report_dir}/report.md (+ PNG plots, report.json)")
    if args.json:
        Path(args.json).write_text(json.dumps(result["json"], indent=2, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0
