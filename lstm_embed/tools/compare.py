"""Generated C (host build) against Keras on the same inputs: errors, task metrics and a report.

``compare`` always measures the C output against Keras. With ``report_dir`` it also writes a
report folder (report.md, report.json, PNG plots) that shows where the error comes from:
per-layer and per-timestep error of h and c (integer reference, which equals the C bit for bit,
against the float forward pass of the same model), error growth over a long stream, input
clipping, and the split of the output error into weight rounding and integer arithmetic.
The integer model is read from ``qmodel.npz`` in the output folder (``save_qmodel``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit.report import errors
from lstm_embed.emit.report import task_metrics as report_task_metrics
from lstm_embed.frontends.load import load_model
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import Model, leaf_traces
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QMODEL_FILE, QModel, load_qmodel, save_qmodel
from lstm_embed.reference import interpreter as reference
from lstm_embed.reference.trace import layer_steps
from lstm_embed.targets.hostbuild import read_report, run_host
from lstm_embed.targets.inputs import InputRule, check_input
from lstm_embed.tools.compare_report import jsonable, write_report
from lstm_embed.tools.node_errors import chain_values, mark_outputs, node_rows

__all__ = ["QMODEL_FILE", "compare", "dequantized_ir", "load_qmodel", "save_qmodel"]

STREAM_STEPS = 1000  # long-sequence error growth: steps streamed through step()
STREAM_SEQUENCES = 32


def compare(
    model_path: str | Path,
    out_dir: Path,
    x: np.ndarray,
    labels: np.ndarray | None = None,
    report_dir: Path | None = None,
    qmodel: QModel | None = None,
) -> dict[str, Any]:
    """C (host build) vs Keras on x; with ``report_dir``, also write the report folder there.

    ``qmodel`` defaults to the one saved in ``out_dir`` (needed for the per-layer sections).
    """
    out_dir = Path(out_dir)
    report = read_report(out_dir)
    x = np.asarray(x)
    if x.ndim > 3:  # (N, T, F, C) frames: F * C values per timestep, row-major, as the C takes them
        x = x.reshape(*x.shape[:2], -1)
    # the runners' check, before Keras sees x; float32 whatever x holds (token ids are often
    # integers), so that the C runs its float entry point and answers in the model's units
    x = check_input(x, InputRule.from_report(report), "float32")
    ir = load_model(model_path)
    keras_y, oracle = live_predict(model_path, ir, x)
    c_y32 = run_host(out_dir, x)
    c_y = c_y32.astype(np.float64)
    if c_y.shape != keras_y.shape:
        raise ValueError(
            f"{out_dir}: C output shape {c_y.shape} != Keras {keras_y.shape};"
            " was it converted from this model?"
        )
    numbers: dict[str, Any] = {
        "model": str(model_path),
        "oracle": oracle,
        "out_dir": str(out_dir),
        "samples": int(x.shape[0]),
        **errors(keras_y, c_y),
        **task_metrics(report, keras_y, c_y, labels),
        "input_clipping": input_clipping(x, np.asarray(report["input_scale"])),
    }
    if report_dir is not None:
        if qmodel is None and (out_dir / QMODEL_FILE).is_file():
            qmodel = load_qmodel(out_dir / QMODEL_FILE)
        numbers.update(analyse(ir, qmodel, x, keras_y, c_y) if qmodel is not None else {})
        if qmodel is not None:
            output = {
                "tensor": qmodel.layers[-1].name,
                "max_abs_error": numbers["max_abs_error"],
                "c_equals_reference": same_floats(reference.run_float(qmodel, x), c_y32),
            }
            numbers["nodes"] = node_rows(chain_values(ir, qmodel, x))
            mark_outputs(numbers["nodes"], [output])
            numbers["rounding"] = rounding_section(ir, qmodel, out_dir, x, report.get("rounding"))
        numbers["report_dir"] = str(report_dir)
        write_report(Path(report_dir), numbers, keras_y, c_y)
    return {"json": jsonable(numbers), "text": _text(numbers)}


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit equal float32 arrays (the reference's float path against the C's)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))


def live_predict(model_path: str | Path, ir: Model, x: np.ndarray) -> tuple[np.ndarray, str]:
    """model.predict of the file with Keras when Keras and a backend are installed, else the
    project's float forward pass (which the tests hold equal to Keras); says which it used."""
    from lstm_embed.frontends import onnx
    from lstm_embed.tools import keras_live

    if onnx.is_onnx(model_path):
        from lstm_embed.frontends.onnx import live as onnx_live

        found = onnx_live.predict(model_path, ir.meta, x)
        if found is not None:
            return found
        y, _ = forward(ir, np.asarray(x, np.float64))
        return y, "lstm-embed float model (onnxruntime is not installed; tests hold it equal)"
    live = keras_live.load(model_path)
    if live is not None:
        model, description = live
        # a stateful model: the rows are one stream (Keras needs batch_size=1 for it)
        batch = 1 if ir.stateful else None
        if ir.layers[0].takes_ids:
            x_keras = x[..., 0]  # Keras takes ids as (N, T)
        else:
            shape = tuple(model.input_shape)
            x_keras = np.reshape(x, (*np.shape(x)[:2], *shape[2:])) if len(shape) > 3 else x
        y = model.predict(x_keras, verbose=0, batch_size=batch)
        return np.asarray(y, np.float64), description
    y, _ = forward(ir, np.asarray(x, np.float64))
    return y, "lstm-embed float model (Keras is not importable here; tests hold it equal to Keras)"


def is_classifier(report: dict[str, Any], labels: np.ndarray | None, shape: tuple) -> bool:
    """Softmax head, or class ids given for a multi-output (logits) head."""
    last = report["layers"][-1]
    if last["type"] == "Dense" and last["activation"] == "softmax":
        return True
    if labels is None or shape[-1] < 2:
        return False
    labels = np.asarray(labels)
    return labels.dtype.kind in "iu" and labels.ndim == len(shape) - 1


def task_metrics(report: dict[str, Any], keras_y, c_y, labels) -> dict[str, float]:
    """Accuracy for classifiers (argmax), RMSE for regressors; needs labels."""
    classifier = labels is not None and is_classifier(report, labels, keras_y.shape)
    return report_task_metrics(keras_y, c_y, labels, classifier)


def input_clipping(x: np.ndarray, input_scale: np.ndarray) -> dict[str, Any]:
    """Input values that saturate the int16 input (|x| / scale rounds beyond 32767), per feature.

    Computed in float32 like ``fixedpoint.quantize_input`` (x * (1 / scale)).
    """
    inv_scale = (1.0 / input_scale.astype(np.float64)).astype(np.float32)
    beyond = np.abs(x.astype(np.float32) * inv_scale) >= np.float32(fp.INT16_MAX + 0.5)
    limit = fp.INT16_MAX * input_scale.astype(np.float64)
    per_feature = beyond.reshape(-1, x.shape[-1]).sum(axis=0)
    return {
        "count": int(per_feature.sum()),
        "fraction": float(per_feature.sum() / x.size),
        "per_feature": [int(v) for v in per_feature],
        "limit_per_feature": [float(v) for v in limit],
        "sequences_affected": int(np.sum(np.any(beyond, axis=(1, 2)))),
    }


# ---------------------------------------------------------------------------------------------
# Analysis against the float forward pass (the IR's float forward equals Keras to ~1e-6)


def every_step(model: Model | QModel) -> Model | QModel:
    """The same model with every recurrent layer returning sequences (an output per step)."""
    return replace(model, layers=tuple(_returning_sequences(la) for la in model.layers))


def _returning_sequences(layer: Any) -> Any:
    if not layer.recurrent:
        return layer
    inner = getattr(layer, "layer", None)  # go_backwards / stateful around a kind
    if inner is not None:
        return replace(layer, layer=_returning_sequences(inner))
    return replace(layer, return_sequences=True)


every_step_q = every_step


def _per_step(error: np.ndarray) -> dict[str, list[float]]:
    """(N, T, ...) abs errors -> max and mean over everything but the timestep."""
    axes = tuple(a for a in range(error.ndim) if a != 1)
    return {
        "max": [float(v) for v in error.max(axis=axes)],
        "mean": [float(v) for v in error.mean(axis=axes)],
    }


def layer_errors(ir: Model, qmodel: QModel, x: np.ndarray) -> list[dict[str, Any]]:
    """Per recurrent layer and timestep: |h| error (and an LSTM's |c| error) of the integer
    reference vs float."""
    x_q = fp.quantize_input(x, qmodel.input_inv_scale)
    trace = reference.Trace()
    reference.run(qmodel, x_q, trace=trace)
    _, float_traces = forward(ir, x.astype(np.float64))
    # a Bidirectional's forward and backward layers apart; each in its processing order
    leaves = zip(qmodel.leaf_layers, leaf_traces(ir.layers, float_traces), strict=True)
    rows = [recurrent_row(qlayer, t, layer_steps(trace, qlayer.name)) for qlayer, t in leaves]
    return [row for row in rows if row is not None]


def recurrent_row(qlayer: Any, float_trace: Any, steps: list[Any]) -> dict[str, Any] | None:
    """One recurrent layer's |h| error per timestep (and its cell's), its integer ``steps``
    against its float trace; None for a layer that is not recurrent."""
    if not qlayer.recurrent or not steps:
        return None
    h = np.stack([s.h_q15 for s in steps], axis=1) * qlayer.output_feature_scale
    row: dict[str, Any] = {
        "layer": qlayer.name,
        "h_error": _per_step(np.abs(h - float_trace.output)),
        "h_max_abs_error": float(np.max(np.abs(h - float_trace.output))),
    }
    if float_trace.cell is not None:  # a kind with a cell state (LSTM) describes it
        c_error = np.abs(qlayer.cell_values(steps) - float_trace.cell)
        row |= {
            "cell_format": qlayer.cell_q_format,
            "c_error": _per_step(c_error),
            "c_max_abs_error": float(np.max(c_error)),
            "cell_saturated": qlayer.cell_saturated(steps),
            "float_max_abs_cell": float(np.max(np.abs(float_trace.cell))),
            "cell_limit": qlayer.cell_limit,
        }
    return row


def long_inputs(x: np.ndarray, steps: int, sequences: int) -> np.ndarray:
    """Streams of ``steps`` made by concatenating consecutive input sequences in time."""
    per_stream = -(-steps // x.shape[1])
    needed = per_stream * sequences
    picks = np.resize(np.arange(len(x)), needed)
    streams = x[picks].reshape(sequences, per_stream * x.shape[1], x.shape[2])
    return streams[:, :steps]


def stream_errors(ir: Model, qmodel: QModel, x: np.ndarray, steps: int) -> dict[str, Any]:
    """Output error per step over a long stream of step() calls (the C's step, bit for bit)."""
    sequences = min(STREAM_SEQUENCES, max(1, (len(x) * x.shape[1]) // steps))
    streams = long_inputs(x, steps, sequences)
    qstream = every_step_q(qmodel)
    y_q = reference.run(
        qstream,
        fp.quantize_input(streams, qmodel.input_inv_scale),
        trace=(trace := reference.Trace()),
    )
    y = fp.dequantize(y_q, qmodel.output_scale).astype(np.float64)
    float_y, float_traces = forward(every_step(ir), streams.astype(np.float64))
    error = np.abs(y - float_y)
    # per layer with a cell state (LSTM): its saturated values and its float range
    with_cell = [
        (qlayer, t)
        for qlayer, t in zip(qstream.layers, float_traces, strict=True)
        if t.cell is not None
    ]
    saturated = [qlayer.cell_saturated(layer_steps(trace, qlayer.name)) for qlayer, _ in with_cell]
    float_cells = [float(np.max(np.abs(t.cell))) for _, t in with_cell]
    return {
        "steps": steps,
        "sequences": sequences,
        "error": _per_step(error),
        "max_abs_error": float(error.max()),
        "max_abs_error_last_quarter": float(error[:, -(steps // 4) :].max()),
        "max_abs_error_first_quarter": float(error[:, : steps // 4].max()),
        "cell_saturated": saturated,
        "float_max_abs_cell": float_cells,
    }


def error_budget(ir: Model, qmodel: QModel, x: np.ndarray, keras_y: np.ndarray) -> dict[str, float]:
    """Max abs output error added by each stage: int8 weights, int16 input, integer arithmetic."""
    weights_ir = dequantized_ir(ir, qmodel)
    x_deq = fp.dequantize(fp.quantize_input(x, qmodel.input_inv_scale), 1.0) * qmodel.input_scale
    weights_y = forward(weights_ir, x.astype(np.float64))[0]
    input_y = forward(weights_ir, x_deq.astype(np.float64))[0]
    reference_y = reference.run_float(qmodel, x).astype(np.float64)
    return {
        "float_forward_vs_keras": float(
            np.max(np.abs(forward(ir, x.astype(np.float64))[0] - keras_y))
        ),
        "int8_weights_vs_keras": float(np.max(np.abs(weights_y - keras_y))),
        "int16_input_vs_int8_weights": float(np.max(np.abs(input_y - weights_y))),
        "integer_arithmetic_vs_float_int8": float(np.max(np.abs(reference_y - input_y))),
    }


def analyse(
    ir: Model, qmodel: QModel, x, keras_y, c_y, steps: int = STREAM_STEPS
) -> dict[str, Any]:
    return {
        "layers": layer_errors(ir, qmodel, x),
        # step() streams; a run-only model has no step()
        **({"stream": stream_errors(ir, qmodel, x, steps)} if qmodel.streaming else {}),
        "error_budget": error_budget(ir, qmodel, x, keras_y),
    }


# ---------------------------------------------------------------------------------------------
# Text summary


def _text(numbers: dict[str, Any]) -> str:
    lines = [f"C (host build) vs {numbers['oracle']} on {numbers['samples']} sequences:"]
    for key in ("max_abs_error", "mean_abs_error", "max_abs_error_pct_of_range"):
        lines.append(f"  {key:28s} {numbers[key]:.4g}")
    for key in ("keras_accuracy", "c_accuracy", "keras_rmse", "c_rmse"):
        if key in numbers:
            lines.append(f"  {key:28s} {numbers[key]:.4f}")
    clip = numbers["input_clipping"]
    lines.append(f"  {'inputs beyond int16 range':28s} {clip['count']} ({clip['fraction']:.2%})")
    if "stream" in numbers:
        s = numbers["stream"]
        lines.append(
            f"  {'stream max error':28s} {s['max_abs_error_first_quarter']:.4g} (first quarter),"
            f" {s['max_abs_error_last_quarter']:.4g} (last quarter of {s['steps']} steps)"
        )
    if "report_dir" in numbers:
        lines.append(f"report: {numbers['report_dir']}/report.md")
    return "\n".join(lines)


def dequantized_ir(ir: Model, qmodel: QModel) -> Model:
    """The float IR with the quantized weights and biases of ``qmodel``, everything else float.

    Its error against Keras is the cost of weight rounding alone; the integer reference's error
    against it is the cost of the integer arithmetic (input, activations, cell, h, outputs).
    """
    feature_scale = qmodel.input_scale.astype(np.float64)
    layers = []
    for layer, qlayer in zip(ir.layers, qmodel.layers, strict=True):
        # paired by name: a kind may quantize to another kind's integer layer (Normalization
        # and Rescaling compute BatchNormalization's affine)
        if layer.name != qlayer.name:
            raise ValueError(f"layer '{layer.name}': float and quantized layers do not match")
        layers.append(layer.dequantized(qlayer, feature_scale))
        feature_scale = qlayer.output_feature_scale
    return replace(ir, layers=tuple(layers))


# ---------------------------------------------------------------------------------------------
# Weight rounding: nearest against the rounding convert kept


def layer_outputs(ir: Model, qmodel: QModel, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output of the integer reference (equal to the C), dequantized."""
    from lstm_embed.quantize.calibration import run_layer

    y_q = fp.quantize_input(x, qmodel.input_inv_scale)
    outputs = []
    for layer, qlayer in zip(ir.layers, qmodel.layers, strict=True):
        y_q = run_layer(qlayer, layer, y_q, qmodel.tables)
        outputs.append(y_q * np.asarray(qlayer.output_feature_scale))
    return outputs


def _same_weights(a: Any, b: Any) -> bool:
    return all(
        np.array_equal(getattr(a, f.name), getattr(b, f.name))
        for f in fields(a)
        if isinstance(getattr(a, f.name), np.ndarray)
    )


def rounding_section(
    ir: Model, qmodel: QModel, out_dir: Path, x: np.ndarray, record: dict | None
) -> dict[str, Any]:
    """Per layer, its output error (integer reference vs float forward pass) with nearest
    rounding and with the rounding convert kept (``qmodel_nearest.npz`` beside qmodel.npz when
    they differ), and what convert measured on its held-out sequences."""
    from lstm_embed.quantize.calibration import NEAREST_QMODEL_FILE

    nearest_path = Path(out_dir) / NEAREST_QMODEL_FILE
    nearest = load_qmodel(nearest_path) if nearest_path.is_file() else qmodel
    _, traces = forward(ir, np.asarray(x, np.float64))
    floats = [layer.chain_output(t) for layer, t in zip(ir.layers, traces, strict=True)]
    variants = {"nearest": layer_outputs(ir, nearest, x)}
    if nearest is not qmodel:
        variants["kept"] = layer_outputs(ir, qmodel, x)
    layers = []
    for k, (qlayer, near) in enumerate(zip(qmodel.layers, nearest.layers, strict=True)):
        kept = (record or {}).get("kept", "nearest")
        row: dict[str, Any] = {
            "layer": qlayer.name,
            "rounding": "nearest" if _same_weights(qlayer, near) else kept,
        }
        for name, outputs in variants.items():
            error = np.abs(outputs[k] - floats[k])
            row[f"{name}_max_abs_error"] = float(error.max())
            row[f"{name}_mean_abs_error"] = float(error.mean())
        layers.append(row)
    return {"convert": record or {}, "layers": layers}
