"""The model zoo's accuracy table (docs/accuracy-zoo.md): the defaults against --rounding
nearest and --weights int16 on every zoo model's test split.

Each model of lstm_embed.zoo (trained once, cached) is quantized on its calibration sequences
(the first ``calibration`` training sequences) with each setting; the integer reference (which
the generated C equals bit for bit: tests/test_converter.py and make fuzz hold them equal; pass
--host-c to run the host-compiled C instead) runs the test split, which convert never sees, and
is compared with Keras' predict on it.

    .venv/bin/python scripts/zoo_accuracy.py [--models activity_lstm48 ...] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent import futures
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras

import lstm_embed
from lstm_embed import zoo
from lstm_embed.calibration import CalibrationWarning

SETTINGS = {
    "default": {},
    "nearest": {"rounding": "nearest"},
    "int16": {"weight_bits": (16,)},
}
# the promise for the default against nearest rounding, on every model
MAX_RATIO_LIMIT = 1.05
MEAN_RATIO_LIMIT = 1.0
MEDIAN_MEAN_RATIO_LIMIT = 0.7


def predictions(kind: str, y: np.ndarray) -> np.ndarray:
    """Classes: argmax of the outputs; sigmoid heads: each output above one half."""
    return (y > 0.5) if kind == "sigmoid" else np.argmax(y, axis=-1)


def run(t: zoo.Trained, options, x: np.ndarray, host_c: bool, out: Path):
    """The quantized model's outputs on x: the integer reference, or (``host_c``) the
    host-compiled C of a full conversion; with the quantized model and its rounding record."""
    if host_c:
        from lstm_embed.hostbuild import run_host

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            conversion = lstm_embed.convert(
                t.model, t.calibration, out, name="net", options=options, force=True
            )
        y = run_host(conversion.out_dir, x)
        return y.astype(np.float64), conversion.qmodel, conversion.report["rounding"]
    from lstm_embed.frontend import read_keras_model
    from lstm_embed.quantize import quantize
    from lstm_embed.reference import run_float

    record: list = []
    qmodel = quantize(read_keras_model(t.model), t.calibration, options, rounding_record=record)
    return run_float(qmodel, x).astype(np.float64), qmodel, record[0].record()


def measure(name: str, host_c: bool, work: Path) -> dict:
    t = zoo.trained(name)
    x = t.x_test.astype(np.float32)
    keras_y = np.asarray(t.model.predict(x, verbose=0), np.float64)
    width = float(np.ptp(keras_y)) or 1.0
    row: dict = {
        "name": name,
        "title": t.entry.title,
        "kind": t.entry.kind,
        "calibration": len(t.calibration),
        "test": len(x),
        "params": int(t.model.count_params()),
        "range": width,
    }
    if t.entry.classifier:
        labels = t.data.y_test
        row["keras_accuracy"] = float(np.mean(predictions(t.entry.kind, keras_y) == labels))
    for setting, changes in SETTINGS.items():
        options = t.options(**changes)
        start = time.perf_counter()
        y, qmodel, record = run(t, options, x, host_c, work / f"{name}-{setting}")
        seconds = time.perf_counter() - start
        error = np.abs(y - keras_y)
        result = {
            "max": float(error.max()),
            "mean": float(error.mean()),
            "pct": float(100 * error.max() / width),
            "kept": record["kept"],
            "formats": [la.format() for la in qmodel.layers if hasattr(la, "cell_frac")],
            "seconds": seconds,
        }
        if t.entry.classifier:
            changed = predictions(t.entry.kind, y) != predictions(t.entry.kind, keras_y)
            result["changed"] = int(np.sum(np.any(changed.reshape(len(x), -1), axis=1)))
        row[setting] = result
    return row


def ratio(row: dict, key: str) -> float:
    nearest = row["nearest"][key]
    return (
        row["default"][key] / nearest
        if nearest > 0
        else (1.0 if row["default"][key] == 0 else np.inf)
    )


def passes(row: dict) -> bool:
    changed_ok = row["default"].get("changed", 0) <= row["nearest"].get("changed", 0)
    return (
        ratio(row, "max") <= MAX_RATIO_LIMIT
        and ratio(row, "mean") <= MEAN_RATIO_LIMIT
        and changed_ok
    )


def _cell(result: dict, classifier: bool) -> str:
    text = f"{result['max']:.3g} / {result['mean']:.2g}"
    return text + (f" / {result['changed']}" if classifier else "")


def markdown(rows: list[dict]) -> str:
    ratios = [ratio(r, "mean") for r in rows]
    median = statistics.median(ratios)
    failing = [r["name"] for r in rows if not passes(r)]
    kept = sum(r["default"]["kept"] == "gptq" for r in rows)
    import tensorflow as tf

    lines = [
        "# Accuracy on the model zoo: the defaults against nearest rounding and int16",
        "",
        "The quantizer's defaults (`--rounding auto`, int8 weights, the activation table's size)",
        f"are decided on this table of {len(rows)} trained models (`lstm_embed/zoo.py`), not on",
        "the five samples: multi-axis sensor classifiers with offsets (gravity, gyroscope bias),",
        "MFCC-like keyword spotters, long-window forecasters in raw units (degrees C, hPa, kW,",
        "volts), anomaly autoencoders, sharp softmax heads with near ties, sigmoid and linear",
        "heads; LSTM, GRU, SimpleRNN, Bidirectional, stacked, Conv1D fronts, pooling,",
        "normalization and masking; calibrated on 32 to 128 of their training sequences. Each is",
        "trained here (synthetic data or scikit-learn's digits, fixed seeds, TensorFlow"
        f" {tf.__version__}, Keras {keras.__version__}) and measured on a test split that convert",
        "never sees: the integer reference (bit-exact with the generated C) against Keras'",
        "`predict`; error in the model's output units; range: the Keras outputs' on the test",
        "split; changed: test sequences whose predicted class (sigmoid heads: any label) differs",
        "from Keras'.",
        "",
        f"What it justifies: the default rounding (`auto`) kept error feedback on {kept} of the"
        f" {len(rows)} models and is never worse than `--rounding nearest` here: its max abs error"
        f" at most {MAX_RATIO_LIMIT}x nearest's, its mean at most {MEAN_RATIO_LIMIT}x, no more"
        f" changed predictions ({len(rows) - len(failing)} of {len(rows)} models"
        + (f"; not: {', '.join(failing)}" if failing else "")
        + f"), and its mean error is a median {median:.2f}x nearest's. `--weights int16`"
        " is the remedy where int8 misses (compare its column).",
        "",
        "Made by `make zoo` (`scripts/zoo_accuracy.py`, lstm-embed"
        f" {lstm_embed.__version__}). Cells: max abs error / mean abs error (/ changed).",
        "",
        "| model | what | cal | test | range | default (kept) | nearest | int16 |"
        " default/nearest max | mean |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        classifier = "changed" in r["default"]
        lines.append(
            f"| {r['name']} | {r['title']} | {r['calibration']} | {r['test']} |"
            f" {r['range']:.3g} | {_cell(r['default'], classifier)} ({r['default']['kept']}) |"
            f" {_cell(r['nearest'], classifier)} | {_cell(r['int16'], classifier)} |"
            f" {ratio(r, 'max'):.2f}x | {ratio(r, 'mean'):.2f}x |"
        )
    lines += ["", f"Median default/nearest mean abs error: {median:.2f}x.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [e.name for e in zoo.ENTRIES]
    parser.add_argument("--models", nargs="+", default=names, choices=names)
    parser.add_argument("--markdown", type=Path, help="write the table here (docs/accuracy-zoo.md)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--host-c", action="store_true", help="run the host-compiled C")
    parser.add_argument("--jobs", type=int, default=1, help="models measured at once")
    parser.add_argument(
        "--from-json", type=Path, nargs="+", help="no measuring: the table of --json files"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        rows = [row for path in args.from_json for row in json.loads(path.read_text())]
        order = {name: i for i, name in enumerate(names)}
        rows.sort(key=lambda row: order.get(row["name"], len(order)))
        args.models = []
    else:
        rows = []
    with (
        tempfile.TemporaryDirectory() as work,
        futures.ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn")
        ) as pool,
    ):
        jobs = [pool.submit(measure, name, args.host_c, Path(work)) for name in args.models]
        for job in jobs:
            row = job.result()
            rows.append(row)
            print(
                f"{row['name']}: default {_cell(row['default'], 'changed' in row['default'])}"
                f" ({row['default']['kept']}), nearest"
                f" {_cell(row['nearest'], 'changed' in row['nearest'])},"
                f" max {ratio(row, 'max'):.2f}x"
                f" mean {ratio(row, 'mean'):.2f}x{'' if passes(row) else '  FAILS'}",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    text = markdown(rows)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0 if all(passes(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
