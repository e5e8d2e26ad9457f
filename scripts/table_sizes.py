"""The measurement behind the activation table's default size (fixedpoint.default_log2_entries).

For each trained sample (lstm_embed.tools.samples) and weight width, converts with 2^N table
intervals per sign and prints the max and mean absolute error of the integer reference (bit-
exact with the C) against Keras on the held-out test inputs, in % of Keras' output range, as a
Markdown table.

    .venv/bin/python scripts/table_sizes.py [--samples digits stacked] [--log2 6 7 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from lstm_embed.pipeline import convert
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.calibration import CalibrationWarning
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import interpreter as reference
from lstm_embed.tools.samples import RECIPES, sample


def errors(name: str, bits: int, log2_entries: int, folder: Path) -> tuple[float, float]:
    data = sample(name)
    x = data.x_test.astype(np.float32)
    keras_y = np.asarray(data.model.predict(x, verbose=0), np.float64)
    span = float(keras_y.max() - keras_y.min())
    options = QuantizeOptions(table_log2_entries=log2_entries, weight_bits=(bits,))
    qmodel = convert(data.model, data.x_train, folder, name="m", options=options, force=True).qmodel
    y_q = reference.run(qmodel, fp.quantize_input(x, qmodel.input_inv_scale))
    error = np.abs(fp.dequantize(y_q, qmodel.output_scale) - keras_y)
    return 100 * float(error.max()) / span, 100 * float(error.mean()) / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=list(RECIPES))
    parser.add_argument("--log2", nargs="+", type=int, default=[6, 7, 8])
    args = parser.parse_args()
    warnings.simplefilter("ignore", CalibrationWarning)
    header = " | ".join(f"2^{n}: max / mean %" for n in args.log2)
    print(f"| sample | weights | {header} |")
    print("|---|---|" + "---|" * len(args.log2))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.samples:
            for bits in (8, 16):
                cells = [errors(name, bits, n, Path(tmp) / "out") for n in args.log2]
                row = " | ".join(f"{m:.3f} / {a:.4f}" for m, a in cells)
                print(f"| {name} | int{bits} | {row} |", flush=True)


if __name__ == "__main__":
    main()
