"""The conversion pipeline: frontend -> quantizer -> emitter, written atomically to a folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.render import core_kernels, emit_model
from lstm_embed.emit.report import calibration_ranges, errors, layer_rows, sizes
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import Model
from lstm_embed.quantize import rounding, weight_choice
from lstm_embed.quantize.calibration import NEAREST_QMODEL_FILE, CalibrationWarning
from lstm_embed.quantize.qir import QMODEL_FILE, QModel, save_qmodel
from lstm_embed.quantize.quantizer import QuantizeOptions, check_calibration, quantize
from lstm_embed.quantize.trust import (
    changed_decisions,
    checked_validation,
    held_out_check,
    input_clipping,
    range_check,
    trust_warnings,
)
from lstm_embed.reference.interpreter import run_float
from lstm_embed.targets.hostbuild import REPORT_FORMAT
from lstm_embed.version import __version__

MARKER = ".lstm-embed"  # present in every folder convert wrote; others are not replaced


class OutputFolderError(ValueError):
    pass


@dataclass
class Conversion:
    ir: Model
    qmodel: QModel
    report: dict[str, Any]
    out_dir: Path


def load_calibration(path: str | Path) -> np.ndarray:
    """.npy array or .npz with key 'x'."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such calibration file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"{path}: not a .npy/.npz file ({error})") from error
    if isinstance(data, np.lib.npyio.NpzFile):
        if "x" not in data.files:
            raise ValueError(
                f"{path}: .npz calibration needs an array named 'x' (has {data.files})"
            )
        return data["x"]
    return data


def check_output_folder(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not force:
        if not out_dir.is_dir():
            raise OutputFolderError(f"{out_dir}: exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
            raise OutputFolderError(
                f"{out_dir}: folder exists and was not written by lstm-embed;"
                " choose another folder or pass --force to replace it"
            )


def write_atomically(out_dir: Path, write: Any) -> None:
    """Call write(tmp_dir) and move the result to out_dir in one rename; nothing half-written."""
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result is an ordinary folder
        write(tmp)
        (tmp / MARKER).write_text(f"written by lstm-embed {__version__}\n")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_report(ir: Model, qmodel: QModel, name: str, keras_y: np.ndarray | None, x) -> dict:
    report: dict[str, Any] = {
        "tool": f"lstm-embed {__version__}",
        "format": REPORT_FORMAT,  # hostbuild.read_report refuses another one: "convert again"
        "name": name,
        "source": ir.source,
        "input_size": ir.input_size,
        # ids below this number in, one per timestep (an Embedding first); 0: features
        "input_ids": ir.layers[0].input_dim if ir.layers[0].takes_ids else 0,
        "output_size": ir.output_size,
        "timesteps": ir.timesteps or 0,
        "return_sequences": ir.return_sequences,
        # rows of one input are one stream; run() continues it (docs/layers.md, "Stateful models")
        "stateful": ir.stateful,
        # why there is no step() ("" for streaming models)
        "run_only": ir.run_only_reason,
        "keras_version": ir.meta.get("keras_version", ""),
        "file_format": ir.meta.get("file_format", ""),
        "params": ir.params,
        "macs_per_step": qmodel.macs_per_step,
        "layers": layer_rows(ir, qmodel),
        "input_scale": [float(s) for s in qmodel.input_scale],
        "output_scale": qmodel.output_scale,
        **sizes(qmodel),
    }
    report["calibration"] = {
        "samples": len(x),
        "input": input_clipping(qmodel, x),
        "recurrent_layers": calibration_ranges(ir, qmodel, x),
    }
    if keras_y is not None:
        report["calibration_error_vs_keras"] = errors(keras_y, run_float(qmodel, x))
    else:  # converting a file imports no Keras; the float model is held equal to it in tests
        float_y, _ = forward(ir, x.astype(np.float64))
        report["calibration_error_vs_float_model"] = errors(float_y, run_float(qmodel, x))
    return report


def add_trust(
    report: dict[str, Any],
    ir: Model,
    qmodel: QModel,
    x: np.ndarray,
    options: QuantizeOptions,
    x_val: np.ndarray | None,
    keras_predict: Any,
) -> None:
    """report["calibration"]["held_out"] (the held-out part against ranges calibrated on the
    rest), report["validation"] (clipping and error on separate data) and report["warnings"]."""
    held_out = held_out_check(ir, x, options)
    report["calibration"]["held_out"] = held_out
    if x_val is not None:
        x_val = x_val.astype(np.float32)
        if keras_predict is not None:
            oracle, expected = "Keras", keras_predict(x_val)
        else:  # as for the calibration data: the float model, held equal to Keras in tests
            oracle, expected = "the float model", forward(ir, x_val.astype(np.float64))[0]
        measured = run_float(qmodel, x_val)
        report["validation"] = {
            "samples": len(x_val),
            "oracle": oracle,
            "ranges": range_check(ir, qmodel, x_val),
            "error": errors(expected, measured),
            **changed_decisions(ir, measured, expected),
        }
    report["warnings"] = trust_warnings(
        len(x), held_out, report.get("validation"), report.get("rounding")
    )


def convert(
    model: Any,
    calibration: np.ndarray,
    out_dir: str | Path,
    name: str | None = None,
    options: QuantizeOptions | None = None,
    force: bool = False,
    validation: np.ndarray | None = None,
    core: str = "all",
    example_input: Any = None,
) -> Conversion:
    """Keras model (in memory, or a .keras/.h5/.onnx path), or a torch module with
    ``example_input``, + calibration inputs -> C in out_dir; ``validation``: separate inputs to
    measure clipping and error on."""
    from lstm_embed.frontends import load
    from lstm_embed.frontends.keras import frontend
    from lstm_embed.frontends.onnx import torch_export

    if torch_export.is_torch_module(model) or example_input is not None:
        if not torch_export.is_torch_module(model):
            raise ValueError(
                "example_input is for torch modules (exported through torch.onnx); this model"
                f" is a {type(model).__name__}; for torch: {torch_export.INSTALL_HINT}"
            )
        if example_input is None:
            raise ValueError("a torch module needs example_input=x (one batch, as it takes it)")
        with tempfile.TemporaryDirectory(prefix="lstm-embed-torch-") as folder:
            stem = type(model).__name__.lower()
            stem = stem if stem.isidentifier() else "model"
            path = torch_export.export(model, example_input, Path(folder) / f"{stem}.onnx")
            ir = load.load_model(path)
        return convert_ir(ir, calibration, out_dir, name, options, force, None, validation, core)
    if isinstance(model, str | Path):  # a file: no ML framework; the float model is the oracle
        ir = load.load_model(model)
        return convert_ir(ir, calibration, out_dir, name, options, force, None, validation, core)
    ir = frontend.read_keras_model(model)

    def keras_predict(x: np.ndarray) -> np.ndarray:
        x = x[..., 0] if ir.layers[0].takes_ids else x  # Keras takes ids as (N, T)
        if ir.stateful:  # the rows as one stream from a reset state, as the C runs them
            reset_states(model)
            y = model.predict(x, verbose=0, batch_size=1)
            reset_states(model)
            return np.asarray(y, dtype=np.float64)
        return np.asarray(model.predict(x, verbose=0), dtype=np.float64)

    return convert_ir(
        ir, calibration, out_dir, name, options, force, keras_predict, validation, core
    )


def reset_states(model: Any) -> None:
    """Zero a live Keras model's stateful layers (Keras 3 reset_state, Keras 2 reset_states)."""
    for layer in getattr(model, "layers", ()):
        if getattr(layer, "stateful", False):
            (getattr(layer, "reset_state", None) or layer.reset_states)()
        reset_states(layer)  # nested models


def _flat_frames(calibration: Any, validation: Any, keras_predict: Any) -> tuple[Any, Any, Any]:
    """(N, T, F, C) frames (a Conv2D model's input) as the C takes them: (N, T, F * C),
    row-major; ``keras_predict`` still gets Keras' shape."""
    calibration = np.asarray(calibration)
    if calibration.ndim <= 3:
        return calibration, validation, keras_predict
    frame = calibration.shape[2:]

    def flat(x: Any) -> Any:
        return None if x is None else np.reshape(x, (*np.shape(x)[:2], -1))

    def predict(x: np.ndarray) -> Any:
        return keras_predict(np.reshape(x, (*np.shape(x)[:2], *frame)))

    return flat(calibration), flat(validation), None if keras_predict is None else predict


def convert_ir(
    ir: Model,
    calibration: np.ndarray,
    out_dir: str | Path,
    name: str | None = None,
    options: QuantizeOptions | None = None,
    force: bool = False,
    keras_predict: Any = None,
    validation: np.ndarray | None = None,
    core: str = "all",
) -> Conversion:
    """IR -> C in out_dir (no Keras needed); ``core``: which kernels' layouts the C holds
    (emit.CORE_KERNELS); ``keras_predict`` adds the error vs Keras,
    ``validation`` (separate inputs) the clipping and error on them. Calibration that cannot be
    trusted gives warnings (``CalibrationWarning``, and report["warnings"])."""
    name = cformat.c_identifier(ir.name if name is None else name)
    out_dir = Path(out_dir)
    check_output_folder(out_dir, force)
    options = options or QuantizeOptions()
    core_kernels(core)  # a bad --core is refused before any work
    calibration, validation, keras_predict = _flat_frames(calibration, validation, keras_predict)
    x_val = None if validation is None else checked_validation(ir, validation)
    calibration = check_calibration(ir, calibration)  # ids (N, T) -> (N, T, 1) features
    choice = None
    if options.weights_auto_max_error is not None:  # --weights auto
        limit = options.weights_auto_max_error
        choice = weight_choice.choose(ir, calibration, options, x_val, limit)
        options = replace(options, weight_bits=choice.bits, weights_auto_max_error=None)
    rounder: list = []
    qmodel = quantize(ir, calibration, options, rounding_record=rounder, validation=x_val)
    x = np.asarray(calibration, dtype=np.float32)
    keras_y = keras_predict(x) if keras_predict is not None else None
    report = build_report(ir, qmodel, name, keras_y, x)
    report["rounding"] = rounder[0].record()
    report["core"] = core
    if choice is not None:
        report["weights_auto"] = choice.record()
    add_trust(report, ir, qmodel, x, options, x_val, keras_predict)
    for text in report["warnings"]:
        warnings.warn(text.removeprefix("warning: "), CalibrationWarning, stacklevel=2)

    def write(folder: Path) -> None:
        emit_model(qmodel, folder, name, core)
        (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        # the integer model lets compare and trace follow every layer
        save_qmodel(qmodel, folder / QMODEL_FILE)
        if rounder[0].kept != rounding.NEAREST:  # for compare --report: nearest vs kept
            nearest = replace(qmodel, layers=tuple(rounder[0].nearest_layers))
            save_qmodel(nearest, folder / NEAREST_QMODEL_FILE)

    write_atomically(out_dir, write)
    return Conversion(ir, qmodel, report, out_dir)
