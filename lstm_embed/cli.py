"""Command line: lstm-embed inspect | convert | run | compare (and firmware commands).

Bad input is one line on stderr naming the file, layer or option, exit status 2; a failed
compiler, linker or QEMU run prints that line, the tool's last lines and where its whole log is;
an unexpected exception says it is a bug in lstm-embed (exit 3). --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from lstm_embed.targets.boards import DEFAULT_BOARD, get_board
from lstm_embed.version import __version__

EXIT_ERROR = 2


class CLIError(Exception):
    pass


def _load_array(path: str, what: str) -> np.ndarray:
    from lstm_embed.pipeline import load_calibration

    try:
        return load_calibration(path)
    except ValueError as error:
        raise CLIError(f"{what}: {error}") from error


def _input_range(values: list[str] | None):
    """--input-range LO HI (global) or LO1,LO2,.. HI1,HI2,.. (per feature)."""
    if values is None:
        return None
    try:
        low, high = (np.array([float(v) for v in s.split(",")]) for s in values)
    except ValueError as error:
        raise CLIError(f"--input-range: expected numbers, got {values}") from error
    if low.shape != high.shape or np.any(low >= high):
        raise CLIError("--input-range: LO must be below HI, with as many values in each")
    return low, high


def _weight_bits(text: str) -> tuple[int, ...]:
    """--weights int8 | int16 | a comma list with one value per layer (e.g. int16,int8)."""
    names = {"int8": 8, "int16": 16}
    parts = [p.strip() for p in text.split(",")]
    unknown = [p for p in parts if p not in names]
    if unknown:
        raise CLIError(f"--weights: {', '.join(unknown)} not supported (supported: int8, int16)")
    return tuple(names[p] for p in parts)


def _max_error(weights: str, max_error: float | None) -> float | None:
    """--max-error PCT (default 1) for --weights auto; refused with fixed widths."""
    from lstm_embed.quantize.weight_choice import DEFAULT_MAX_ERROR_PCT

    if weights != "auto":
        if max_error is not None:
            raise CLIError("--max-error: only with --weights auto (it limits that choice)")
        return None
    if max_error is None:
        return DEFAULT_MAX_ERROR_PCT
    if not 0 < max_error < 100:
        raise CLIError(f"--max-error: {max_error:g} not supported (a percent in (0, 100))")
    return max_error


def _input_shift(text: str) -> str | int:
    if text == "auto":
        return text
    if text.isdigit() and int(text) <= 6:
        return int(text)
    raise CLIError(f"--input-shift: {text!r} not supported (supported: auto, 0 to 6)")


def cmd_inspect(args: argparse.Namespace) -> int:
    from lstm_embed import graph_cli
    from lstm_embed.emit.report import INSPECT_COLUMNS, format_table
    from lstm_embed.frontends import onnx
    from lstm_embed.frontends.keras.frontend import inspect_rows, read_spec, takes_ids

    if onnx.is_onnx(args.model):
        return _inspect_onnx(args)
    graph = graph_cli.graph_of(args.model)
    if graph is not None:  # a Functional model that is not one chain
        return graph_cli.inspect(args, graph)
    spec = read_spec(args.model)
    rows = inspect_rows(spec, _weight_bits(args.weights))
    keras_shape = (
        "("
        + ", ".join("None" if d is None else str(d) for d in (spec.batch_size, *spec.input_shape))
        + ")"
    )
    sequence = len(spec.input_shape) in (2, 3) and None not in spec.input_shape[1:]
    if takes_ids(spec):
        sequence = True
        shape_text = f"(timesteps={spec.input_shape[0] or 'any'}, one integer id each)"
    elif sequence and len(spec.input_shape) == 3:  # frames for Conv2D, carried row-major
        steps, frame_rows, channels = spec.input_shape
        shape_text = (
            f"(timesteps={steps or 'any'}, rows={frame_rows}, channels={channels}:"
            f" {frame_rows * channels} features per timestep)"
        )
    elif sequence:
        steps = spec.input_shape[0] or "any"
        shape_text = f"(timesteps={steps}, features={spec.input_shape[1]})"
    else:
        shape_text = "(not batch, timesteps, features: not supported)"
    print(
        f"{args.model}: {spec.file_format} file (Keras {spec.keras_version or '?'}),"
        f" input shape {keras_shape} {shape_text}"
    )
    print(format_table(rows, INSPECT_COLUMNS))
    flash = sum(r.get("flash_bytes") or 0 for r in rows)
    params = sum(r["params"] for r in rows)
    print(f"total params: {params}; flash after quantization: {flash} bytes + activation tables")
    unchecked = [r["name"] for r in rows if r.get("unchecked")]
    if unchecked:
        print(
            f"after an unsupported layer or input, only the type of {', '.join(unchecked)} was"
            " checked (their shapes depend on what comes before them)"
        )
    unsupported = [
        f"layer '{r['name']}' ({r['type']}): {r['unsupported']}" for r in rows if r["unsupported"]
    ]
    if not sequence:
        unsupported.insert(
            0, f"input shape {keras_shape} is not supported; expected (batch, timesteps, features)"
        )
    if unsupported:
        print(
            f"lstm-embed inspect: error: {args.model}: " + "; ".join(unsupported), file=sys.stderr
        )
        return EXIT_ERROR
    return 0


def _inspect_onnx(args: argparse.Namespace) -> int:
    """inspect of an .onnx file: the layers it reads into, then every node it cannot."""
    from lstm_embed.emit.report import INSPECT_COLUMNS, format_table
    from lstm_embed.frontends import onnx

    reading = onnx.read_onnx(args.model)
    rows = onnx.inspect_rows(reading, _weight_bits(args.weights))
    meta = reading.meta
    axes = meta.get("onnx_input_axes", "?")
    ids = meta.get("onnx_input_dtype", "float32") != "float32"
    per_step = f"{meta['onnx_input_dtype']} token ids" if ids else (
        f"features={reading.input_size or '?'}")  # fmt: skip
    print(
        f"{args.model}: {meta['file_format']} file ({meta['producer'] or 'unknown producer'}),"
        f" input '{meta['onnx_input']}' axes {axes} (timesteps="
        f"{reading.timesteps or 'any'}, {per_step})"
    )
    print(format_table(rows, INSPECT_COLUMNS))
    flash = sum(r.get("flash_bytes") or 0 for r in rows)
    params = sum(r["params"] for r in rows)
    print(f"total params: {params}; flash after quantization: {flash} bytes + activation tables")
    problems = reading.problem_lines()
    if not problems:
        try:
            onnx.build_model(reading)
        except onnx.OnnxError as error:
            problems = [str(error).removeprefix(f"{args.model}: ")]
    if problems:
        print(f"lstm-embed inspect: error: {args.model}: " + "; ".join(problems), file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import warnings

    from lstm_embed import graph_cli
    from lstm_embed.emit.render import model_file_names
    from lstm_embed.emit.report import INSPECT_COLUMNS, format_table
    from lstm_embed.pipeline import convert
    from lstm_embed.quantize.calibration import CalibrationWarning
    from lstm_embed.quantize.quantizer import QuantizeOptions

    # the options are checked before the model file is read
    options = QuantizeOptions(
        input_range=_input_range(args.input_range),
        weight_bits=(8,) if args.weights == "auto" else _weight_bits(args.weights),
        weights_auto_max_error=_max_error(args.weights, args.max_error),
        table_log2_entries=args.table_log2_entries,
        input_shift=_input_shift(args.input_shift),
        rounding=args.rounding,
    )
    graph = graph_cli.graph_of(args.model)
    if graph is not None:  # a Functional model that is not one chain
        status = graph_cli.convert(args, graph, options, _core(args), print_rounding)
        if args.board:
            _measure_on_board(Path(args.output), args.board, _clock(args))
        return status
    x = _load_array(args.calibration, "--calibration")
    validation = _load_array(args.validation, "--validation") if args.validation else None
    with warnings.catch_warnings():  # printed below, as lstm-embed's own lines
        warnings.simplefilter("ignore", CalibrationWarning)
        result = convert(
            args.model, x, args.output, args.name, options, args.force, validation, _core(args)
        )
    print_summary(result.report)
    if args.board:
        _measure_on_board(result.out_dir, args.board, _clock(args))
    for text in result.report["warnings"]:
        print(f"lstm-embed convert: {text}", file=sys.stderr)
    if args.verbose:
        print(format_table(result.report["layers"], INSPECT_COLUMNS))
    files = ", ".join(model_file_names(result.report["name"]))
    print(f"wrote {result.out_dir}/: {files} and report.json")
    return 0


def _clock(args: argparse.Namespace) -> int | None:
    return int(args.clock_hz) if args.clock_hz else None


def _measure_on_board(out_dir: Path, board: str, clock_hz: int | None = None) -> None:
    """convert --board: the model's flash as `build` links it, its RAM (state and the stack
    high-water mark), instructions and estimated cycles per step from a QEMU trace (lstm-embed
    profile; a real board's on its core's machine), printed and into report.json "measured"."""
    import os

    from lstm_embed.targets import firmware
    from lstm_embed.targets.graph_firmware import build_folder
    from lstm_embed.tools import profile

    if board not in profile.PROFILE_BOARDS or not firmware.toolchain_available():
        why = "no trace for its core" if board not in profile.PROFILE_BOARDS else "no toolchain"
        print(f"measured sizes: not here ({why}); lstm-embed build --board {board} gives them")
        return
    (run,) = profile.profile(Path(out_dir), (board,), clock_hz=clock_hz)
    model = build_folder(out_dir, board).model  # flash as lstm-embed build links it
    const = model.rodata + model.data
    measured = dataclasses.replace(
        run, flash_bytes=model.text + const, code_bytes=model.text, const_bytes=const
    )
    print(profile.table([measured]))
    path = Path(out_dir) / "report.json"
    report = json.loads(path.read_text())  # profile read it (and refused another format)
    report["measured"] = dataclasses.asdict(measured)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def _core(args: argparse.Namespace) -> str:
    """--core, else --board's core, else the default board's (an M4 file runs on any core)."""
    from lstm_embed.emit.render import core_kernels

    board = args.board or (DEFAULT_BOARD if args.core is None else None)
    core = get_board(board).core if board else args.core
    core_kernels(core)  # refuses an unknown core, naming the supported ones
    return core


def print_summary(report: dict) -> None:
    from lstm_embed.emit.report import format_table

    columns = [
        ("name", "layer"),
        ("type", "type"),
        ("units", "units"),
        ("params", "params"),
        ("format", "format"),
        ("flash_bytes", "flash bytes"),
    ]
    print(format_table(report["layers"], columns))
    flash, ram = report["flash_bytes"], report["ram_bytes"]
    print(
        f"params {report['params']}; flash {flash['total']} B (weights {flash['weights']},"
        f" biases/scales {flash['biases']}, tables {flash['tables']}); RAM {ram['total']} B"
        f" (state {ram['state']}, scratch {ram['scratch']}); {report['macs_per_step']} MACs/step"
    )
    by_kernel = report.get("const_bytes_by_kernel")
    if by_kernel:
        from lstm_embed.emit.render import KERNEL_LABELS, core_kernels

        emitted = core_kernels(report.get("core", "all"))
        kernels = {k: cores for k, cores in KERNEL_LABELS.items() if k in emitted}
        print(
            "constants as built, code not included (lstm-embed profile measures both): "
            + ", ".join(f"{cores} {by_kernel[k]} B" for k, cores in kernels.items())
        )
    calibration = report.get("calibration")
    if calibration:
        cells = ", ".join(
            f"{la['layer']} {la['cell_format'].split()[0]} ({la['cell_saturated']} saturated)"
            for la in calibration["recurrent_layers"]
            if "cell_format" in la  # LSTM layers; a GRU's state is h alone (Q0.15)
        )
        clipped = calibration["input"]["clipped_values"]
        print(f"cell formats: {cells or 'none'}; calibration inputs clipped: {clipped}")
    for key, oracle in (("calibration_error_vs_keras", "Keras"),
                        ("calibration_error_vs_float_model", "the float model")):  # fmt: skip
        error = report.get(key)
        if error:
            print(
                f"vs {oracle} on the calibration data: max abs error"
                f" {error['max_abs_error']:.3g}, mean {error['mean_abs_error']:.3g}"
            )
    print_rounding(report)
    if "weights_auto" in report:
        from lstm_embed.quantize.weight_choice import summary_lines

        for line in summary_lines(report["weights_auto"]):
            print(line)


def print_rounding(report: dict) -> None:
    """The weight rounding kept (auto: with the figures it decided on) and the validation
    data."""
    from lstm_embed.quantize.calibration import decided_on

    rounding = report.get("rounding")
    if rounding:
        line = f"weight rounding: {rounding['kept']}"
        if rounding["option"] != rounding["kept"]:
            line += f" (--rounding {rounding['option']})"
        held = rounding.get("held_out")
        if held:
            near, kept = held["nearest"], held["gptq"]
            line += (
                f"; on {decided_on(held)}: gptq max abs error {kept['max_abs_error']:.3g}"
                f" (nearest {near['max_abs_error']:.3g}), mean {kept['mean_abs_error']:.3g}"
                f" (nearest {near['mean_abs_error']:.3g})"
            )
            if "changed" in kept:
                line += f", decisions changed {kept['changed']} (nearest {near['changed']})"
        if rounding.get("note"):
            line += f"; {rounding['note']}"
        print(line)
    validation = report.get("validation")
    if validation:
        error, ranges = validation["error"], validation["ranges"]
        print(
            f"vs {validation['oracle']} on {validation['samples']} validation sequences: max abs"
            f" error {error['max_abs_error']:.3g} ({error['max_abs_error_pct_of_range']:.2f}% of"
            f" the range), mean {error['mean_abs_error']:.3g}"
            + (f", decisions changed {validation['changed']}" if "changed" in validation else "")
            + f"; inputs clipped: {ranges['inputs_clipped']} of {ranges['input_values']}"
        )


def cmd_run(args: argparse.Namespace) -> int:
    from lstm_embed import graph_cli

    if graph_cli.is_graph_folder(args.out_dir):
        return graph_cli.run(args)
    x = _load_array(args.input, "--input").astype(np.float32)
    if args.board in (None, "host"):
        from lstm_embed.targets.hostbuild import run_host

        y = run_host(Path(args.out_dir), x)
    elif get_board(args.board).emulated:
        from lstm_embed.targets import firmware

        y = firmware.run_qemu_f32(Path(args.out_dir), args.board, x)
    else:
        y = _run_real_board(args, x)
    np.save(args.output, y)
    print(f"wrote {args.output}: {y.shape} float32")
    if args.board not in (None, "host"):
        _print_host_comparison(Path(args.out_dir), x, y, args.board)
    return 0


def _run_real_board(args: argparse.Namespace, x: np.ndarray) -> np.ndarray:
    """Flash, read the UART on --port; prints the DWT cycles the board measured."""
    from lstm_embed.targets import firmware, serial_port

    board = get_board(args.board)
    if not args.port:
        raise CLIError(serial_port.port_hint(board))
    run = firmware.run_on_board(Path(args.out_dir), args.board, x, args.port)
    if any(run.run_cycles):
        print(f"{args.board}: DWT cycles per run_f32 call: {run.run_cycles}")
    steps = [c for sequence in run.step_cycles for c in sequence]
    if any(steps):
        print(
            f"{args.board}: DWT cycles per step (step_f32): min {min(steps)}, "
            f"mean {np.mean(steps):.0f}, max {max(steps)}; "
            f"{1e6 * np.mean(steps) / board.clock_hz:.1f} us at {board.clock_hz / 1e6:g} MHz"
        )
    elif not run.step_cycles:
        print(
            f"{args.board}: its core has no DWT cycle counter; `lstm-embed profile OUT --board"
            f" {args.board}` estimates the cycles"
        )
    return run.y


def _print_host_comparison(out_dir: Path, x: np.ndarray, y: np.ndarray, board: str) -> None:
    """The board's outputs against the host build of the same C, bit for bit."""
    from lstm_embed.targets.hostbuild import run_host

    y_host = run_host(out_dir, x)
    same = y.shape == y_host.shape and np.array_equal(y.view(np.uint32), y_host.view(np.uint32))
    if same:
        print(f"{board} equals the host build bit for bit ({y.size} float32 values)")
        return
    differ = (
        int(np.sum(y.view(np.uint32) != y_host.view(np.uint32))) if y.shape == y_host.shape else -1
    )
    raise CLIError(
        f"{board} differs from the host build: {differ} of {y.size} values"
        if differ >= 0
        else f"{board} output shape {y.shape} differs from the host build's {y_host.shape}"
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from lstm_embed import graph_cli
    from lstm_embed.tools.compare import compare
    from lstm_embed.tools.quiet import set_verbose

    set_verbose(args.verbose)  # before Keras is imported

    if graph_cli.is_graph_folder(args.out_dir):
        return graph_cli.compare(args)
    x = _load_array(args.input, "--input").astype(np.float32)
    labels = _load_array(args.labels, "--labels") if args.labels else None
    report_dir = Path(args.report) if args.report else None
    if report_dir:  # before any work, so that a missing matplotlib leaves no folder behind
        from lstm_embed.tools.compare_report import _pyplot

        _pyplot()
    result = compare(args.model, Path(args.out_dir), x, labels, report_dir=report_dir)
    print(result["text"])
    if report_dir:
        print(f"wrote {report_dir}/report.md (+ PNG plots, report.json)")
    if args.json:
        Path(args.json).write_text(json.dumps(result["json"], indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from lstm_embed import graph_cli
    from lstm_embed.reference.trace import trace_to_arrays
    from lstm_embed.targets.hostbuild import read_report
    from lstm_embed.targets.inputs import InputRule, check_input

    if graph_cli.is_graph_folder(args.out_dir):
        x: np.ndarray | dict = graph_cli.folder_inputs(args.out_dir, args.input)
    else:
        x = _load_array(args.input, "--input").astype(np.float32)
        # the runners' check (ids (N, T) become (N, T, 1)), so trace sees what run() would
        x = check_input(x, InputRule.from_report(read_report(Path(args.out_dir))), "float32")
    arrays = trace_to_arrays(Path(args.out_dir), x)
    np.savez(args.output, **arrays)
    print(f"wrote {args.output}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from lstm_embed.emit.render import layout_note
    from lstm_embed.targets.graph_firmware import build_folder

    out_dir = Path(args.out_dir)
    result = build_folder(out_dir, args.board, semihosting=args.semihosting)
    print(f"built {result.elf}")
    print(result.table())
    folder_core = json.loads((out_dir / "report.json").read_text()).get("core", "all")
    note = layout_note(folder_core, get_board(args.board).core)
    if note:
        print(f"lstm-embed build: note: {note}", file=sys.stderr)
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from lstm_embed.targets import firmware
    from lstm_embed.targets.graph_firmware import build_folder

    # the command first: an emulated board, or no UF2 drive, is refused before building
    command = firmware.flash(Path(args.out_dir), args.board, dry_run=True)
    if not args.dry_run:
        build_folder(Path(args.out_dir), args.board)  # a chain's folder or a graph's
        command = firmware.flash(Path(args.out_dir), args.board, rebuild=False)
    if args.dry_run:
        print(" ".join(command))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lstm_embed import graph_cli
    from lstm_embed.tools.export import export

    x = None
    if args.input and graph_cli.is_graph_folder(args.out_dir):  # a .npz by input name
        report = json.loads((Path(args.out_dir) / "report.json").read_text())
        names = [i["name"] for i in report["graph"]["inputs"]]
        x = graph_cli.load_inputs(args.input, names, "--input")
    elif args.input:
        x = _load_array(args.input, "--input")
    result = export(
        Path(args.out_dir),
        args.format,
        Path(args.output),
        kernel=args.kernel,
        lib_version=args.lib_version,
        example_input=x,
        url=args.url,
        force=args.force,
    )
    print(f"wrote {result.dest}/ ({args.format}): " + ", ".join(result.files))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="lstm-embed", description="Keras LSTM models -> fixed-point C for Cortex-M"
    )
    top.add_argument("--version", action="version", version=f"lstm-embed {__version__}")
    top.add_argument("--debug", action="store_true", help="on errors, print the traceback too")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="per-layer table of a Keras model, like summary()")
    p.add_argument("model", help=".keras, .h5 or .onnx file")
    p.add_argument("--weights", default="int8", help="weights for the flash column, as in convert")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="Keras model -> C sources + report.json")
    p.add_argument("model", help=".keras, .h5 or .onnx file")
    p.add_argument(
        "--calibration",
        "-c",
        required=True,
        help="inputs (N, T, m): .npy or .npz 'x'; a graph: .npz keyed by its input names",
    )
    p.add_argument("-o", "--output", default="out", help="output folder (default: out)")
    p.add_argument("--name", help="C symbol prefix (default: the Keras model name)")
    p.add_argument("--input-range", nargs=2, metavar=("LO", "HI"), help="declared input range")
    p.add_argument(
        "--weights",
        default="int8",
        help="int8 (default), int16, one per layer (int16,int8,...), or auto: per layer the"
        " narrower width whose error vs the float model stays under --max-error; int16 layers"
        " are exact to ~1e-4 but use the portable kernel",
    )
    p.add_argument(
        "--max-error",
        type=float,
        metavar="PCT",
        help="with --weights auto: largest max abs error, in percent of the output range, on"
        " --validation (else on held-out calibration sequences) (default: 1)",
    )
    p.add_argument(
        "--input-shift",
        default="auto",
        help="power-of-two scale of the input columns of LSTM rows: auto (default: chosen on"
        " the calibration data), or 0..6; 0 is a few instructions per unit faster",
    )
    p.add_argument(
        "--rounding",
        default="auto",
        choices=("nearest", "gptq", "auto"),
        help="weight rounding: nearest, gptq (error feedback against the calibration data, bias"
        " corrected) or auto (default: gptq when, fitted on 3/4 of the calibration sequences,"
        " it is no worse than nearest on the other 1/4)",
    )
    p.add_argument(
        "--validation",
        metavar="X.npy",
        help="separate inputs (N, T, m): clipping and error vs Keras on them, in report.json",
    )
    p.add_argument(
        "--table-log2-entries",
        type=int,
        default=None,
        choices=range(6, 12),
        metavar="{6..11}",
        help="activation table of 2**N intervals per sign (default: 7, 257 entries, when every"
        " layer has int8 weights; 8, 513 entries, with int16 weights)",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--core",
        default=None,
        metavar="CORE",
        help=f"the kernel layout to emit: m0, m3, m4, m7, m33, m55 (that core's optimized kernel"
        f" only; default: the default board's, {DEFAULT_BOARD}: {get_board(DEFAULT_BOARD).core}),"
        " portable, or all (every core's, chosen when compiling)",
    )
    target.add_argument("--board", help="emit the layout of this board's core (see docs/boards.md)")
    p.add_argument(
        "--clock-hz",
        type=float,
        help="with --board: core clock of the estimated time per step (default: the board's)",
    )
    p.add_argument("--force", action="store_true", help="replace a folder lstm-embed did not write")
    p.add_argument("-v", "--verbose", action="store_true", help="print every layer's details")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("run", help="run the generated C on inputs (host build or QEMU)")
    p.add_argument("out_dir", help="folder written by convert")
    p.add_argument(
        "--input", "-i", required=True, help="float inputs (N, T, m) .npy; a graph's: .npz by name"
    )
    p.add_argument(
        "-o", "--output", required=True, help="outputs (.npy); a graph's several: .npz output_0.."
    )
    p.add_argument(
        "--board",
        default=None,
        help="host (default), an emulated board (e.g. qemu-m4), or a real board with --port",
    )
    p.add_argument(
        "--port", help="a real board's serial port (e.g. /dev/ttyACM0): flash, then read it"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="generated C vs Keras on inputs")
    p.add_argument("model", help=".keras, .h5 or .onnx file")
    p.add_argument("out_dir", help="folder written by convert")
    p.add_argument(
        "--input", "-i", required=True, help="float inputs (N, T, m) .npy (a graph's: .npz)"
    )
    p.add_argument("--labels", help="labels for a task metric (class ids, one-hot or targets)")
    p.add_argument("--json", help="also write the numbers as JSON here")
    p.add_argument("--report", metavar="DIR", help="write a Markdown report with PNG plots here")
    p.add_argument("-v", "--verbose", action="store_true", help="TensorFlow's log lines too")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "trace", help="every tensor, and every gate of every step, of the integer reference"
    )
    p.add_argument("out_dir", help="folder written by convert")
    p.add_argument(
        "--input", "-i", required=True, help="float inputs (N, T, m) .npy (a graph's: .npz)"
    )
    p.add_argument("-o", "--output", required=True, help="where to save the trace (.npz)")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("build", help="build Cortex-M firmware for a board; prints sizes")
    p.add_argument("out_dir", help="folder written by convert")
    p.add_argument("--board", default="qemu-m4", help="board (default qemu-m4); see docs/boards.md")
    p.add_argument(
        "--semihosting",
        action="store_true",
        help="print over semihosting instead of the board's UART (needs a debugger attached)",
    )
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("flash", help="flash a real board with pyOCD")
    p.add_argument("out_dir", help="folder written by convert")
    p.add_argument(
        "--board", required=True, help="nucleo-l476rg, nucleo-f411re, nrf52840-dk or pico (UF2)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the pyOCD (or copy) command only")
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser("export", help="the model as a CMake, Zephyr, Arduino or PlatformIO library")
    p.add_argument("out_dir", help="folder written by convert")
    p.add_argument("--format", "-f", required=True, metavar="{cmake,zephyr,arduino,platformio}")
    p.add_argument("-o", "--output", required=True, help="folder to write the library to")
    p.add_argument(
        "--kernel",
        default="auto",
        metavar="{auto,reference,plain}",
        help="default kernel (auto: chosen by the core's features); all give the same bits",
    )
    p.add_argument("--lib-version", default="0.1.0", help="library version, MAJOR.MINOR.PATCH")
    p.add_argument(
        "--input",
        "-i",
        help="(N, T, m) .npy (a graph's: .npz by input name): the Arduino example runs sample 0",
    )
    p.add_argument("--url", help="project page for the Arduino library.properties")
    p.add_argument("--force", action="store_true", help="replace a folder lstm-embed did not write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("profile", help="your model on emulated cores: instructions, flash, RAM")
    p.add_argument("out_dir", help="folder written by convert")
    p.add_argument(
        "--board",
        action="append",
        help="emulated board (repeatable; default qemu-m0, qemu-m4, qemu-m55)",
    )
    p.add_argument("--json", metavar="F", help="also write the results as JSON here")
    p.add_argument(
        "--clock-hz",
        type=float,
        help="core clock for the estimated time (default: each board's; docs/boards-and-timing.md)",
    )
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("bench", help="instructions per step, flash and RAM on every core")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of the benchmark")
    p.set_defaults(func=cmd_bench)
    return top


def cmd_profile(args: argparse.Namespace) -> int:
    from lstm_embed.tools import profile

    boards = tuple(args.board) if args.board else profile.DEFAULT_BOARDS
    clock = int(args.clock_hz) if args.clock_hz else None
    results = profile.profile(Path(args.out_dir), boards, clock_hz=clock)
    print(profile.table(results))
    if args.json:
        profile.write_json(results, Path(args.json))
        print(f"wrote {args.json}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lstm_embed.tools import bench

    return int(bench.main(args.bench_args) or 0)


EXIT_INTERNAL = 3  # an exception nobody raised on purpose: a bug in lstm-embed
CODE_DIR = Path(__file__).resolve().parent  # lstm-embed's own modules (data: resources.py)


def _raised_here(error: BaseException) -> bool:
    """Whether a `raise` statement of lstm-embed's own code raised error (not numpy, say,
    whose C functions raise from the line that called them)."""
    import linecache

    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return True
    filename = tb.tb_frame.f_code.co_filename
    if CODE_DIR not in Path(filename).resolve().parents:
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def _is_user_error(error: BaseException) -> bool:
    """Errors raised on purpose (bad input, unsupported models, missing or failing tools) or by
    the system about files; anything else (a KeyError, or a ValueError out of numpy) is a bug."""
    if isinstance(error, (CLIError, OSError)):
        return True
    if isinstance(error, (NotImplementedError, RecursionError)):
        return False
    return isinstance(error, (ValueError, RuntimeError)) and _raised_here(error)


def _report_error(args: argparse.Namespace, error: Exception, debug: bool) -> int:
    """One line for bad input; a failed tool's output (its last lines and its log); for a
    bug, a line saying so. --debug prints the traceback first."""
    import traceback

    from lstm_embed.targets.hostbuild import ToolFailure
    from lstm_embed.targets.inputs import InputError

    if debug:
        traceback.print_exception(error)
    prefix = f"lstm-embed {args.command}"
    text = str(error).strip()
    first = text.splitlines()[0] if text else repr(error)
    if not _is_user_error(error):
        hint = "" if debug else "; rerun with --debug for the traceback"
        print(
            f"{prefix}: internal error: {type(error).__name__}: {first} (this is a bug in"
            f" lstm-embed {__version__}; please report it with the command line{hint})",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    if isinstance(error, ToolFailure):
        print(f"{prefix}: error: {error.summary}", file=sys.stderr)
        if error.output:
            print(error.tail(), file=sys.stderr)
        if error.log is not None:
            print(f"{prefix}: the command and its whole output: {error.log}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(error, InputError) and getattr(args, "input", None):
        first = f"--input {args.input}: {first}"
    print(f"{prefix}: error: {first}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark parses its own options (`bench --quick --json F`)
        from lstm_embed.tools import bench

        return int(bench.main(argv[1:]) or 0)
    debug = "--debug" in argv  # accepted anywhere on the line
    args = parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        return _report_error(args, error, debug)


if __name__ == "__main__":
    sys.exit(main())
