"""The compare report folder: report.md, report.json and PNG plots (matplotlib, Agg backend).

Numbers come from ``compare``; this module only arranges them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

HISTOGRAM = "error_histogram.png"
LAYERS = "layer_error_per_step.png"
STREAM = "stream_error.png"


def jsonable(value: Any) -> Any:
    """numpy scalars -> Python numbers, tuples -> lists, recursively."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


REPORT_EXTRA = "pip install 'lstm-embed[report]'"


class MissingExtra(RuntimeError):
    """An optional dependency of the report is not installed (the CLI prints it as one line)."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise MissingExtra(
            f"--report needs matplotlib, which is not installed: {REPORT_EXTRA}"
        ) from error

    return plt


def plot_histogram(path: Path, keras_y: np.ndarray, c_y: np.ndarray) -> None:
    plt = _pyplot()
    error = np.abs(c_y - keras_y).ravel()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(error, bins=60, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("|C - Keras| per output value")
    ax.set_ylabel("count")
    ax.set_title(f"output error, {error.size} values")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layers(path: Path, layers: list[dict[str, Any]]) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharex=True)
    for layer in layers:
        for ax, key in zip(axes, ("h_error", "c_error"), strict=True):
            if key not in layer:  # a GRU keeps no cell
                continue
            steps = np.arange(len(layer[key]["max"]))
            (line,) = ax.plot(steps, layer[key]["max"], label=f"{layer['layer']} max")
            ax.plot(steps, layer[key]["mean"], "--", color=line.get_color(), label="mean")
    for ax, what in zip(axes, ("h", "c"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("timestep")
        ax.set_ylabel(f"|{what} integer - {what} float|")
        ax.set_title(f"{what} error per timestep")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stream(path: Path, stream: dict[str, Any]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(stream["steps"])
    ax.plot(steps, stream["error"]["max"], label="max over streams")
    ax.plot(steps, stream["error"]["mean"], label="mean")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("|output integer - output float|")
    ax.set_title(f"error over {stream['steps']} streamed steps ({stream['sequences']} streams)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def markdown(numbers: dict[str, Any]) -> str:
    lines = [
        f"# lstm-embed compare: {numbers['model']}",
        "",
        f"Generated C in `{numbers['out_dir']}` (host build) against {numbers['oracle']} on"
        f" {numbers['samples']} sequences.",
        "",
        "## Output",
        "",
    ]
    if "outputs" in numbers:  # a graph: a row per output
        header = ["output", "tensor", "max abs error", "mean abs error", "% of range"]
        keys = ["name", "tensor", "max_abs_error", "mean_abs_error", "max_abs_error_pct_of_range"]
        if "c_equals_reference" in numbers["outputs"][0]:
            header, keys = [*header, "C = reference bit for bit"], [*keys, "c_equals_reference"]
        lines += [*_table(header, [[o[k] for k in keys] for o in numbers["outputs"]]), ""]
        rows = []
    else:
        rows = [
            ["max abs error", numbers["max_abs_error"]],
            ["mean abs error", numbers["mean_abs_error"]],
            ["max abs error, % of output range", numbers["max_abs_error_pct_of_range"]],
        ]
    for key in ("keras_accuracy", "c_accuracy", "keras_rmse", "c_rmse"):
        if key in numbers:
            rows.append([key.replace("_", " "), numbers[key]])
    if rows:
        lines += [*_table(["", "value"], rows), ""]
    lines += [f"![output error histogram]({HISTOGRAM})", ""]
    clipping = numbers["input_clipping"]
    if "outputs" in numbers:
        for name, clip in clipping.items():
            lines += _clipping(clip, f" of input `{name}`")
    else:
        lines += _clipping(clipping, "")
    if "nodes" in numbers:
        lines += _nodes(numbers["nodes"])
    if "layers" in numbers:
        lines += _analysis(numbers)
    else:
        lines += [f"(No `qmodel.npz` in {numbers['out_dir']}: per-layer sections skipped.)", ""]
    if "rounding" in numbers:
        lines += _rounding(numbers["rounding"])
    return "\n".join(lines)


def _clipping(clip: dict[str, Any], what: str) -> list[str]:
    return [
        f"## Input clipping{what}",
        "",
        f"{clip['count']} input values ({clip['fraction']:.3%}) in {clip['sequences_affected']}"
        " sequences lie beyond the int16 input range and saturate on the device"
        " (declare a wider range with `--input-range`).",
        "",
        *_table(
            ["feature", "limit |x|", "values beyond"],
            [
                [i, limit, count]
                for i, (limit, count) in enumerate(
                    zip(clip["limit_per_feature"], clip["per_feature"], strict=True)
                )
            ],
        ),
        "",
    ]


NODE_COLUMNS = [
    ("node", "node"),
    ("type", "type"),
    ("inputs", "inputs"),
    ("tensor", "tensor"),
    ("shape", "shape"),
    ("float_max_abs", "float max abs"),
    ("max_abs_error", "max abs error"),
    ("mean_abs_error", "mean abs error"),
    ("max_abs_error_pct_of_range", "% of range"),
    ("output", "output"),
    ("c_vs_oracle_max_abs_error", "C vs oracle, max abs error"),
    ("c_equals_reference", "C = reference"),
]


def _nodes(rows: list[dict[str, Any]]) -> list[str]:
    def cell(row: dict[str, Any], key: str) -> Any:
        value = row.get(key, row.get("note", "") if key == "max_abs_error" else "")
        if key == "inputs":
            return ", ".join(value)
        return "x".join(str(v) for v in value) if key == "shape" else value

    return [
        "## Per node",
        "",
        "Every tensor, integer reference (equal to the C bit for bit) in real units against the"
        " float forward pass of the same weights: the model inputs (their int16 quantization),"
        " then each node's outputs (a recurrent layer's returned states too), with the tensors"
        " each node reads. Model outputs also give the C against the oracle.",
        "",
        *_table(
            [h for _, h in NODE_COLUMNS],
            [[cell(r, k) for k, _ in NODE_COLUMNS] for r in rows],
        ),
        "",
    ]


def _rounding(section: dict[str, Any]) -> list[str]:
    """Nearest rounding against the rounding convert kept, per layer."""
    record = section["convert"]
    layers = section.get("layers", [])
    kept = any("kept_max_abs_error" in la for la in layers)
    lines = [
        "## Weight rounding",
        "",
        f"convert: `--rounding {record.get('option', 'nearest')}`, kept"
        f" {record.get('kept', 'nearest')}. Each layer's output, integer reference against the"
        " float forward pass on these inputs, with every layer rounded to nearest and with the"
        " rounding kept.",
        "",
    ]
    header = ["layer", "rounding", "nearest: max abs error", "nearest: mean abs error"]
    keys = ["layer", "rounding", "nearest_max_abs_error", "nearest_mean_abs_error"]
    if kept:
        header += ["kept: max abs error", "kept: mean abs error"]
        keys += ["kept_max_abs_error", "kept_mean_abs_error"]
    if layers:
        lines += [*_table(header, [[la[k] for k in keys] for la in layers]), ""]
    held = record.get("held_out")
    if held:
        from lstm_embed.quantize.calibration import decided_on

        near, gptq = held["nearest"], held["gptq"]
        lines += [
            f"convert's choice, on {decided_on(held)}: max abs error {gptq['max_abs_error']:.4g}"
            f" (nearest {near['max_abs_error']:.4g}), mean {gptq['mean_abs_error']:.4g} (nearest"
            f" {near['mean_abs_error']:.4g}).",
            "",
        ]
    if record.get("note"):
        lines += [f"convert: {record['note']}.", ""]
    return lines


LAYER_COLUMNS = [
    ("layer", "layer"),
    ("cell_format", "cell format"),
    ("h_max_abs_error", "max abs h error"),
    ("c_max_abs_error", "max abs c error"),
    ("float_max_abs_cell", "float max abs c"),
    ("cell_limit", "cell limit"),
    ("cell_saturated", "cell values saturated"),
]


BUDGET_ROWS = [
    ("float_forward_vs_keras", "float forward pass vs Keras"),
    ("int8_weights_vs_keras", "int8 weights (all else float) vs Keras"),
    ("int16_input_vs_int8_weights", "+ int16 input"),
    ("integer_arithmetic_vs_float_int8", "+ integer arithmetic (= C)"),
]


def _analysis(numbers: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if numbers["layers"]:
        lines += [
            "## Per recurrent layer",
            "",
            "Integer reference (equal to the C bit for bit) against the float forward pass of"
            " the same Keras weights, per recurrent layer over all timesteps (cell columns:"
            " LSTM).",
            "",
            *_table(
                [heading for _, heading in LAYER_COLUMNS],
                [[la.get(key, "") for key, _ in LAYER_COLUMNS] for la in numbers["layers"]],
            ),
            "",
            f"![h and c error per timestep]({LAYERS})",
            "",
        ]
    # a chain's budget is one column; a graph's one per output
    budgets = numbers["error_budget"]
    budgets = budgets if isinstance(budgets, list) else [budgets]
    columns = [b.get("output", "max abs error") for b in budgets]
    lines += [
        "## Where the output error comes from",
        "",
        "Max abs output error added by each stage (each row against the row before it).",
        "",
        *_table(["stage", *columns], [[h, *(b[k] for b in budgets)] for k, h in BUDGET_ROWS]),
        "",
        "## Long sequences",
        "",
    ]
    stream = numbers.get("stream")
    if "outputs" in numbers:
        why = "a graph's reference runs whole windows: no streamed steps measured"
        return [*lines, f"Not measured ({why}).", ""]
    if stream is None:  # a run-only model (Bidirectional, go_backwards): no step() to stream
        return [*lines, "The model has no step() (run only): no streamed steps to measure.", ""]
    return [
        *lines,
        f"{stream['sequences']} streams of {stream['steps']} steps (consecutive input sequences"
        " joined), one step() at a time, against the float forward pass. Max abs output error"
        f" {stream['max_abs_error_first_quarter']:.4g} in the first quarter,"
        f" {stream['max_abs_error_last_quarter']:.4g} in the last; saturated cell values per"
        f" layer {stream['cell_saturated']} (float max |c| {stream['float_max_abs_cell']}).",
        "",
        f"![error over a long stream]({STREAM})",
        "",
    ]


def write_report(
    report_dir: Path, numbers: dict[str, Any], keras_y: np.ndarray, c_y: np.ndarray
) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_histogram(report_dir / HISTOGRAM, keras_y, c_y)
    if numbers.get("layers"):
        plot_layers(report_dir / LAYERS, numbers["layers"])
    if "stream" in numbers:
        plot_stream(report_dir / STREAM, numbers["stream"])
    (report_dir / "report.md").write_text(markdown(numbers))
    (report_dir / "report.json").write_text(json.dumps(jsonable(numbers), indent=2) + "\n")
