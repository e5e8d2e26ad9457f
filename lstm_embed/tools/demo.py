"""`make demo`: a trained sample model -> C -> Cortex-M4 firmware in QEMU -> comparison with Keras.

Run as ``python -m lstm_embed.tools.demo [--board qemu-m4] [--sample digits] [--samples 300]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lstm_embed.cli import print_summary
from lstm_embed.emit.report import errors, format_table
from lstm_embed.pipeline import convert
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.reference import interpreter as reference
from lstm_embed.targets import firmware
from lstm_embed.targets.boards import get_board
from lstm_embed.targets.hostbuild import run_host
from lstm_embed.tools.quiet import set_verbose


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    set_verbose(args.verbose)
    from lstm_embed.tools.samples import sample

    out = Path(args.out)
    print(f"== 1. sample model '{args.sample}' (trained once with a fixed seed, then cached)")
    data = sample(args.sample)
    model_path = out.parent / f"{args.sample}.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    data.model.save(model_path)
    data.model.summary(line_length=90)

    print(
        f"\n== 2. convert {model_path} -> {out}/ (calibration: {len(data.x_train)} sequences,"
        f" --board {args.board})"
    )
    core = get_board(args.board).core  # as `lstm-embed convert --board` does
    conversion = convert(model_path, data.x_train, out, name=args.sample, force=True, core=core)
    print_summary(conversion.report)

    print(f"\n== 3. build firmware for {args.board} with arm-none-eabi-gcc")
    x = data.x_test[: args.samples].astype(np.float32)
    x_q = fp.quantize_input(x, conversion.qmodel.input_inv_scale)
    built = firmware.build(out, args.board, x_q)
    print(built.table())

    print(f"\n== 4. run {len(x)} test sequences in QEMU ({args.board}) and on the host")
    y_qemu = firmware.run_qemu(out, args.board, x_q)
    y_host = run_host(out, x_q)
    y_ref = reference.run(conversion.qmodel, x_q)
    instructions = firmware.count_instructions(out, args.board, x_q[:1])[0]

    print("\n== 5. comparison with Keras")
    keras_y = np.asarray(data.model.predict(x, verbose=0), dtype=np.float64)
    c_y = fp.dequantize(y_qemu, conversion.qmodel.output_scale)
    print(
        format_table(
            _rows(data, keras_y, c_y),
            [("what", ""), ("keras", "Keras float32"), ("c", f"C int8/int16 on {args.board}")],
        )
    )
    err = errors(keras_y, c_y)
    steps = x.shape[1]
    print(
        f"\nmax abs error {err['max_abs_error']:.4g}, mean abs error {err['mean_abs_error']:.3g}"
        f" ({err['max_abs_error_pct_of_range']:.2f}% of the output range)"
    )
    print(
        f"QEMU == host C: {np.array_equal(y_qemu, y_host)};"
        f" host C == numpy reference: {np.array_equal(y_host, y_ref)}"
    )
    print(
        f"{instructions} instructions for a {steps}-step window on {args.board}"
        f" ({instructions / steps:.0f} per step, {conversion.qmodel.macs_per_step} MACs/step)"
    )
    ok = np.array_equal(y_qemu, y_host) and np.array_equal(y_host, y_ref)
    return 0 if ok else 1


def _rows(data, keras_y: np.ndarray, c_y: np.ndarray) -> list[dict[str, str]]:
    labels = data.y_test[: len(keras_y)]
    if data.kind == "classifier":
        return [
            {
                "what": "accuracy",
                "keras": f"{np.mean(np.argmax(keras_y, -1) == labels):.4f}",
                "c": f"{np.mean(np.argmax(c_y, -1) == labels):.4f}",
            }
        ]
    truth = labels.reshape(keras_y.shape)
    return [
        {
            "what": "RMSE",
            "keras": f"{np.sqrt(np.mean((keras_y - truth) ** 2)):.4f}",
            "c": f"{np.sqrt(np.mean((c_y - truth) ** 2)):.4f}",
        }
    ]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lstm_embed.tools.demo", description=__doc__)
    p.add_argument("--sample", default="digits", help="digits, stacked or logits")
    p.add_argument("--board", default="qemu-m4")
    p.add_argument("--samples", type=int, default=300, help="test sequences to run in QEMU")
    p.add_argument("--out", default="demo-out/digits", help="output folder")
    p.add_argument("-v", "--verbose", action="store_true", help="TensorFlow's log lines too")
    return p


if __name__ == "__main__":
    sys.exit(main())
