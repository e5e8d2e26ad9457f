"""Reports: parameter counts, formats, flash and RAM, errors against Keras."""

from __future__ import annotations

from typing import Any

import numpy as np

from lstm_embed.emit.render import scratch_size, shared_scratch
from lstm_embed.emit.window_plan import run_only_scratch_bytes
from lstm_embed.ir.model import Model, leaf_traces, sequence_kept, timesteps_after
from lstm_embed.quantize.qir import QModel


def sizes(model: QModel) -> dict[str, dict[str, int]]:
    """Flash of the constant data and RAM of the state struct, in bytes (code not included)."""
    per_layer = [la.flash_bytes() for la in model.layers]
    weights = sum(p["weights"] for p in per_layer)
    biases = sum(p["biases"] for p in per_layer) + 4 * model.input_size  # + input scales
    # as stored: tanh's table signed over [-8, 8] (sigmoid reads it too; exp needs none)
    tables = sum(2 * len(t.signed_entries) for t in model.tables.values())
    state = sum(la.state_bytes for la in model.layers)
    shared = sum(f["size"] * (4 if f["type"] == "int32_t" else 2) for f in shared_scratch(model))
    scratch = 2 * 2 * scratch_size(model) + shared
    if not model.streaming:  # run-only: two int16 window buffers of the layers' outputs
        scratch += run_only_scratch_bytes(model)
    return {
        "flash_bytes": {
            "weights": weights,
            "biases": biases,
            "tables": tables,
            "total": weights + biases + tables,
        },
        "const_bytes_by_kernel": kernel_const_bytes(model, weights + biases, tables),
        "ram_bytes": {"state": state, "scratch": scratch, "total": state + scratch},
    }


def kernel_const_bytes(model: QModel, portable: int, tables: int) -> dict[str, int]:
    """The model's constants (code not included) in each kernel's layout: what a build for a
    core of that kernel puts in .rodata for the model. LSTM layers know their optimized
    layouts (``kernel_flash_bytes``); the other kinds count their portable constants. MVE reads
    {value, slope} words of the tanh table, and the plain table only where a layer outside the
    optimized kernels needs sigmoid or tanh."""
    leaves = model.leaf_layers  # a Bidirectional's inner layers
    optimized = [leaf for leaf in leaves if leaf.kernel_flash_bytes() and not leaf.portable_only]
    scalar_tanh = any(
        leaf.tables_needed() & {"sigmoid", "tanh"} for leaf in leaves if leaf not in optimized
    )
    tanh_bytes = 2 * len(model.tables["tanh"].signed_entries)
    out = {}
    for kernel in ("reference", "plain", "dsp", "mve"):
        total = portable + tables
        for leaf in optimized:
            total += leaf.kernel_flash_bytes()[kernel] - sum(leaf.flash_bytes().values())
        if kernel == "mve" and optimized:
            total += 2 * tanh_bytes - (0 if scalar_tanh else tanh_bytes)
        out[kernel] = total
    return out


def layer_rows(ir: Model, model: QModel | None = None, bits: int = 8) -> list[dict[str, Any]]:
    rows = []
    for index, layer in enumerate(ir.layers):
        row: dict[str, Any] = {
            "name": layer.name,
            **layer.summary(),
            "input_size": layer.input_size,
            "output_shape": output_shape(ir, index),
            "params": layer.params,
        }
        if model is not None:
            qlayer = model.layers[index]
            row["flash_bytes"] = sum(qlayer.flash_bytes().values())
            row["format"] = qlayer.format()
        else:
            row["flash_bytes"] = layer.flash_bytes(bits)
        rows.append(row)
    return rows


def output_shape(ir: Model, index: int) -> list[int | None]:
    """Keras-style output shape of layer ``index`` (batch dimension as None)."""
    steps = timesteps_after(ir.layers, ir.timesteps)[index]
    shape = [None, steps] if sequence_kept(ir.layers, index) else [None]
    return [*shape, ir.layers[index].output_size]


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Plain-text table; ``columns`` are (key, heading)."""
    cells = [[h for _, h in columns]] + [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "(" + ", ".join("None" if v is None else str(v) for v in value) + ")"
    return str(value)


INSPECT_COLUMNS = [
    ("name", "layer"),
    ("type", "type"),
    ("activation", "activation"),
    ("units", "units"),
    ("input_size", "inputs"),
    ("output_shape", "output shape"),
    ("params", "params"),
    ("params_formula", "formula"),
    ("flash_bytes", "flash bytes"),
    ("unsupported", "not supported"),
]


def errors(reference: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    diff = np.abs(np.asarray(measured, np.float64) - np.asarray(reference, np.float64))
    span = float(np.max(reference) - np.min(reference)) if reference.size else 0.0
    return {
        "max_abs_error": float(np.max(diff)),
        "mean_abs_error": float(np.mean(diff)),
        "max_abs_error_pct_of_range": 100.0 * float(np.max(diff)) / span if span > 0 else 0.0,
    }


def task_metrics(
    keras_y: np.ndarray, c_y: np.ndarray, labels: np.ndarray | None, classifier: bool
) -> dict[str, float]:
    """Accuracy for classifiers (argmax of the outputs), RMSE for regressors; needs labels."""
    if labels is None:
        return {}
    labels = np.asarray(labels)
    if classifier:
        truth = labels if labels.ndim == keras_y.ndim - 1 else np.argmax(labels, axis=-1)
        return {
            "keras_accuracy": float(np.mean(np.argmax(keras_y, -1) == truth)),
            "c_accuracy": float(np.mean(np.argmax(c_y, -1) == truth)),
        }
    truth = labels.reshape(keras_y.shape)
    return {
        "keras_rmse": float(np.sqrt(np.mean((keras_y - truth) ** 2))),
        "c_rmse": float(np.sqrt(np.mean((c_y - truth) ** 2))),
    }


def calibration_ranges(ir: Model, qmodel: QModel, x: np.ndarray) -> list[dict[str, Any]]:
    """Per recurrent layer on the calibration data: float ranges of every gate (row)
    pre-activation and of the hidden state, of an LSTM's cell too (formats are chosen from the
    max), and how many integer values saturated (gate pre-activations at the int32 limits, LSTM
    cells at their limits)."""
    from lstm_embed.ir.float_model import forward
    from lstm_embed.quantize import fixedpoint as fp
    from lstm_embed.reference import interpreter as reference
    from lstm_embed.reference.trace import layer_steps

    sample = np.asarray(x[: min(len(x), 512)], dtype=np.float32)
    _, traces = forward(ir, sample)
    trace = reference.Trace()
    x_q = fp.quantize_input(sample, qmodel.input_inv_scale)
    reference.run(qmodel, x_q, trace)
    rows: list[dict[str, Any]] = []
    # a Bidirectional's forward and backward layers apart
    leaves = zip(ir.leaf_layers, leaf_traces(ir.layers, traces), qmodel.leaf_layers, strict=True)
    for layer, float_trace, qlayer in leaves:
        steps = layer_steps(trace, qlayer.name) if layer.recurrent else []
        if not steps:
            continue
        z_q = np.stack([s.z for s in steps])
        row: dict[str, Any] = {
            "layer": layer.name,
            "type": layer.type_name,
            "gate_preactivation_max_abs": {
                g: float(np.max(np.abs(z))) for g, z in float_trace.gate_preactivations.items()
            },
        }
        row["hidden_max_abs"] = float(np.max(np.abs(float_trace.output)))
        if float_trace.cell is not None:  # a kind with a cell state (LSTM) describes it
            row |= qlayer.cell_ranges(float_trace.cell, steps)
        row["gate_saturated"] = int(np.sum(np.abs(z_q) >= fp.INT32_MAX))
        row["values"] = int(np.stack([s.h_q15 for s in steps]).size)
        rows.append(row)
    return rows
