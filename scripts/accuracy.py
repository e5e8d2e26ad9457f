"""Accuracy of the generated C against Keras on the trained sample models, as Markdown tables.

Runs the real pipeline for each sample (lstm_embed.tools.samples): convert with the training
inputs as calibration, compile the generated C on the host, run it on the held-out test inputs.
A second table splits the error into int8 weight rounding (a float model with the quantized
weights) and the integer arithmetic (the reference against that float model). The default weight
rounding (--rounding auto) is shown beside nearest rounding, with the ratios of their errors.

--family prints the table of the recurrent family instead (lstm_embed.tools.recurrent_family, the
trained models of tests/test_recurrent_family.py: SimpleRNN, stateful, go_backwards,
Bidirectional), int8 weights with nearest rounding unless --family-rounding says otherwise.

    .venv/bin/python scripts/accuracy.py [--samples digits stacked logits]
    .venv/bin/python scripts/accuracy.py --family [--family-models simple_rnn go_backwards]

--doc docs/accuracy.md also writes the tables between that page's accuracy markers (make accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import lstm_embed
from lstm_embed.ir.float_model import forward
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.quantize.rounding import OPTIONS as ROUNDINGS
from lstm_embed.reference.interpreter import run_float
from lstm_embed.targets.hostbuild import run_host
from lstm_embed.tools import recurrent_family
from lstm_embed.tools.bench import replace_sections
from lstm_embed.tools.compare import dequantized_ir
from lstm_embed.tools.quiet import ml_import
from lstm_embed.tools.samples import RECIPES, Sample, sample

keras = ml_import("keras")  # without TensorFlow's start-up log lines

METRIC = {"classifier": "accuracy", "logits": "accuracy", "regressor": "RMSE"}


def metric(kind: str, y: np.ndarray, labels: np.ndarray) -> str:
    if kind == "regressor":
        return f"{np.sqrt(np.mean((y - labels.reshape(y.shape)) ** 2)):.4f}"
    return f"{100.0 * np.mean(np.argmax(y, -1) == labels):.2f}%"


def span(s: Sample, keras_y: np.ndarray) -> float:
    """Regressor: the target's range; classifiers: the range of Keras' outputs."""
    return float(np.ptp(s.y_test if s.kind == "regressor" else keras_y))


def describe(s: Sample) -> str:
    layers = [
        f"{type(la).__name__}({la.units})"
        for la in s.model.layers
        if isinstance(la, keras.layers.LSTM | keras.layers.GRU | keras.layers.Dense)
    ]
    steps, features = s.model.input_shape[1:]
    return f"{s.name}: {steps}x{features} -> " + " -> ".join(layers)


SETTINGS = {
    "int8 (default)": QuantizeOptions(),
    "int8, --rounding nearest": QuantizeOptions(rounding="nearest"),
    "int8, --input-shift 0": QuantizeOptions(input_shift=0),
    "int16": QuantizeOptions(weight_bits=(16,)),
}


def measure(name: str, setting: str, work: Path) -> dict[str, str]:
    s = sample(name)
    start = time.perf_counter()
    conversion = lstm_embed.convert(
        s.model,
        calibration=s.x_train,
        out_dir=work / name,
        name=name,
        options=SETTINGS[setting],
        force=True,
    )
    seconds = time.perf_counter() - start
    x = s.x_test.astype(np.float32)
    keras_y = np.asarray(s.model.predict(x, verbose=0), np.float64)
    c_y = run_host(conversion.out_dir, x).astype(np.float64)
    qmodel = conversion.qmodel
    x_deq = fp.dequantize(fp.quantize_input(x, qmodel.input_inv_scale), 1.0) * qmodel.input_scale
    weights_y = forward(dequantized_ir(conversion.ir, qmodel), x)[0]
    weights_on_q_input = forward(dequantized_ir(conversion.ir, qmodel), x_deq)[0]
    reference_y = run_float(qmodel, x).astype(np.float64)
    width = span(s, keras_y)
    error = np.abs(c_y - keras_y)

    def pct(a: np.ndarray, b: np.ndarray) -> str:
        return f"{100.0 * np.max(np.abs(a - b)) / width:.3f}%"

    return {
        "model": describe(s),
        "setting": setting,
        "params": str(conversion.report["params"]),
        "flash": str(conversion.report["flash_bytes"]["total"]),
        "metric": METRIC[s.kind],
        "keras": metric(s.kind, keras_y, s.y_test),
        "c": metric(s.kind, c_y, s.y_test),
        "max": f"{error.max():.4g}",
        "mean": f"{error.mean():.3g}",
        "pct": pct(c_y, keras_y),
        "weights_pct": pct(weights_y, keras_y),
        "input_pct": pct(weights_on_q_input, weights_y),
        "arith_pct": pct(reference_y, weights_on_q_input),
        "samples": str(len(x)),
        "rounding": conversion.report["rounding"]["kept"],
        "seconds": seconds,
        "max_value": float(error.max()),
        "mean_value": float(error.mean()),
    }


def table(rows: list[dict[str, str]], columns: list[tuple[str, str]]) -> str:
    lines = [
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(row[k] for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


# the measured columns both accuracy tables end with
ERROR_COLUMNS = [
    ("metric", "metric"),
    ("keras", "Keras"),
    ("c", "C"),
    ("max", "max abs error"),
    ("mean", "mean abs error"),
    ("pct", "max % of range"),
]
MAIN_COLUMNS = [
    ("model", "model"),
    ("setting", "weights"),
    ("params", "params"),
    ("flash", "flash B"),
    *ERROR_COLUMNS,
]
BUDGET_COLUMNS = [
    ("model", "model"),
    ("setting", "weights"),
    ("weights_pct", "rounded weights only"),
    ("input_pct", "+ int16 input"),
    ("arith_pct", "+ integer arithmetic"),
    ("pct", "C vs Keras"),
]


ROUNDING_COLUMNS = [
    ("model", "model"),
    ("kept", "rounding kept"),
    ("max", "max abs error (nearest)"),
    ("max_ratio", "max vs nearest"),
    ("mean", "mean abs error (nearest)"),
    ("mean_ratio", "mean vs nearest"),
    ("time_ratio", "convert time vs nearest"),
]


def rounding_rows(rows: list[dict]) -> list[dict[str, str]]:
    """The default row of each model against its --rounding nearest row."""
    by_key = {(r["model"], r["setting"]): r for r in rows}
    result = []
    for (model, setting), auto in by_key.items():
        nearest = by_key.get((model, "int8, --rounding nearest"))
        if setting != "int8 (default)" or nearest is None:
            continue
        result.append(
            {
                "model": model,
                "kept": auto["rounding"],
                "max": f"{auto['max']} ({nearest['max']})",
                "max_ratio": f"{auto['max_value'] / nearest['max_value']:.2f}x",
                "mean": f"{auto['mean']} ({nearest['mean']})",
                "mean_ratio": f"{auto['mean_value'] / nearest['mean_value']:.2f}x",
                "time_ratio": f"{auto['seconds'] / nearest['seconds']:.1f}x",
            }
        )
    return result


FAMILY_COLUMNS = [
    ("model", "model"),
    ("params", "params"),
    ("flash", "flash B"),
    ("ram", "RAM B"),
    *ERROR_COLUMNS,
]


def measure_family(label: str, rounding: str, work: Path) -> dict[str, str]:
    """As tests/test_recurrent_family.py measures it: convert with the model's calibration
    inputs and options, C on the host vs Keras' predict on the test split, the range Keras'."""
    case = recurrent_family.case(label)
    options = dataclasses.replace(case.options or QuantizeOptions(), rounding=rounding)
    conversion = lstm_embed.convert(
        case.model, case.calibration, work / label, name="net", options=options, force=True
    )
    keras_y = case.predict().astype(np.float64)
    c_y = run_host(conversion.out_dir, case.x).astype(np.float64)
    error = np.abs(c_y - keras_y)
    kind = case.recipe.kind
    labeled = kind in METRIC and case.labels is not None
    return {
        "model": recurrent_family.describe(case),
        "params": str(conversion.report["params"]),
        "flash": str(conversion.report["flash_bytes"]["total"]),
        "ram": str(conversion.report["ram_bytes"]["total"]),
        "metric": METRIC[kind] if labeled else "",
        "keras": metric(kind, keras_y, case.labels) if labeled else "",
        "c": metric(kind, c_y, case.labels) if labeled else "",
        "max": f"{error.max():.4g}",
        "mean": f"{error.mean():.3g}",
        "pct": f"{100.0 * error.max() / np.ptp(keras_y):.3f}%",
    }


def family_text(labels: list[str], rounding: str) -> str:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as work:
        rows = [measure_family(label, rounding, Path(work)) for label in labels]
    return (
        "The recurrent family (`lstm_embed/recurrent_family.py`, the trained models of"
        f" tests/test_recurrent_family.py; fixed seeds, TensorFlow {tf.__version__}; int8"
        f" weights, {rounding} rounding; C host build vs Keras {keras.__version__} `predict` on"
        " the test split; range: the Keras outputs'). Made by `scripts/accuracy.py --family`"
        f" (lstm-embed {lstm_embed.__version__}).\n\n" + table(rows, FAMILY_COLUMNS)
    )


def samples_text(samples: list[str], settings: list[str]) -> str:
    with tempfile.TemporaryDirectory() as work:
        # untimed: the first conversion of a process also loads and compiles the templates
        measure(samples[0], settings[0], Path(work))
        rows = [measure(name, setting, Path(work)) for name in samples for setting in settings]
    parts = [
        f"Generated C (host build) vs Keras {keras.__version__} on held-out test"
        f" inputs ({', '.join(r['samples'] for r in rows)} sequences); range: the regression"
        " target's, else the Keras outputs'. Made by `scripts/accuracy.py`"
        f" (lstm-embed {lstm_embed.__version__}).",
        table(rows, MAIN_COLUMNS),
    ]
    ratios = rounding_rows(rows)
    if ratios:
        parts += [
            "The default rounding against nearest rounding (same int8 scales; C vs Keras on the"
            " test inputs; convert time includes the error vs Keras on the calibration data):",
            table(ratios, ROUNDING_COLUMNS),
        ]
    parts += [
        "Where the error comes from (max abs error, % of range; each column against the one"
        " before it, the last against Keras):",
        table(rows, BUDGET_COLUMNS),
    ]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    family = list(recurrent_family.RECIPES)
    parser.add_argument(
        "--family", action="store_true", help="the recurrent family's table instead"
    )
    parser.add_argument("--family-models", nargs="+", default=family, choices=family)
    parser.add_argument("--family-rounding", default="nearest", choices=ROUNDINGS)
    parser.add_argument(
        "--doc",
        metavar="PATH",
        help="also write the tables between this page's accuracy markers (docs/accuracy.md)",
    )
    args = parser.parse_args(argv)
    if args.family:
        section, text = "family", family_text(args.family_models, args.family_rounding)
    else:
        section, text = "samples", samples_text(args.samples, args.settings)
    print(text)
    if args.doc:
        doc = Path(args.doc)
        doc.write_text(replace_sections(doc.read_text(), {section: text}, args.doc, "accuracy"))
        print(f"wrote the {section} tables into {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
